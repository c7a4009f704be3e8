"""UTF-8 addresses (RFC 6531): SMTPUTF8 declared when offered; when not, our own code 191.

Against aiosmtpd with and without the extension; the same against Postfix with
``strict_smtputf8 = yes`` is in ``tests/interop``.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import Engine, select

from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.storage.tables import attempts, contacts, deliveries
from tests.delivery.world import T0, make_world, settings_for, start_mailing
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

UTF8_ADDRESS = "jösé@exämple-utf8.test"


class _Recorder:
    def __init__(self) -> None:
        self.mail_options: list[list[str]] = []
        self.recipients: list[str] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.mail_options.append(list(envelope.mail_options))
        self.recipients.extend(envelope.rcpt_tos)
        return "250 2.0.0 Ok: queued as U8"


def _run(engine: Engine, tmp_path: Path, *, offer: bool) -> _Recorder:
    start_mailing(make_world(engine, [UTF8_ADDRESS, "plain@example.com"]))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    recorder = _Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, enable_SMTPUTF8=offer)
    controller.start()
    try:
        asyncio.run(run_worker(settings_for(tmp_path, port), engine, until_idle=True,
                               clock=SimulatedClock(T0)))
    finally:
        controller.stop()
    return recorder


def test_smtputf8_declared_when_the_server_offers_it(empty_engine: Engine, tmp_path: Path) -> None:  # noqa: F811
    recorder = _run(empty_engine, tmp_path, offer=True)
    assert sorted(recorder.recipients) == sorted([UTF8_ADDRESS, "plain@example.com"])
    utf8_options = recorder.mail_options[recorder.recipients.index(UTF8_ADDRESS)]
    ascii_options = recorder.mail_options[recorder.recipients.index("plain@example.com")]
    assert "SMTPUTF8" in utf8_options and "SMTPUTF8" not in ascii_options
    with empty_engine.connect() as conn:
        assert {r.state for r in conn.execute(select(deliveries.c.state))} == {"delivered"}


def test_without_smtputf8_the_recipient_fails_as_ours_not_as_invalid(empty_engine: Engine,  # noqa: F811
                                                                     tmp_path: Path) -> None:
    recorder = _run(empty_engine, tmp_path, offer=False)
    assert recorder.recipients == ["plain@example.com"]  # nothing was sent for the UTF-8 address
    with empty_engine.connect() as conn:
        delivery = conn.execute(select(deliveries).where(deliveries.c.email == UTF8_ADDRESS)).one()
        [attempt] = conn.execute(select(attempts).where(attempts.c.delivery_id == delivery.id)).all()
        contact = conn.execute(select(contacts).where(contacts.c.email == UTF8_ADDRESS)).one()
    assert attempt.internal_code == 191 and attempt.category == 4 and attempt.reply_code is None
    assert "does not offer SMTPUTF8" in (attempt.dialogue or "")
    assert delivery.state == "bounced_soft" and delivery.last_category == 4
    assert not contact.email_invalid and contact.status == "active"
