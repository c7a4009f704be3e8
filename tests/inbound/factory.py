"""Test data for the return path: a mailing with sent deliveries, and real-format DSN/ARF emails."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from mailcarrier.domain.contact_status import StatusPolicy
from mailcarrier.domain.verp import VerpAddress, encode_return_path
from mailcarrier.services.inbound import InboundContext
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage import contacts as contact_repo
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.tables import attempts, contacts, deliveries, mailings

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
KEY = b"test-installation-secret"
BOUNCE_DOMAIN = "bounces.sender.test"
CTX = InboundContext(KEY, BOUNCE_DOMAIN, StatusPolicy(), timedelta(days=30))


@dataclass(frozen=True)
class Sent:
    delivery_id: int
    contact_id: int
    email: str
    message_id: str
    return_path: str


@dataclass(frozen=True)
class World:
    engine: Engine
    account_id: int
    mailing_id: int
    sent: dict[str, Sent]


def make_world(engine: Engine, addresses: list[str], *, slug: str = "shop",
               state: str = "delivered", when: datetime = T0, upgrade_db: bool = True) -> World:
    """One account, one mailing, one delivered delivery (with its 250 attempt) per address."""
    if upgrade_db:
        upgrade(engine)
    sent: dict[str, Sent] = {}
    with engine.begin() as conn:
        account = account_repo.create_account(conn, slug, slug.title(), when)
        mailing_id = conn.execute(mailings.insert().values(
            account_id=account.id, from_address=f"news@{slug}.test", subject="Spring",
            sending_domain=f"{slug}.test", created_at=when, state="done")).inserted_primary_key[0]
        for address in addresses:
            contact_id = contact_repo.add_contact(conn, account.id, address, when)
            key = conn.execute(deliveries.insert().values(
                account_id=account.id, mailing_id=mailing_id, contact_id=contact_id, email=address,
                domain=address.rpartition("@")[2], state=state)).inserted_primary_key[0]
            return_path = encode_return_path(VerpAddress(account.id, mailing_id, key), key=KEY,
                                             bounce_domain=BOUNCE_DOMAIN)
            message_id = f"m{key}.{slug}@sender.test"
            conn.execute(deliveries.update().where(deliveries.c.id == key).values(
                message_id=message_id, return_path=return_path, attempt_count=1,
                delivered_at=when if state == "delivered" else None))
            conn.execute(attempts.insert().values(
                delivery_id=key, number=1, started_at=when, ended_at=when, return_path=return_path,
                reply_code=250, reply_text="2.0.0 Ok: queued as ABC123", outcome="delivered"))
            sent[address] = Sent(key, contact_id, address, message_id, return_path)
    return World(engine, account.id, mailing_id, sent)


def delivery(engine: Engine, delivery_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).one()._mapping)


def contact(engine: Engine, contact_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(select(contacts).where(contacts.c.id == contact_id)).one()._mapping)


def dsn(*, to: str, recipient: str, status: str = "5.1.1", action: str = "failed",
        diagnostic: str = "smtp; 550 5.1.1 <{r}>: Recipient address rejected: User unknown",
        message_id: str | None = None, dsn_id: str = "dsn-1@mx.receiver.test",
        original_recipient: str | None = None) -> bytes:
    """An RFC 3464 delivery status notification, as Postfix writes them."""
    original = (f"Message-ID: <{message_id}>\n" if message_id else "") + \
        f"From: news@shop.test\nTo: {recipient}\nSubject: Spring\n"
    text = f"""Return-Path: <>
Received: from mx.receiver.test by bounces.sender.test; Fri, 1 May 2026 10:00:00 +0000
From: MAILER-DAEMON@mx.receiver.test (Mail Delivery System)
To: {to}
Subject: Undelivered Mail Returned to Sender
Message-ID: <{dsn_id}>
Date: Fri, 1 May 2026 10:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain

This is the mail system at host mx.receiver.test.
I'm sorry to have to inform you that your message could not be delivered.

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.receiver.test

Final-Recipient: rfc822; {recipient}
{f"Original-Recipient: rfc822; {original_recipient}{chr(10)}" if original_recipient else ""}Action: {action}
Status: {status}
Remote-MTA: dns; mailstore.receiver.test
Diagnostic-Code: {diagnostic.format(r=recipient)}

--B1
Content-Type: text/rfc822-headers

{original}
--B1--
"""
    return _crlf(text)


def _crlf(text: str) -> bytes:
    """SMTP carries CRLF line ends."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def arf(*, to: str, recipient: str, message_id: str | None, return_path: str | None = None,
        report_id: str = "fbl-1@fbl.receiver.test") -> bytes:
    """An RFC 5965 abuse report as a feedback loop sends it."""
    rp = f"Return-Path: <{return_path}>\n" if return_path else ""
    mid = f"Message-ID: <{message_id}>\n" if message_id else ""
    return _crlf(f"""From: fbl@fbl.receiver.test
To: {to}
Subject: Abuse report
Message-ID: <{report_id}>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="F1"

--F1
Content-Type: text/plain

This is an email abuse report.

--F1
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: FBL/1.0
Version: 1
Original-Rcpt-To: {recipient}

--F1
Content-Type: message/rfc822

{rp}{mid}From: news@shop.test
To: {recipient}
Subject: Spring

Hello
--F1--
""")


def autoreply(*, to: str, sender: str, in_reply_to: str) -> bytes:
    return _crlf(f"""From: {sender}
To: {to}
Subject: Out of office: Spring
Auto-Submitted: auto-replied
In-Reply-To: <{in_reply_to}>
Message-ID: <ooo-{sender}>

I am away until Monday.
""")
