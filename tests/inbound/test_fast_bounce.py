"""A bounce that outruns the worker's commit of the 250 is applied once the send is recorded.

The receiving server here is an aiosmtpd MX whose DATA handler mails the DSN to
``mailcarrier inbound`` and waits until inbound has processed it, all before it answers 250:
the DSN is processed while the delivery is still claimed by the worker (state ``queued``).
Postfix does the same for an unknown local user (issue 21: DSN processed 35 ms after the 250).
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import Engine, select

from mailcarrier.delivery.sandbox import build_dsn
from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.inbound.smtp_server import InboundServer, accepted_addresses
from mailcarrier.services.inbound import InboundContext, list_inbound
from mailcarrier.storage.tables import contacts, deliveries
from tests.delivery.world import T0, make_world, settings_for, start_mailing
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture


class _BounceAtOnce:
    """Accepts every message, but first mails a "user unknown" DSN and waits for it to be processed."""

    def __init__(self, inbound: InboundServer) -> None:
        self.inbound = inbound
        self.states_seen: list[str] = []
        self.engine: Engine | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.mail_from, str)
        raw = envelope.original_content or b""
        headers = raw.split(b"\r\n\r\n", 1)[0]
        dsn = build_dsn(envelope.mail_from, envelope.rcpt_tos[0], headers, reporting_mta="mx.fast.example")
        await asyncio.to_thread(self._send, envelope.mail_from, dsn)
        return "250 2.0.0 Ok: queued as FAST1"

    def _send(self, return_path: str, dsn: bytes) -> None:
        with smtplib.SMTP(self.inbound.host, self.inbound.port, timeout=10) as client:
            client.sendmail("", [return_path], dsn)
        assert self.inbound.wait_idle(20)
        assert self.engine is not None
        with self.engine.connect() as conn:  # what inbound saw when it processed the DSN
            self.states_seen.append(conn.execute(select(deliveries.c.state)).scalar_one())


def _wait_for(check: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_dsn_processed_before_the_250_is_recorded_still_bounces(empty_engine: Engine,  # noqa: F811
                                                                 tmp_path: Path) -> None:
    world = make_world(empty_engine, ["gone@fast.example"])
    start_mailing(world)
    settings = settings_for(tmp_path, 0)
    with InboundServer(empty_engine, InboundContext.from_settings(settings),
                       accept=accepted_addresses(settings), clock=lambda: datetime.now(UTC)) as inbound:
        handler = _BounceAtOnce(inbound)
        handler.engine = empty_engine
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            settings = settings_for(tmp_path, port)
            stats = asyncio.run(run_worker(settings, empty_engine, until_idle=True, clock=SimulatedClock(T0)))
        finally:
            controller.stop()
        assert stats.delivered == 1
        assert handler.states_seen == ["queued"]  # the DSN really was processed before the commit

        def bounced() -> bool:
            with empty_engine.connect() as conn:
                return conn.execute(select(deliveries.c.state)).scalar_one() == "bounced_hard"

        assert _wait_for(bounced), "the parked DSN was never applied"
    with empty_engine.connect() as conn:
        contact = conn.execute(select(contacts)).one()
        delivery = conn.execute(select(deliveries)).one()
    assert contact.status == "error" and contact.email_invalid
    assert delivery.delivered_at is not None  # the 250 stays on record beside the bounce
    [stored] = list_inbound(empty_engine)
    assert stored.state == "processed" and stored.match_method == "verp"
    assert stored.matched_delivery_ids == (delivery.id,)
