"""The ``mailto:`` of ``List-Unsubscribe`` end to end, over SMTP.

A mailing is sent by the worker to a capturing MX; the recipient's mail client then writes to
the address and subject the header names, through ``mailcarrier inbound``. The contact is
opted out once (source ``mailto``) whether the token comes in the subject or the body, and a
mail with a forged token changes nothing.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import smtplib
import socket
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import Engine, select

from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.inbound.smtp_server import InboundServer, accepted_addresses
from mailcarrier.services.inbound import InboundContext, list_inbound
from mailcarrier.storage.tables import activities, contacts
from mailcarrier.storage.tracking_tables import consent_records
from tests.delivery.world import T0, make_world, settings_for, start_mailing
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture


class _Capture:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append(envelope.original_content or b"")
        return "250 2.0.0 Ok: queued as CAP1"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _send_one(engine: Engine, tmp_path: Path) -> bytes:
    capture = _Capture()
    port = _free_port()
    controller = Controller(capture, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        stats = asyncio.run(run_worker(settings_for(tmp_path, port), engine, until_idle=True,
                                       clock=SimulatedClock(T0)))
    finally:
        controller.stop()
    assert stats.delivered == 1
    [message] = capture.messages
    return message


def _mailto(message: bytes) -> tuple[str, str]:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    header = str(parsed["List-Unsubscribe"])
    [mailto] = re.findall(r"<mailto:([^>]+)>", header)
    parts = urlsplit("mailto:" + mailto)
    return unquote(parts.path), parse_qs(parts.query)["subject"][0]


def _client_mail(to: str, subject: str, body: str = "") -> bytes:
    """What a mail client sends when the reader clicks the mailto link."""
    message = EmailMessage()
    message["From"] = "Reader <reader@example.com>"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body or "\n")
    return message.as_bytes()


@pytest.fixture
def sent(empty_engine: Engine, tmp_path: Path) -> tuple[Engine, bytes]:  # noqa: F811
    world = make_world(empty_engine, ["reader@example.com"])
    start_mailing(world)
    return empty_engine, _send_one(empty_engine, tmp_path)


def test_mailto_unsubscribe_over_smtp_opts_out_once(sent: tuple[Engine, bytes], tmp_path: Path) -> None:
    engine, message = sent
    address, subject = _mailto(message)
    assert address == "unsubscribe@bounces.shop.example" and subject.startswith("unsubscribe-")
    token = subject.removeprefix("unsubscribe-")
    settings = settings_for(tmp_path, 0)
    with InboundServer(engine, InboundContext.from_settings(settings),
                       accept=accepted_addresses(settings)) as inbound:
        with smtplib.SMTP(inbound.host, inbound.port, timeout=10) as client:
            client.sendmail("reader@example.com", [address], _client_mail(address, subject))
            # the same wish again, token in the body this time (another client, another day)
            client.sendmail("reader@example.com", [address],
                            _client_mail(address, "Please remove me", f"unsubscribe {token}\n"))
            # a forged token is read, kept and changes nothing
            client.sendmail("mallory@example.com", [address],
                            _client_mail(address, "unsubscribe-" + "A" * len(token)))
        assert inbound.wait_idle(30)
    with engine.connect() as conn:
        contact = conn.execute(select(contacts)).one()
        records = conn.execute(select(consent_records.c.action, consent_records.c.source)).all()
        unsubscribes = conn.execute(select(activities).where(activities.c.type == "unsubscribe")).all()
    assert contact.status == "opted_out"
    assert [tuple(r) for r in records] == [("opted_out", "mailto")]
    assert len(unsubscribes) == 1
    states = sorted((m.state, m.kind, m.match_method) for m in list_inbound(engine))
    assert states == [("processed", "unsubscribe", "token"), ("processed", "unsubscribe", "token"),
                      ("unmatched", "unsubscribe", None)]


def test_unsubscribe_address_is_accepted_at_rcpt_and_others_still_refused(
        empty_engine: Engine, tmp_path: Path) -> None:  # noqa: F811
    settings = settings_for(tmp_path, 0)
    server = InboundServer(empty_engine, InboundContext.from_settings(settings),
                           accept=accepted_addresses(settings), process=False)
    with server as inbound, smtplib.SMTP(inbound.host, inbound.port, timeout=10) as client:
        client.ehlo()
        client.mail("reader@example.com")
        assert client.rcpt("Unsubscribe@Bounces.Shop.Example")[0] == 250
        assert client.rcpt("unsubscribe@elsewhere.example")[0] == 550
