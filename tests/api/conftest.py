"""Fixtures: a migrated database (SQLite and PostgreSQL), an app on it with a settable clock,
and an httpx client talking to the app in-process (ASGI) with its lifespan running."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from mailcarrier.api.app import create_app
from mailcarrier.config import Settings
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.migrate import upgrade
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


@dataclass
class Clock:
    """A clock the test moves by hand."""

    now: datetime = field(default=T0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.of(data_dir=tmp_path / "data", secret_key="test-master-secret-0123456789",
                    public_url="http://mc.test")


@pytest.fixture
def db(empty_engine: Engine) -> Iterator[Engine]:  # noqa: F811
    """A migrated database with one account, ``acme`` (see ``account_id``)."""
    upgrade(empty_engine)
    with empty_engine.begin() as conn:
        account_repo.create_account(conn, "acme", "Acme", T0)
    yield empty_engine


@pytest.fixture
def account_id(db: Engine) -> int:
    with db.connect() as conn:
        return account_repo.account_by_slug(conn, "acme").id


@pytest.fixture
def app(settings: Settings, db: Engine, clock: Clock) -> FastAPI:
    return create_app(settings, db, clock=clock)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://mc.test") as http:
            yield http
