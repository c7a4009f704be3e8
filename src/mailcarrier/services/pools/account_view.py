"""An account's view of its pool (API, dashboard): IPs with warm-up and listings, the events
that concern it (addresses redacted), its throttle log, and events it reports.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, select

from mailcarrier.domain.errors import InvalidInputError, NotFoundError
from mailcarrier.domain.reputation_signals import SignalKind
from mailcarrier.domain.warmup import (
    WarmupLimits,
    advance,
    daily_cap,
    load_schedules,
)
from mailcarrier.services.pools.membership import current_pool, pool_ips, pool_of
from mailcarrier.services.pools.reputation import record_reputation_event, reputation_history
from mailcarrier.services.pools.throttling import throttle_log
from mailcarrier.services.pools.values import Pool, ThrottleLogEntry
from mailcarrier.services.pools.warmup import day_stats
from mailcarrier.storage.pool_tables import (
    ip_daily_volume,
    ip_pools,
    pool_assignments,
    reputation_events,
    sending_ips,
)
from mailcarrier.storage.tables import accounts

__all__ = [
    "AccountEvent",
    "AccountPool",
    "IpView",
    "account_events",
    "account_pool",
    "account_throttle_log",
    "redact_addresses",
    "report_event",
]

@dataclass(frozen=True, slots=True)
class IpView:
    """A sending IP as its account sees it today: ramp, cap, volume, open listings."""

    address: str
    hostname: str
    enabled: bool
    schedule: str
    warmup_day: int
    held: bool
    daily_cap: int | None  #: None: warm (no warm-up cap)
    sent_today: int
    listed_on: tuple[str, ...]  #: blocklists with an open listing of the IP


@dataclass(frozen=True, slots=True)
class AccountPool:
    """The account's current pool; ``other_accounts`` counts its neighbours without naming them."""

    pool: Pool | None
    assigned_at: datetime | None
    reason: str
    ips: tuple[IpView, ...]
    other_accounts: int


@dataclass(frozen=True, slots=True)
class AccountEvent:
    """A trap hit or listing that touched the account, without other tenants' details.

    ``caused_here`` is true when the account itself was named (its mail hit the trap, or it
    was held responsible); ``evidence`` is shown only then, because a bounce text caused by
    a neighbour may quote that neighbour's recipients.
    """

    id: int
    kind: SignalKind
    ip_address: str | None
    blocklist: str
    source: str
    occurred_at: datetime
    resolved_at: datetime | None
    caused_here: bool
    accounts_on_ip: int
    evidence: str


_ADDRESS = re.compile(r"[^\s<>\"'@,;:()\[\]]+@[^\s<>\"',;:()\[\]]+")


def redact_addresses(text: str) -> str:
    """Replace email addresses in a provider's reply: it may name another tenant's recipient."""
    return _ADDRESS.sub("<address>", text)


def account_pool(conn: Connection, account_id: int, now: datetime, limits: WarmupLimits) -> AccountPool:
    """The account's pool with each IP's warm-up state as of today (computed, not stored: a read)."""
    row = conn.execute(select(pool_assignments.c.pool_id, pool_assignments.c.assigned_at,
                              pool_assignments.c.reason).where(
        pool_assignments.c.account_id == account_id, pool_assignments.c.ended_at.is_(None))).one_or_none()
    if row is None:
        return AccountPool(None, None, "", (), 0)
    pool = pool_of(conn.execute(select(ip_pools).where(ip_pools.c.id == row.pool_id)).one())
    others = conn.execute(select(func.count(func.distinct(pool_assignments.c.account_id))).where(
        pool_assignments.c.pool_id == pool.id, pool_assignments.c.ended_at.is_(None),
        pool_assignments.c.account_id != account_id)).scalar_one()
    ips = pool_ips(conn, pool.id)
    ids = [ip.id for ip in ips]
    sent = dict(conn.execute(select(ip_daily_volume.c.ip_id, ip_daily_volume.c.sent).where(
        ip_daily_volume.c.ip_id.in_(ids), ip_daily_volume.c.day == now.date())).all())
    e = reputation_events.c
    listed: dict[int, list[str]] = {}
    for ip_id, blocklist in conn.execute(select(e.ip_id, e.blocklist).where(
            e.ip_id.in_(ids), e.kind == SignalKind.LISTING.value, e.source == "dnsbl",
            e.resolved_at.is_(None)).order_by(e.blocklist)).all():
        listed.setdefault(ip_id, []).append(blocklist)
    schedules = load_schedules()
    views = []
    for ip in ips:
        state = ip.warmup
        if now.date() > state.as_of:
            yesterday = day_stats(conn, ip.id, now.date() - timedelta(days=1))
            state = advance(state, now.date(), yesterday, limits)
        schedule = schedules.get(state.schedule)
        cap = daily_cap(schedule, state) if schedule is not None else None
        views.append(IpView(ip.address, ip.hostname, ip.enabled, state.schedule, state.day, state.held, cap,
                            int(sent.get(ip.id, 0)), tuple(listed.get(ip.id, ()))))
    return AccountPool(pool, row.assigned_at, row.reason, tuple(views), int(others))


def account_events(conn: Connection, account_id: int, *, limit: int = 200) -> list[AccountEvent]:
    """Trap hits and listings that touched the account (itself or as a neighbour), newest first."""
    slug = conn.execute(select(accounts.c.slug).where(accounts.c.id == account_id)).scalar_one()
    out = []
    for event in reversed(reputation_history(conn, account_id=account_id)):
        caused = event.account == slug
        out.append(AccountEvent(event.id, event.kind, event.ip_address, event.blocklist, event.source,
                                event.occurred_at, event.resolved_at, caused, len(event.neighbours),
                                event.evidence if caused else ""))
        if len(out) >= limit:
            break
    return out


def account_throttle_log(conn: Connection, account_id: int, now: datetime, *, active: bool = False,
                         limit: int = 200) -> list[ThrottleLogEntry]:
    """The automation's actions on the IPs of the account's current pool; reply texts with
    email addresses redacted (on a shared IP they may be a neighbour's recipients)."""
    pool = current_pool(conn, account_id)
    if pool is None:
        return []
    addresses = [ip.address for ip in pool_ips(conn, pool.id)]
    entries = throttle_log(conn, active_at=now if active else None, as_of=now, addresses=addresses,
                           limit=limit)
    return [replace(entry, trigger=redact_addresses(entry.trigger)) for entry in entries]


def report_event(conn: Connection, account_id: int, kind: SignalKind | str, now: datetime, *,
                 ip_address: str | None, blocklist: str = "", evidence: str = "",
                 occurred_at: datetime | None = None) -> AccountEvent:
    """An account reports a trap hit of its mail, or a listing of one of its pool's IPs (the API).

    A trap hit is recorded against the account (it counts for trusted eligibility); a
    listing against the IP, with the accounts on it then as its neighbours. The IP must
    belong to the account's current pool and the moment lie between its assignment and
    now: NotFoundError / ValueError otherwise, saying which.
    """
    event_kind = SignalKind(kind)
    when = occurred_at or now
    if when > now:
        raise InvalidInputError("occurred_at is in the future")
    pool = conn.execute(select(pool_assignments.c.pool_id, pool_assignments.c.assigned_at).where(
        pool_assignments.c.account_id == account_id, pool_assignments.c.ended_at.is_(None))).one_or_none()
    address = None
    if ip_address is not None:
        try:
            address = str(ipaddress.ip_address(ip_address.strip()))
        except ValueError:
            raise InvalidInputError(f"{ip_address!r} is not an IP address") from None
        ip = conn.execute(select(sending_ips.c.pool_id).where(sending_ips.c.address == address)).one_or_none()
        if pool is None or ip is None or ip.pool_id != pool.pool_id:
            raise NotFoundError(f"no sending IP {address} in this account's pool")
        if when < pool.assigned_at:
            raise InvalidInputError(f"occurred_at is before this account joined its pool "
                             f"({pool.assigned_at.isoformat(timespec='seconds')})")
    if event_kind is SignalKind.LISTING and address is None:
        raise InvalidInputError("a listing names the listed IP (ip_address)")
    if event_kind is SignalKind.LISTING and not blocklist.strip():
        raise InvalidInputError("a listing names the blocklist")
    event_id = record_reputation_event(
        conn, event_kind, now, source="api", ip_address=address,
        account_id=account_id if event_kind is SignalKind.TRAP else None,
        blocklist=blocklist.strip(), evidence=evidence, occurred_at=when)
    return next(e for e in account_events(conn, account_id, limit=1_000_000) if e.id == event_id)
