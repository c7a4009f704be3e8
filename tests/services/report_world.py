"""A small, known world of mailings, deliveries, attempts and activities written through the store.

Used by the report, evidence, API and dashboard tests. Every figure the tests expect is
derived from the rows created here, not typed in twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage import contacts as contact_repo
from mailcarrier.storage.tables import activities, attempts, deliveries, mailings
from mailcarrier.storage.tracking_tables import tracking_hits

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)

#: (local part, domain, final state, reason, category, number of attempts)
RECIPIENTS: list[tuple[str, str, str, str | None, int | None, int]] = [
    ("ann", "example.com", "delivered", None, None, 1),
    ("bob", "example.com", "delivered", None, None, 2),
    ("cy", "example.com", "bounced_hard", "userunknown", 2, 1),
    ("dee", "corp.example", "bounced_hard", "filtered", 1, 1),
    ("eve", "corp.example", "bounced_hard", "blocked", 1, 1),
    ("fay", "gmail.com", "bounced_soft", "mailboxfull", 3, 4),
    ("gus", "gmail.com", "in_progress", "speeding", 3, 2),
    ("hal", "gmail.com", "queued", None, None, 0),
    ("ida", "example.org", "suppressed", "suppressed", None, 0),
    ("jo", "example.org", "failed", None, None, 0),
    ("kim", "example.org", "delivered", None, None, 1),
]

#: (recipient, hit kind, verdict): ann opened and clicked herself; bob's open was Apple's
#: proxy; kim's click was a scanner, and ann's scanner click does not make her a machine.
HITS = [("ann@example.com", "open", "human"), ("ann@example.com", "click", "human"),
        ("ann@example.com", "click", "machine"), ("bob@example.com", "open", "apple_mpp"),
        ("kim@example.org", "click", "machine")]


@dataclass
class World:
    engine: Engine
    account_id: int
    other_account_id: int
    mailing_id: int
    other_mailing_id: int
    test_mailing_id: int
    contacts: dict[str, int] = field(default_factory=dict)
    deliveries: dict[str, int] = field(default_factory=dict)
    other_contact_id: int = 0
    other_delivery_id: int = 0


def _mailing(conn: Connection, account_id: int, name: str, kind: str = "regular",
             state: str = "sending") -> int:
    key = conn.execute(mailings.insert().values(
        account_id=account_id, name=name, kind=kind, state=state, from_address="news@sender.example",
        subject=f"{name} subject", sending_domain="sender.example", created_at=T0,
        started_at=T0)).inserted_primary_key
    assert key is not None
    return int(key[0])


def _attempt_rows(delivery_id: int, email: str, state: str, reason: str | None,
                  category: int | None, count: int) -> list[dict[str, Any]]:
    rows = []
    for n in range(1, count + 1):
        last = n == count
        start = T0 + timedelta(minutes=30 * (n - 1))
        if last and state == "delivered":
            code, text, outcome, queue = 250, "2.0.0 Ok: queued as 4AbC123", "delivered", "4AbC123"
        elif last and state == "bounced_hard":
            code, text, outcome, queue = 550, f"5.7.1 rejected ({reason})", "bounced", None
        else:
            code, text, outcome, queue = 451, "4.7.1 try again later", "deferred", None
        rows.append({
            "delivery_id": delivery_id, "number": n, "started_at": start,
            "ended_at": start + timedelta(seconds=2), "return_path": f"b-{delivery_id}@bounces.sender.example",
            "local_ip": "192.0.2.10", "remote_ip": "198.51.100.7",
            "mx_host": "mx.corp.example" if "corp" in email else "mx1.example.net",
            "tls_version": "TLSv1.3", "tls_cipher": "TLS_AES_256_GCM_SHA384",
            "dialogue": f"S: 220 mx ready\nC: EHLO mailcarrier.localhost\nC: RCPT TO:<{email}>\nS: {code} {text}",
            "reply_code": code, "enhanced_status": text.split()[0], "reply_text": text,
            "queue_id": queue, "internal_code": None,
            "reason": reason if outcome != "delivered" else None,
            "category": category if outcome != "delivered" else None, "outcome": outcome})
    return rows


def build(engine: Engine) -> World:
    """Two accounts; account one has a regular mailing to RECIPIENTS and a test mailing."""
    with engine.begin() as conn:
        one = account_repo.create_account(conn, "one", "One", T0)
        two = account_repo.create_account(conn, "two", "Two", T0)
        world = World(engine, one.id, two.id, _mailing(conn, one.id, "Spring sale"),
                      _mailing(conn, two.id, "Theirs"), _mailing(conn, one.id, "Proof", kind="test",
                                                                  state="done"))
        for local, domain, state, reason, category, count in RECIPIENTS:
            email = f"{local}@{domain}"
            cid = contact_repo.add_contact(conn, one.id, email, T0)
            world.contacts[email] = cid
            key = conn.execute(deliveries.insert().values(
                account_id=one.id, mailing_id=world.mailing_id, contact_id=cid, email=email,
                domain=domain, state=state, attempt_count=count,
                next_attempt_at=T0 + timedelta(hours=2) if state in ("in_progress", "queued") else None,
                last_reason=reason, last_category=category,
                last_reply_code=550 if state == "bounced_hard" else None,
                suspected_filtering=reason == "filtered",
                delivered_at=T0 if state == "delivered" else None,
                message_id=f"<{local}.{world.mailing_id}@sender.example>",
                return_path=f"b-{local}@bounces.sender.example")).inserted_primary_key
            assert key is not None
            did = int(key[0])
            world.deliveries[email] = did
            rows = _attempt_rows(did, email, state, reason, category, count)
            if rows:
                conn.execute(attempts.insert(), rows)
            if state in ("bounced_hard", "bounced_soft"):
                conn.execute(activities.insert().values(
                    account_id=one.id, contact_id=cid, mailing_id=world.mailing_id, delivery_id=did,
                    type="hard_bounce" if state == "bounced_hard" else "soft_bounce",
                    occurred_at=T0 + timedelta(hours=1), reason=reason, category=category,
                    reply_code=550 if state == "bounced_hard" else 452,
                    remote_mta="mx.corp.example" if "corp" in domain else "gmail-smtp-in.l.google.com",
                    details={"suspected_filtering": True} if reason == "filtered" else None))
        for email, kind, verdict in HITS:
            conn.execute(tracking_hits.insert().values(
                kind=kind, occurred_at=T0 + timedelta(hours=3), method="GET", ip="203.0.113.5",
                headers={}, token_valid=True, account_id=one.id, mailing_id=world.mailing_id,
                delivery_id=world.deliveries[email], contact_id=world.contacts[email],
                verdict=verdict))
        conn.execute(activities.insert().values(
            account_id=one.id, contact_id=world.contacts["kim@example.org"],
            mailing_id=world.mailing_id, type="unsubscribe", occurred_at=T0 + timedelta(hours=4)))
        world.other_contact_id = contact_repo.add_contact(conn, two.id, "zed@example.com", T0)
        key = conn.execute(deliveries.insert().values(
            account_id=two.id, mailing_id=world.other_mailing_id, contact_id=world.other_contact_id,
            email="zed@example.com", domain="example.com", state="delivered",
            attempt_count=1)).inserted_primary_key
        assert key is not None
        world.other_delivery_id = int(key[0])
        conn.execute(attempts.insert(), _attempt_rows(world.other_delivery_id, "zed@example.com",
                                                      "delivered", None, None, 1))
    return world
