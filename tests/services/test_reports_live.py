"""Reports on real traffic: a mailing through the sandbox MX (figures reconcile after every
batch as retries settle) and a late bounce through the inbound service."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.worker import SimulatedClock, WorkerStats, run_worker
from mailcarrier.services import reports
from mailcarrier.services.evidence import collect_evidence
from mailcarrier.services.inbound import IncomingEmail, process_all, store_incoming
from mailcarrier.storage.engine import make_engine
from tests.delivery.world import T0, make_world, settings_for, start_mailing
from tests.inbound import factory
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

ADDRESSES = ["ann@example.com", "bob@example.com", "unknown1@gmail.com", "full1@example.org",
             "grey1@example.net", "grey2@example.net"]


def test_buckets_reconcile_after_every_batch_while_retries_settle(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    world = make_world(engine, ADDRESSES)
    mailing_id = start_mailing(world)
    snapshots: list[reports.ResponsePage] = []

    def snapshot(_stats: WorkerStats) -> None:
        snapshots.append(reports.response_page(engine, world.account_id, mailing_id))

    with Sandbox() as sandbox:
        asyncio.run(run_worker(settings_for(tmp_path, sandbox.port), engine, until_idle=True,
                               clock=SimulatedClock(T0), on_batch=snapshot))
    final = reports.response_page(engine, world.account_id, mailing_id)
    assert all(s.reconciles and s.recipients == len(ADDRESSES) for s in [*snapshots, final])
    assert any(s.buckets["in_progress"] > 0 for s in snapshots)  # deferrals were visible
    assert final.buckets["in_progress"] == final.buckets["queued"] == 0
    assert final.buckets["delivered"] == 4  # greylisted ones got through on retry
    assert final.buckets["bounced_hard"] == 1 and final.buckets["bounced_soft"] == 1
    assert final.bounced_by_category == {2: 1, 3: 1}
    delivered_over_time = [s.buckets["delivered"] for s in snapshots]
    assert delivered_over_time == sorted(delivered_over_time)
    engine.dispose()


@pytest.fixture
def inbound_world(empty_engine: Engine) -> Iterator[factory.World]:  # noqa: F811
    yield factory.make_world(empty_engine, ["ann@aol.test", "bob@aol.test"])


def test_late_bounce_moves_figures_and_shows_in_evidence(inbound_world: factory.World) -> None:
    w = inbound_world
    before = reports.response_page(w.engine, w.account_id, w.mailing_id)
    ann = w.sent["ann@aol.test"]
    later = factory.T0 + timedelta(hours=2)
    raw = factory.dsn(to=ann.return_path, recipient=ann.email)
    store_incoming(w.engine, [IncomingEmail(raw, "smtp", "test", "", (ann.return_path,))], later)
    process_all(w.engine, factory.CTX, later)
    after = reports.response_page(w.engine, w.account_id, w.mailing_id)
    assert after.buckets["delivered"] == before.buckets["delivered"] - 1
    assert after.buckets["bounced_hard"] == before.buckets["bounced_hard"] + 1
    assert after.reconciles and after.bounced_by_category.get(2) == 1
    day = later.date()
    report = reports.bounce_report(w.engine, w.account_id, since=day, until=day)
    assert report.total == 1 and report.by_reason[0].reason == "userunknown"
    evidence = collect_evidence(w.engine, w.account_id, "ann@aol.test", later, mailing_id=w.mailing_id)
    (delivery,) = evidence.deliveries
    assert [e.type for e in delivery.later] == ["hard_bounce"]
    assert delivery.state == "bounced_hard"
