"""30 hours of retries in seconds: the schedule, domain back-off, and expiry, with a simulated clock."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.services.figures import mailing_figures
from mailcarrier.services.mailings import pause_mailing, resume_mailing
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.tables import attempts, deliveries, domain_backoffs
from tests.delivery.world import T0, make_world, settings_for, start_mailing


def test_schedule_backoff_and_expiry(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 't.db'}")
    world = make_world(engine, ["full1@example.org", "grey1@example.net", "throttle1@busy.example",
                                *(f"ok{i}@busy.example" for i in range(3))])
    mailing_id = start_mailing(world)
    clock = SimulatedClock(T0)
    with Sandbox() as sandbox:
        settings = settings_for(tmp_path, sandbox.port, destination_limits="busy.example=1x50")
        asyncio.run(run_worker(settings, engine, until_idle=True, clock=clock))
    assert clock.now() - T0 >= timedelta(hours=30)  # the clock really travelled
    with engine.connect() as conn:
        rows = {r.email: r for r in conn.execute(select(deliveries))}
        tries: dict[int, list[object]] = {}
        for attempt in conn.execute(select(attempts).order_by(attempts.c.number)):
            tries.setdefault(attempt.delivery_id, []).append(attempt)
        backoff = conn.execute(select(domain_backoffs)).all()
    full = rows["full1@example.org"]
    starts = [a.started_at for a in tries[full.id]]  # type: ignore[attr-defined]
    offsets = [round((s - starts[0]).total_seconds() / 3600, 1) for s in starts]
    assert offsets == [0.0, 1.0, 6.0, 30.0]  # seed 003: four attempts over 30 hours
    assert full.state == "bounced_soft" and full.last_reason == "mailboxfull" and full.last_category == 3
    grey = rows["grey1@example.net"]
    assert grey.state == "delivered" and [a.outcome for a in tries[grey.id]] == ["deferred", "delivered"]  # type: ignore[attr-defined]
    throttled = rows["throttle1@busy.example"]
    assert throttled.state == "bounced_soft" and throttled.attempt_count == 4
    assert [a.reply_code for a in tries[throttled.id]] == [421] * 4  # type: ignore[attr-defined]
    # 421 paused the whole domain: the others were released untried and sent after the pause
    # (one attempt each, at least the 5-minute back-off later); the last 421 left one in place.
    first_421 = tries[throttled.id][0].started_at  # type: ignore[attr-defined]
    for email in (f"ok{i}@busy.example" for i in range(3)):
        row = rows[email]
        assert row.state == "delivered" and row.attempt_count == 1
        assert tries[row.id][0].started_at >= first_421 + timedelta(minutes=5)  # type: ignore[attr-defined]
    assert [(b.domain, b.consecutive >= 1) for b in backoff] == [("busy.example", True)]
    figures = mailing_figures(engine, world.account_id, mailing_id)
    assert figures.bounced_soft == 2 and figures.delivered == 4
    # mailbox full, and the 421 "too many connections" throttling: both category 3 (seed 001)
    assert figures.bounced_by_category == {3: 2}
    engine.dispose()


def test_paused_mailings_are_not_sent_until_resumed(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    world = make_world(engine, ["a@example.com", "b@example.com"])
    mailing_id = start_mailing(world)
    pause_mailing(engine, world.account_id, mailing_id, T0)
    with Sandbox() as sandbox:
        settings = settings_for(tmp_path, sandbox.port)
        stats = asyncio.run(run_worker(settings, engine, until_idle=True, clock=SimulatedClock(T0)))
        assert stats.claimed == 0 and sandbox.received == []
        resume_mailing(engine, world.account_id, mailing_id, T0)
        stats = asyncio.run(run_worker(settings, engine, until_idle=True, clock=SimulatedClock(T0)))
        assert stats.delivered == 2 and len(sandbox.received) == 2
    engine.dispose()
