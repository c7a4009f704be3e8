"""Reputation events against sending IPs and accounts: spam-trap hits and blocklist listings
(manual, from the API, from bounces, from DNSBL look-ups), with the accounts that were on
the IP at the time.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Engine, or_, select, update

from mailcarrier.domain.dns_checks import Check, CheckStatus
from mailcarrier.domain.errors import InvalidInputError
from mailcarrier.domain.reputation_signals import SignalKind, find_signal
from mailcarrier.services.pools.membership import accounts_on_ip, ip_by_address
from mailcarrier.services.pools.values import DnsblResult, ReputationEvent
from mailcarrier.storage.engine import run_write
from mailcarrier.storage.pool_tables import (
    dnsbl_lookups,
    reputation_event_accounts,
    reputation_events,
    sending_ips,
)
from mailcarrier.storage.tables import accounts, attempts

__all__ = [
    "record_bounce_signals",
    "record_bounce_signals_in",
    "record_dnsbl_results",
    "record_reputation_event",
    "record_reputation_signal",
    "reputation_history",
]

_REPUTATION_SOURCES = ("manual", "api", "bounce", "dnsbl")


def record_reputation_event(conn: Connection, kind: SignalKind | str, now: datetime, *,
                            source: str, ip_address: str | None = None, account_id: int | None = None,
                            blocklist: str = "", evidence: str = "",
                            occurred_at: datetime | None = None) -> int:
    """Record a trap hit or listing; the accounts on the IP at that moment become its neighbours."""
    event_kind = SignalKind(kind)
    if source not in _REPUTATION_SOURCES:
        raise InvalidInputError(f"unknown source {source!r}: use one of {', '.join(_REPUTATION_SOURCES)}")
    if ip_address is None and account_id is None:
        raise InvalidInputError("a trap hit or listing needs an IP, an account or both")
    when = occurred_at or now
    ip = ip_by_address(conn, str(ipaddress.ip_address(ip_address.strip()))) if ip_address else None
    key = conn.execute(reputation_events.insert().values(
        kind=event_kind.value, ip_id=ip.id if ip else None, ip_address=ip.address if ip else None,
        account_id=account_id, blocklist=blocklist[:255], source=source, evidence=evidence[:2000],
        occurred_at=when, recorded_at=now,
    )).inserted_primary_key
    assert key is not None
    neighbours = set(accounts_on_ip(conn, ip.id, when)) if ip else set()
    if account_id is not None:
        neighbours.add(account_id)
    if neighbours:
        conn.execute(reputation_event_accounts.insert(),
                     [{"event_id": key[0], "account_id": a} for a in sorted(neighbours)])
    return int(key[0])


def record_reputation_signal(conn: Connection, text: str, ip_address: str, account_id: int | None,
                             now: datetime) -> int | None:
    """Record the trap hit or listing a bounce/deferral text names; None when it names neither."""
    signal = find_signal(text)
    if signal is None:
        return None
    return record_reputation_event(conn, signal.kind, now, source="bounce", ip_address=ip_address,
                                   account_id=account_id, blocklist=signal.blocklist,
                                   evidence=text.strip()[:2000])


def reputation_history(conn: Connection, *, ip_address: str | None = None,
                       account_id: int | None = None) -> list[ReputationEvent]:
    """Trap hits and listings of an IP, or those that touched an account (itself or as neighbour)."""
    e = reputation_events.c
    query = select(reputation_events, accounts.c.slug).outerjoin(accounts, accounts.c.id == e.account_id)
    if ip_address is not None:
        query = query.where(e.ip_address == str(ipaddress.ip_address(ip_address.strip())))
    if account_id is not None:
        touched = select(reputation_event_accounts.c.event_id).where(
            reputation_event_accounts.c.account_id == account_id)
        query = query.where(or_(e.account_id == account_id, e.id.in_(touched)))
    events = []
    for row in conn.execute(query.order_by(e.occurred_at, e.id)).all():
        names = conn.execute(select(accounts.c.slug).join(
            reputation_event_accounts, reputation_event_accounts.c.account_id == accounts.c.id,
        ).where(reputation_event_accounts.c.event_id == row.id).order_by(accounts.c.slug)).scalars().all()
        events.append(ReputationEvent(row.id, SignalKind(row.kind), row.ip_address, row.slug, row.blocklist,
                                      row.source, row.evidence, row.occurred_at, row.resolved_at,
                                      tuple(names)))
    return events


def record_dnsbl_results(conn: Connection, results: Sequence[tuple[str, str, Check]],
                         now: datetime) -> list[DnsblResult]:
    """Store scheduled look-ups (ip, zone, check): a new listing opens an event, a clean answer closes it.

    Query errors (127.255.255.x, DNS failures) are stored as look-ups only: they say
    nothing about the IP.
    """
    out = []
    for address, zone, check in results:
        ip = ip_by_address(conn, address)
        conn.execute(dnsbl_lookups.insert().values(ip_id=ip.id, zone=zone, checked_at=now,
                                                   status=check.status.value, detail=check.detail))
        e = reputation_events.c
        open_listing = conn.execute(select(e.id).where(
            e.ip_id == ip.id, e.kind == "listing", e.source == "dnsbl", e.blocklist == zone,
            e.resolved_at.is_(None))).scalar_one_or_none()
        new = False
        if check.status is CheckStatus.FAIL and open_listing is None:
            record_reputation_event(conn, SignalKind.LISTING, now, source="dnsbl", ip_address=address,
                                    blocklist=zone, evidence=check.detail)
            new = True
        elif check.status is CheckStatus.PASS and open_listing is not None:
            conn.execute(update(reputation_events).where(e.id == open_listing).values(resolved_at=now))
        out.append(DnsblResult(address, check, new))
    return out




def record_bounce_signals(engine: Engine, bounces: Sequence[tuple[int, int, str]], now: datetime) -> int:
    """:func:`record_bounce_signals_in` in a write unit of its own."""
    return run_write(engine, lambda conn: record_bounce_signals_in(conn, bounces, now),
                     what="recording bounce signals")


def record_bounce_signals_in(conn: Connection, bounces: Sequence[tuple[int, int, str]],
                             now: datetime) -> int:
    """Trap hits and listings named by asynchronous bounce texts (DSNs, feedback): the inbound side.

    ``bounces`` are (delivery id, account id, diagnostic text). A text that names a trap or
    a blocklist (``reputation_signals.toml``) is recorded against the account and the pool
    IP that carried the message (its accepted attempt), whose accounts then become the
    event's neighbours; a message sent from outside every pool records the account only.
    Runs in the caller's transaction (the inbound batch's), so the signals commit with the
    bounces that carry them. Returns how many events were recorded.
    """
    named = [(delivery_id, account_id, text, signal) for delivery_id, account_id, text in bounces
             if text and (signal := find_signal(text)) is not None]
    if not named:
        return 0
    a = attempts.c
    rows = conn.execute(select(a.delivery_id, a.local_ip).where(
        a.delivery_id.in_(sorted({d for d, _, _, _ in named})), a.outcome == "delivered",
        a.local_ip.is_not(None)))
    carried = {int(d): str(ip) for d, ip in rows}
    ours = set(conn.execute(select(sending_ips.c.address).where(
        sending_ips.c.address.in_(sorted(set(carried.values()))))).scalars())
    for delivery_id, account_id, text, signal in named:
        address = carried.get(delivery_id)
        record_reputation_event(conn, signal.kind, now, source="bounce",
                                ip_address=address if address in ours else None, account_id=account_id,
                                blocklist=signal.blocklist, evidence=text.strip()[:2000])
    return len(named)
