"""Crash recovery does not use up retries (issue 17).

Before: an attempt recorded by crash recovery (internal 147, the worker died with the message
in flight) counted against the retry schedule: greylisted recipients ended ``bounced_soft``
after one real try (``147, 147, 451``). Now the recipient still gets every scheduled try.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.storage import outbox
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.tables import attempts, deliveries
from tests.delivery.world import T0, make_world, settings_for, start_mailing


def _crash_twice(engine: object) -> None:
    """A worker claims the batch and dies; its lease expires and recovery records 147. Twice."""
    for n in range(2):
        at = T0 + timedelta(seconds=10 * n)
        claim = outbox.claim_due(engine, f"dead-{n}", at, lease=timedelta(seconds=1), limit=100)  # type: ignore[arg-type]
        assert claim.deliveries
        assert outbox.recover_expired(engine, at + timedelta(seconds=5)) == len(claim.deliveries)  # type: ignore[arg-type]


def test_recovered_attempts_do_not_use_up_the_retry_schedule(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 't.db'}")
    world = make_world(engine, ["full1@example.org", "grey1@example.net"])
    start_mailing(world)
    _crash_twice(engine)
    with Sandbox() as sandbox:
        settings = settings_for(tmp_path, sandbox.port)
        asyncio.run(run_worker(settings, engine, until_idle=True, clock=SimulatedClock(T0 + timedelta(seconds=30))))
    with engine.connect() as conn:
        rows = {r.email: r for r in conn.execute(select(deliveries))}
        tries: dict[int, list[tuple[str, int | None, int | None]]] = {}
        for a in conn.execute(select(attempts).order_by(attempts.c.number)):
            tries.setdefault(a.delivery_id, []).append((a.outcome, a.internal_code, a.reply_code))
    grey = rows["grey1@example.net"]
    assert grey.state == "delivered" and grey.recovered_attempts == 2
    assert tries[grey.id] == [("unknown", 147, None), ("unknown", 147, None), ("deferred", None, 451),
                              ("delivered", None, 250)]
    full = rows["full1@example.org"]  # always 452 mailbox full: four real tries, then a soft bounce
    assert full.state == "bounced_soft" and full.attempt_count == 6 and full.recovered_attempts == 2
    assert [t[2] for t in tries[full.id]] == [None, None, 452, 452, 452, 452]
    engine.dispose()
