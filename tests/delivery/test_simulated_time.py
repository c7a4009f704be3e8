"""`worker --simulate-time`: the whole retry schedule in seconds, and nothing dated in the
future (reports "up to today" see what the mailing's figures see)."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, func, select

from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.worker import retry_policy, run_worker, simulated_clock_ending_now
from mailcarrier.services import reports
from mailcarrier.services.figures import mailing_figures
from mailcarrier.storage.tables import activities, attempts, contacts, deliveries, mailings
from tests.delivery.world import make_world, settings_for, start_mailing
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

ADDRESSES = ["ok@example.com", "full1@example.org", "grey1@example.net", "unknown1@example.org",
             "slowrcpt1@example.net"]


def test_simulated_run_ends_by_now_with_the_whole_schedule(empty_engine: Engine,  # noqa: F811
                                                          tmp_path: Path) -> None:
    world = make_world(empty_engine, ADDRESSES)
    mailing_id = start_mailing(world, now=datetime.now(UTC))  # sent "now", as by hand
    with Sandbox(stall_seconds=3) as sandbox:
        settings = settings_for(tmp_path, sandbox.port)
        clock = simulated_clock_ending_now(empty_engine, retry_policy(settings))
        asyncio.run(run_worker(settings, empty_engine, until_idle=True, clock=clock))
    real_now = datetime.now(UTC)
    with empty_engine.connect() as conn:
        latest = [conn.execute(select(func.max(column))).scalar() for column in (
            attempts.c.started_at, attempts.c.ended_at, deliveries.c.final_at, deliveries.c.delivered_at,
            activities.c.occurred_at, contacts.c.last_bounce_at, contacts.c.last_delivered_at,
            mailings.c.finished_at)]
        full = conn.execute(select(attempts.c.started_at).join(deliveries).where(
            deliveries.c.email == "full1@example.org").order_by(attempts.c.number)).scalars().all()
    assert all(t is not None and t <= real_now for t in latest), latest
    offsets = [round((t - full[0]).total_seconds() / 3600, 1) for t in full]
    assert offsets == [0.0, 1.0, 6.0, 30.0]  # the whole schedule ran, in the past
    figures = mailing_figures(empty_engine, world.account_id, mailing_id)
    bounced = figures.bounced_hard + figures.bounced_soft
    report = reports.bounce_report(empty_engine, world.account_id, since=date.today() - timedelta(days=3),
                                   until=date.today())
    assert bounced == 3 and report.total == bounced
