"""Message-IDs: stable across the retries of one delivery, different between installations.

Two fresh installations (each with the master secret generated on first use) send their first
mailing: row ids are equal (1, 1, 1), Message-IDs must not be, since mailbox providers drop a
message whose Message-ID they have already seen. A deferred delivery is retried with the same
Message-ID, and a bounce that names only the Message-ID still finds its delivery.
"""

from __future__ import annotations

import asyncio
import email
import socket
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import Engine, select

from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.services.inbound import InboundContext, IncomingEmail, process_all, store_incoming
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.tables import deliveries
from tests.delivery.world import T0, make_world, settings_for, start_mailing
from tests.inbound.factory import dsn


class _DeferFirst:
    """Answers 451 to the first message, 250 to every later one; keeps each Message-ID."""

    def __init__(self) -> None:
        self.message_ids: list[str] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.message_ids.append(str(email.message_from_bytes(envelope.original_content or b"")["Message-ID"]))
        if len(self.message_ids) == 1:
            return "451 4.3.0 try again later"
        return "250 2.0.0 Ok: queued as MID1"


def _install_and_send(tmp_path: Path) -> tuple[Engine, list[str]]:
    tmp_path.mkdir(parents=True)
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    start_mailing(make_world(engine, ["ann@example.com"]))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    handler = _DeferFirst()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        settings = settings_for(tmp_path, port, secret_key="")  # secret generated on first use
        stats = asyncio.run(run_worker(settings, engine, until_idle=True, clock=SimulatedClock(T0)))
    finally:
        controller.stop()
    assert stats.delivered == 1 and stats.deferred == 1
    return engine, handler.message_ids


def test_message_ids_stable_per_delivery_and_unique_per_installation(tmp_path: Path) -> None:
    first, first_ids = _install_and_send(tmp_path / "one")
    _second, second_ids = _install_and_send(tmp_path / "two")
    assert len(set(first_ids)) == 1 and len(set(second_ids)) == 1  # a retry keeps its Message-ID
    assert first_ids[0] != second_ids[0]
    assert first_ids[0].startswith("<mc.1.1.1.") and first_ids[0].endswith("@shop.example>")
    with first.connect() as conn:
        assert conn.execute(select(deliveries.c.message_id)).scalar_one().strip("<>") == first_ids[0].strip("<>")
    # A bounce that carries only the Message-ID (no VERP address) still finds the delivery.
    settings = settings_for(tmp_path / "one", 0, secret_key="")
    ctx = InboundContext.from_settings(settings)
    raw = dsn(to="postmaster@bounces.shop.example", recipient="ann@example.com",
              message_id=first_ids[0].strip("<>"))
    store_incoming(first, [IncomingEmail(raw, "file")], T0)
    summary = process_all(first, ctx, T0)
    assert summary.states == {"processed": 1}
    with first.connect() as conn:
        assert conn.execute(select(deliveries.c.state)).scalar_one() == "bounced_hard"
