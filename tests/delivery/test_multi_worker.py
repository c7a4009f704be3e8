"""Three worker processes on one queue (PostgreSQL, and SQLite's serialised writers): each recipient once."""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.tables import attempts, deliveries
from tests.delivery.test_crash import _worker_env
from tests.delivery.world import make_world, start_mailing
from tests.storage.conftest import _pg_schema_engine

RECIPIENTS = 900


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgres), "sqlite"])
def queue_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'queue.db'}")
        yield engine
        engine.dispose()
    else:
        yield from _pg_schema_engine()


@pytest.mark.slow
def test_three_workers_share_the_queue_without_sending_twice(queue_engine: Engine, tmp_path: Path) -> None:
    pg_engine = queue_engine
    world = make_world(pg_engine, [f"p{i:04d}@d{i % 11}.example" for i in range(RECIPIENTS)])
    mailing_id = start_mailing(world)
    url = pg_engine.url.render_as_string(hide_password=False)
    with Sandbox() as sandbox:
        original = sandbox.handler.handle_DATA

        async def slow_data(server: Any, session: Any, envelope: Any) -> str:
            await asyncio.sleep(0.005)
            return await original(server, session, envelope)

        sandbox.handler.handle_DATA = slow_data  # type: ignore[method-assign]
        env = _worker_env(tmp_path, url, sandbox.port)
        env["MAILCARRIER_DELIVERY_LEASE_SECONDS"] = "30"
        env["MAILCARRIER_DELIVERY_BATCH_SIZE"] = "25"
        workers = [subprocess.Popen([sys.executable, "-m", "mailcarrier.cli.main", "worker", "--until-idle",
                                     "--worker-id", f"w{n}"], env=env, cwd=tmp_path,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE) for n in range(3)]
        outputs = [w.communicate(timeout=240) for w in workers]
        received = collections.Counter(r.recipient for r in sandbox.received)
    for worker, (_out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err.decode()[-2000:]
    with pg_engine.connect() as conn:
        states = collections.Counter(conn.execute(
            select(deliveries.c.state).where(deliveries.c.mailing_id == mailing_id)).scalars())
        per_delivery = collections.Counter(conn.execute(select(attempts.c.delivery_id)).scalars())
    assert states == {"delivered": RECIPIENTS}
    assert len(received) == RECIPIENTS and set(received.values()) == {1}
    assert set(per_delivery.values()) == {1}
    # The work really was shared.
    claimed_by = [out.decode() for out, _ in outputs]
    busy = [text for text in claimed_by if " 0 claimed" not in text]
    assert len(busy) >= 2, claimed_by
