"""Revisions 0007 and 0010: the contacts table leaves room for HOT updates on PostgreSQL
(half of each page: a batch in send order updates every row of a page at once)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from mailcarrier.storage.migrate import upgrade
from tests.storage.conftest import _pg_schema_engine


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    yield from _pg_schema_engine()


@pytest.mark.postgres
def test_contacts_fillfactor_after_upgrade(pg_engine: Engine) -> None:
    upgrade(pg_engine)
    query = text("SELECT reloptions FROM pg_class WHERE relname = 'contacts' "
                 "AND relnamespace = current_schema()::regnamespace")
    with pg_engine.connect() as conn:
        assert conn.execute(query).scalar_one() == ["fillfactor=50"]
