"""kill -9 the worker at random moments, restart it, and compare the sink with the store.

The worker runs as a real subprocess (``mailcarrier worker``) against an SMTP sink in this
process, so the sink survives every kill and counts exactly what arrived. At the end every
recipient must be delivered, every recorded delivery must have reached the sink, and a
recipient may appear twice in the sink only if the store flags it ``resent_after_crash``
with an ``unknown`` attempt recorded for the interrupted try.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.tables import attempts, deliveries, mailings
from tests.delivery.world import make_world, start_mailing

RECIPIENTS = 1200


def _worker_env(tmp_path: Path, db_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCARRIER_")}
    env.update({
        "MAILCARRIER_DATABASE_URL": db_url, "MAILCARRIER_DATA_DIR": str(tmp_path / "data"),
        "MAILCARRIER_SECRET_KEY": "crash-test-secret-0123456789",
        "MAILCARRIER_STATIC_ROUTES": f"*=127.0.0.1:{port}", "MAILCARRIER_SMTP_TIMEOUT": "5",
        "MAILCARRIER_DELIVERY_LEASE_SECONDS": "1", "MAILCARRIER_DELIVERY_BATCH_SIZE": "40",
        "MAILCARRIER_DKIM_ALGORITHM": "ed25519", "MAILCARRIER_DELIVERY_CONCURRENCY": "4",
    })
    return env


def _start(env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "mailcarrier.cli.main", "worker", "--until-idle"],
                            env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_kill_minus_nine_loses_nothing_and_duplicates_only_recorded_cases(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'crash.db'}"
    engine = make_engine(db_url)
    world = make_world(engine, [f"r{i:04d}@d{i % 7}.example" for i in range(RECIPIENTS)])
    mailing_id = start_mailing(world)
    rng = random.Random(4)
    with Sandbox() as sandbox:
        original = sandbox.handler.handle_DATA

        async def slow_data(server: Any, session: Any, envelope: Any) -> str:
            await asyncio.sleep(0.01)  # a realistic server: the kill lands mid-batch
            return await original(server, session, envelope)

        sandbox.handler.handle_DATA = slow_data  # type: ignore[method-assign]
        env = _worker_env(tmp_path, db_url, sandbox.port)
        kills = 0
        for _round in range(5):
            worker = _start(env, tmp_path)
            time.sleep(rng.uniform(0.8, 2.0))  # interpreter start-up is ~0.5 s
            if worker.poll() is None:
                worker.send_signal(signal.SIGKILL)
                kills += 1
            worker.wait(timeout=30)
        final = _start(env, tmp_path)
        out, err = final.communicate(timeout=240)
        assert final.returncode == 0, err.decode()[-2000:]
        received = collections.Counter(r.recipient for r in sandbox.received)
    assert kills >= 3, "the worker finished before it could be killed; slow the sink down"
    with engine.connect() as conn:
        rows = {r.email: r for r in conn.execute(
            select(deliveries).where(deliveries.c.mailing_id == mailing_id))}
        unknown = collections.Counter(r.delivery_id for r in conn.execute(
            select(attempts.c.delivery_id).where(attempts.c.outcome == "unknown")))
        state = conn.execute(select(mailings.c.state).where(mailings.c.id == mailing_id)).scalar_one()
    engine.dispose()
    assert state == "done"
    assert len(rows) == RECIPIENTS
    assert {r.state for r in rows.values()} == {"delivered"}
    # Nothing lost: everything the store calls delivered reached the sink.
    assert set(rows) == set(received)
    # Nothing sent twice except the recorded in-flight cases: each extra copy matches one
    # recorded "unknown" attempt (a recipient in flight during two kills may arrive three times).
    twice = {email for email, count in received.items() if count > 1}
    for email in twice:
        assert rows[email].resent_after_crash, f"{email} arrived twice without a record"
        assert received[email] - 1 <= unknown[rows[email].id]
    flagged = {e for e, r in rows.items() if r.resent_after_crash}
    assert twice <= flagged
    print(f"kills={kills} duplicates={len(twice)} flagged={len(flagged)} out={out.decode().strip()}")
