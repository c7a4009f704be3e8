"""``worker --once`` progress: deliveries done and waiting, and when the next retry is due."""

from __future__ import annotations

from datetime import timedelta

from rich.console import Console
from sqlalchemy import Engine, update

from mailcarrier.cli.worker_cmd import DeliveryProgress
from mailcarrier.delivery.worker import SimulatedClock, WorkerStats
from mailcarrier.storage.outbox import open_work
from mailcarrier.storage.tables import deliveries
from tests.delivery.world import T0, make_world, start_mailing
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture


def test_open_work_counts_waiting_and_finds_the_next_retry(empty_engine: Engine) -> None:  # noqa: F811
    world = make_world(empty_engine, ["a@x.test", "b@x.test", "c@x.test"])
    start_mailing(world)
    before = open_work(empty_engine, T0)
    assert before.waiting == 3
    retry_at = T0 + timedelta(minutes=30)
    with empty_engine.begin() as conn:
        first = conn.execute(deliveries.select().order_by(deliveries.c.id)).first()
        assert first is not None
        conn.execute(update(deliveries).where(deliveries.c.id == first.id).values(next_attempt_at=retry_at))
    later = open_work(empty_engine, T0)
    assert (later.waiting, later.scheduled, later.next_retry) == (3, 1, retry_at)
    assert open_work(empty_engine, retry_at).scheduled == 0  # due now, no longer "scheduled"


def test_progress_shows_done_waiting_and_next_retry(empty_engine: Engine) -> None:  # noqa: F811
    world = make_world(empty_engine, ["a@x.test", "b@x.test"])
    start_mailing(world)
    clock = SimulatedClock(start=T0)
    with empty_engine.begin() as conn:
        conn.execute(update(deliveries).values(next_attempt_at=clock.now() + timedelta(minutes=90)))
    console = Console(record=True, width=200, force_terminal=False)
    progress = DeliveryProgress(empty_engine, clock, console, interval=0.05)
    progress.batch_done(WorkerStats(delivered=1, bounced=1))
    progress.close()
    shown = console.export_text()
    assert "done 2, waiting 2" in shown
    assert "2 retries scheduled, next" in shown, shown
    assert "in 1h29m" in shown or "in 1h30m" in shown, shown
