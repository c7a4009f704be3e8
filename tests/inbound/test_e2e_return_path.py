"""End to end: a mailing sent by the worker through the sandbox MX, which answers 250 and later
mails real DSNs to ``mailcarrier inbound`` over SMTP; a feedback loop reports a complaint."""

from __future__ import annotations

import asyncio
import smtplib
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, select

from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.inbound.smtp_server import InboundServer, accepted_addresses
from mailcarrier.services.contacts import history
from mailcarrier.services.inbound import InboundContext, list_inbound
from mailcarrier.storage.tables import attempts, contacts, deliveries
from tests.delivery.world import T0, make_world, settings_for, start_mailing
from tests.inbound.factory import arf
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

ADDRESSES = ["aol1@aol.com", "aol2@aol.com", "ann@example.com", "bob@example.com"]


def test_late_bounces_and_a_complaint_close_the_loop(empty_engine: Engine, tmp_path: Path) -> None:  # noqa: F811
    world = make_world(empty_engine, ADDRESSES)
    start_mailing(world)
    settings = settings_for(tmp_path, 0, inbound_accept_addresses="fbl@shop.example")
    # An hour after sending (simulated): the 250s are recent, yet a late bounce retracts its own
    # message's 250, so a "user unknown" still invalidates the address (not B2B filtering).
    with InboundServer(empty_engine, InboundContext.from_settings(settings),
                       accept=accepted_addresses(settings), clock=lambda: T0 + timedelta(hours=1)) as inbound:
        with Sandbox(dsn_target=(inbound.host, inbound.port), dsn_delay=0.2) as mx:
            settings = settings_for(tmp_path, mx.port, inbound_accept_addresses="fbl@shop.example")
            stats = asyncio.run(run_worker(settings, empty_engine, until_idle=True, clock=SimulatedClock(T0)))
            deadline = time.monotonic() + 15
            while len(mx.handler.dsns_sent) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert mx.handler.dsn_errors == []
        assert stats.delivered == 4  # every message got its 250 at the time
        with empty_engine.connect() as conn:
            bob_mid = conn.execute(select(deliveries.c.message_id)
                                   .where(deliveries.c.email == "bob@example.com")).scalar_one()
        with smtplib.SMTP(inbound.host, inbound.port, timeout=10) as fbl:
            fbl.sendmail("fbl@feedback.example", ["fbl@shop.example"],
                         arf(to="fbl@shop.example", recipient="redacted", message_id=bob_mid.strip("<>")))
        assert inbound.wait_idle(30)
    with empty_engine.connect() as conn:
        rows = {r.email: r for r in conn.execute(select(deliveries))}
        status = {r.email: r for r in conn.execute(select(contacts))}
        codes = {r.delivery_id: r.reply_code for r in conn.execute(select(attempts))}
    for address in ("aol1@aol.com", "aol2@aol.com"):
        row = rows[address]
        assert row.state == "bounced_hard", address  # late bounce: delivered, then bounced
        assert row.delivered_at is not None and codes[row.id] == 250  # the 250 stays as evidence
        assert row.last_enhanced_status == "5.1.1"
        entries = history(empty_engine, world.account_id, status[address].id)
        bounce = next(e for e in entries if e.type == "hard_bounce")
        assert bounce.delivery_id == row.id and bounce.details and bounce.details["matched_by"] == "verp"
        assert status[address].total_bounces == 1
        assert status[address].last_delivered_at is not None  # the worker recorded the 250
        assert status[address].status == "error" and status[address].email_invalid  # category 2
        assert not row.suspected_filtering
    assert rows["ann@example.com"].state == "delivered" and status["ann@example.com"].status == "active"
    assert status["bob@example.com"].status == "opted_out"
    assert rows["bob@example.com"].state == "delivered"
    kinds = sorted((m.kind, m.match_method) for m in list_inbound(empty_engine))
    assert kinds == [("bounce", "verp"), ("bounce", "verp"), ("complaint", "message_id")]
