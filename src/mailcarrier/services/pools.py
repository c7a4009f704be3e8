"""Sending-IP pools as use-cases: the store behind eligibility, warm-up and throttling.

The decisions are the domain's (``domain.pools``, ``domain.warmup``,
``domain.throttle_rules``, ``domain.source_ip``); this module gathers their inputs from
the database, persists their results and keeps the evidence: who was on an IP when it
was listed, why an account went back to shared, which automation action slowed a
provider down and when it ended. Every function takes an open connection; the caller
owns the transaction. Time is always passed in.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from mailcarrier.config import Settings
from mailcarrier.domain.consent import ConsentTable, unconsented
from mailcarrier.domain.dns_checks import Check, CheckStatus
from mailcarrier.domain.errors import ConflictError, NotFoundError
from mailcarrier.domain.pools import AccountRecord, Eligibility, PoolKind, PoolPolicy, evaluate
from mailcarrier.domain.reputation_signals import SignalKind, find_signal
from mailcarrier.domain.source_ip import IpStatus
from mailcarrier.domain.source_ip import choose_source_ip as choose_from_statuses
from mailcarrier.domain.throttle_rules import (
    ActionKind,
    ActiveAction,
    ProviderLimits,
    ReplyEvent,
    ThrottleDecision,
    ThrottleRules,
    ThrottleState,
    effective_limits,
    load_throttle_rules,
    on_reply,
)
from mailcarrier.domain.warmup import (
    DayStats,
    WarmupLimits,
    WarmupSchedule,
    WarmupState,
    advance,
    daily_cap,
    hourly_allowance,
    load_schedules,
)
from mailcarrier.services.hygiene import (
    DnsHygiene,
    DnsQueryError,
    DomainCheckRequest,
    assert_sendable,
    resolver_for,
)
from mailcarrier.services.policies import account_pool_policy
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.engine import run_write
from mailcarrier.storage.pool_tables import (
    dnsbl_lookups,
    ip_daily_volume,
    ip_hourly_volume,
    ip_pools,
    pool_applications,
    pool_assignments,
    reputation_event_accounts,
    reputation_events,
    sending_ips,
    throttle_actions,
    throttle_states,
)
from mailcarrier.storage.tables import accounts, activities, attempts, contacts, deliveries

__all__ = [
    "AccountEvent",
    "AccountPool",
    "Application",
    "DnsblResult",
    "IpView",
    "Pool",
    "PoolView",
    "ReputationEvent",
    "SenderCheck",
    "SendingIp",
    "SourcePick",
    "ThrottleLogEntry",
    "account_events",
    "account_pool",
    "account_record",
    "account_throttle_log",
    "accounts_on_ip",
    "add_ip",
    "apply_for_pool",
    "assert_domain_sendable",
    "assign_account",
    "choose_source_ip",
    "create_pool",
    "current_pool",
    "decide_application",
    "dnsbl_check",
    "domain_check_request",
    "enforce_eligibility",
    "evaluate_account",
    "ip_by_address",
    "list_applications",
    "list_pools",
    "open_dnsbl_listings",
    "pool_by_name",
    "pool_ips",
    "record_bounce_signals",
    "record_bounce_signals_in",
    "record_dnsbl_results",
    "record_ip_outcome",
    "record_reply_for_throttling",
    "record_reputation_event",
    "record_reputation_signal",
    "record_send",
    "redact_addresses",
    "release_reserved",
    "report_event",
    "reputation_history",
    "sender_hygiene_gate",
    "throttle_log",
]

_REPUTATION_SOURCES = ("manual", "api", "bounce", "dnsbl")


# ---------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Pool:
    id: int
    name: str
    kind: PoolKind
    description: str


@dataclass(frozen=True, slots=True)
class SendingIp:
    id: int
    address: str
    pool_id: int
    hostname: str
    enabled: bool
    warmup: WarmupState


@dataclass(frozen=True, slots=True)
class SourcePick:
    """Where the next message to ``provider`` may leave from.

    ``address`` is None when no IP of the account's pool (nor the overflow pool) may send
    now; ``reasons`` then say why per IP, so the message waits with an explanation.
    ``overflow`` is true when the address belongs to the warm overflow pool.
    """

    address: str | None
    provider: str
    connections: int
    messages_per_connection: int
    pool: str | None
    overflow: bool
    reasons: tuple[str, ...]
    reserved: int = 0  #: messages counted against ``address`` by this call (see ``batch``)
    #: pool addresses with deferral-automation state for the provider (counted replies or an action)
    throttled: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReputationEvent:
    id: int
    kind: SignalKind
    ip_address: str | None
    account: str | None
    blocklist: str
    source: str
    evidence: str
    occurred_at: datetime
    resolved_at: datetime | None
    neighbours: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Application:
    id: int
    account_id: int
    kind: PoolKind
    state: str
    eligible: bool
    reasons: tuple[str, ...]
    requested_at: datetime
    decided_at: datetime | None
    decided_by: str | None


@dataclass(frozen=True, slots=True)
class ThrottleLogEntry:
    ip_address: str
    provider: str
    rule: str
    kind: ActionKind
    started_at: datetime
    until: datetime
    ended_at: datetime | None
    end_reason: str | None
    trigger: str


@dataclass(frozen=True, slots=True)
class DnsblResult:
    ip_address: str
    check: Check
    new_listing: bool


# ---------------------------------------------------------------- pools and IPs


def _pool(row: Any) -> Pool:
    return Pool(row.id, row.name, PoolKind(row.kind), row.description)


def create_pool(conn: Connection, name: str, kind: PoolKind | str, now: datetime,
                description: str = "") -> Pool:
    """A new pool; ConflictError if the name is taken, ValueError for an unknown kind."""
    name = name.strip()
    if not name or len(name) > 64:
        raise ValueError("a pool needs a name of 1-64 characters")
    try:
        pool_kind = PoolKind(kind)
    except ValueError:
        raise ValueError(f"unknown pool kind {kind!r}: use shared, trusted or dedicated") from None
    try:
        with conn.begin_nested():
            key = conn.execute(ip_pools.insert().values(
                name=name, kind=pool_kind.value, description=description, created_at=now,
            )).inserted_primary_key
    except IntegrityError as exc:
        raise ConflictError(f"pool {name!r} already exists") from exc
    assert key is not None
    return Pool(int(key[0]), name, pool_kind, description)


def pool_by_name(conn: Connection, name: str) -> Pool:
    row = conn.execute(select(ip_pools).where(ip_pools.c.name == name)).one_or_none()
    if row is None:
        raise NotFoundError(f"no pool {name!r}; create it with `mailcarrier pools create`")
    return _pool(row)


def _ip(row: Any) -> SendingIp:
    state = WarmupState(schedule=row.warmup_schedule, day=row.warmup_day, as_of=row.warmup_as_of,
                        last_sent_on=row.last_sent_on, held=bool(row.warmup_held))
    return SendingIp(row.id, row.address, row.pool_id, row.hostname, bool(row.enabled), state)


def add_ip(conn: Connection, pool_name: str, address: str, now: datetime, *,
           schedule: WarmupSchedule, hostname: str = "", warm: bool = False) -> SendingIp:
    """Add a source address to a pool; it starts its warm-up today unless ``warm``.

    ``warm`` is for an IP that already carries its full volume elsewhere (moved, not
    new): the ramp is marked complete, and idleness still restarts it later.
    """
    try:
        normalised = str(ipaddress.ip_address(address.strip()))
    except ValueError:
        raise ValueError(f"{address!r} is not an IP address") from None
    pool = pool_by_name(conn, pool_name)
    day = len(schedule.daily) + 1 if warm else 1
    values = {"address": normalised, "pool_id": pool.id, "hostname": hostname.strip().rstrip("."),
              "enabled": True, "warmup_schedule": schedule.name, "warmup_day": day,
              "warmup_as_of": now.date(), "warmup_held": False,
              "last_sent_on": now.date() if warm else None, "created_at": now}
    try:
        with conn.begin_nested():
            conn.execute(sending_ips.insert().values(**values))
    except IntegrityError as exc:
        raise ConflictError(f"IP {normalised} is already in a pool") from exc
    return ip_by_address(conn, normalised)


def ip_by_address(conn: Connection, address: str) -> SendingIp:
    row = conn.execute(select(sending_ips).where(sending_ips.c.address == address)).one_or_none()
    if row is None:
        raise NotFoundError(f"no sending IP {address}; add it with `mailcarrier pools add-ip`")
    return _ip(row)


def pool_ips(conn: Connection, pool_id: int) -> list[SendingIp]:
    rows = conn.execute(select(sending_ips).where(sending_ips.c.pool_id == pool_id)
                        .order_by(sending_ips.c.address))
    return [_ip(r) for r in rows]


def assign_account(conn: Connection, account_id: int, pool_name: str, now: datetime,
                   reason: str = "assigned by operator") -> Pool:
    """Put the account on a pool, closing its previous assignment (kept as history)."""
    pool = pool_by_name(conn, pool_name)
    current = conn.execute(select(pool_assignments.c.pool_id).where(
        pool_assignments.c.account_id == account_id, pool_assignments.c.ended_at.is_(None),
    )).scalar_one_or_none()
    if current == pool.id:
        return pool
    conn.execute(update(pool_assignments).where(
        pool_assignments.c.account_id == account_id, pool_assignments.c.ended_at.is_(None),
    ).values(ended_at=now))
    conn.execute(pool_assignments.insert().values(account_id=account_id, pool_id=pool.id,
                                                  assigned_at=now, reason=reason))
    return pool


def current_pool(conn: Connection, account_id: int) -> Pool | None:
    row = conn.execute(select(ip_pools).join(pool_assignments, pool_assignments.c.pool_id == ip_pools.c.id)
                       .where(pool_assignments.c.account_id == account_id,
                              pool_assignments.c.ended_at.is_(None))).one_or_none()
    return None if row is None else _pool(row)


@dataclass(frozen=True, slots=True)
class PoolView:
    pool: Pool
    ips: tuple[SendingIp, ...]
    accounts: tuple[str, ...]


def list_pools(conn: Connection) -> list[PoolView]:
    """Every pool with its IPs and the accounts currently on it."""
    views = []
    for row in conn.execute(select(ip_pools).order_by(ip_pools.c.name)).all():
        slugs = conn.execute(select(accounts.c.slug).join(
            pool_assignments, pool_assignments.c.account_id == accounts.c.id,
        ).where(pool_assignments.c.pool_id == row.id, pool_assignments.c.ended_at.is_(None))
            .order_by(accounts.c.slug)).scalars().all()
        views.append(PoolView(_pool(row), tuple(pool_ips(conn, row.id)), tuple(slugs)))
    return views


def accounts_on_ip(conn: Connection, ip_id: int, at: datetime) -> list[int]:
    """Accounts whose pool contained the IP at ``at`` (the IP's current pool)."""
    pool_id = conn.execute(select(sending_ips.c.pool_id).where(sending_ips.c.id == ip_id)).scalar_one()
    rows = conn.execute(select(pool_assignments.c.account_id).where(
        pool_assignments.c.pool_id == pool_id,
        pool_assignments.c.assigned_at <= at,
        or_(pool_assignments.c.ended_at.is_(None), pool_assignments.c.ended_at > at),
    ).distinct().order_by(pool_assignments.c.account_id))
    return [int(r) for r in rows.scalars()]


# ---------------------------------------------------------------- eligibility


def account_record(conn: Connection, account_id: int, now: datetime,
                   consent: ConsentTable | None = None) -> AccountRecord:
    """The account's last 30 days, trap hits and audience sources, from the store."""
    slug = conn.execute(select(accounts.c.slug).where(accounts.c.id == account_id)).scalar_one_or_none()
    if slug is None:
        raise NotFoundError(f"no account with id {account_id}")
    since = now - timedelta(days=30)
    d = deliveries.c
    bounced = d.state.in_(("bounced_hard", "bounced_soft"))
    counted = or_(d.delivered_at >= since, and_(bounced, d.final_at >= since))
    messages = conn.execute(select(func.count()).where(d.account_id == account_id, counted)).scalar_one()
    bounces = conn.execute(select(func.count()).where(
        d.account_id == account_id, d.state == "bounced_hard", d.final_at >= since)).scalar_one()
    complaints = conn.execute(select(func.count()).select_from(activities).where(
        activities.c.account_id == account_id, activities.c.type == "complaint",
        activities.c.occurred_at >= since)).scalar_one()
    traps = conn.execute(select(reputation_events.c.occurred_at).where(
        reputation_events.c.account_id == account_id, reputation_events.c.kind == "trap",
    )).scalars().all()
    sources = conn.execute(select(contacts.c.consent_source).where(
        contacts.c.account_id == account_id, contacts.c.status == "active").distinct()).scalars().all()
    pool = current_pool(conn, account_id)
    return AccountRecord(
        account=slug,
        current_pool=pool.kind if pool else PoolKind.SHARED,
        messages_30d=int(messages),
        bounces_30d=int(bounces),
        complaints_30d=int(complaints),
        trap_hits=tuple(traps),
        unconsented_sources=unconsented(sources, consent),
    )


def evaluate_account(conn: Connection, account_id: int, policy: PoolPolicy, now: datetime) -> Eligibility:
    """The account's verdict under ``policy`` with the account's own thresholds on top."""
    own = account_repo.account_policies(conn, [account_id]).get(account_id)
    if own is not None:
        policy = account_pool_policy(policy, own.thresholds)
    return evaluate(account_record(conn, account_id, now), policy, now)


def enforce_eligibility(conn: Connection, account_id: int, policy: PoolPolicy, now: datetime,
                        shared_pool: str | None = None) -> Eligibility:
    """Evaluate and, when the account must leave trusted, move it to shared; a dedicated
    sender with faults stays on its own pool, throttled: its IPs' warm-up ramp restarts.

    The reasons become the assignment's recorded reason. ``shared_pool`` names the pool
    to move to; by default the first shared pool by name. ConflictError when there is
    no shared pool to move to.
    """
    verdict = evaluate_account(conn, account_id, policy, now)
    if verdict.quarantined:
        # A dedicated sender stays on its own IPs, throttled: their warm-up ramp restarts at
        # day 1 (each IP's daily cap drops to the first day's volume and climbs again only
        # while its daily rates stay within limits). Applied again by every enforcement while
        # the faults last.
        pool = current_pool(conn, account_id)
        if pool is not None:
            conn.execute(update(sending_ips).where(sending_ips.c.pool_id == pool.id).values(
                warmup_day=1, warmup_as_of=now.date(), warmup_held=True))
        return verdict
    if not verdict.demoted:
        return verdict
    if shared_pool is None:
        shared_pool = conn.execute(select(ip_pools.c.name).where(ip_pools.c.kind == PoolKind.SHARED.value)
                                   .order_by(ip_pools.c.name).limit(1)).scalar_one_or_none()
        if shared_pool is None:
            raise ConflictError("the account must go back to a shared pool, but none exists")
    elif pool_by_name(conn, shared_pool).kind is not PoolKind.SHARED:
        raise ConflictError(f"pool {shared_pool!r} is not a shared pool")
    reason = "moved to shared: " + "; ".join(verdict.reasons)
    assign_account(conn, account_id, shared_pool, now, reason=reason)
    return verdict


def _application(row: Any) -> Application:
    return Application(row.id, row.account_id, PoolKind(row.kind), row.state, bool(row.eligible),
                       tuple(row.reasons), row.requested_at, row.decided_at, row.decided_by)


def apply_for_pool(conn: Connection, account_id: int, kind: PoolKind | str, policy: PoolPolicy,
                   now: datetime) -> Application:
    """Record an application; the eligibility result is stored, approval waits for an operator.

    An ineligible application is recorded as refused straight away, with the reasons;
    a second pending application for the same kind is a ConflictError.
    """
    pool_kind = PoolKind(kind)
    if pool_kind is PoolKind.SHARED:
        raise ValueError("every account may use a shared pool: no application needed")
    pending = conn.execute(select(pool_applications.c.id).where(
        pool_applications.c.account_id == account_id, pool_applications.c.kind == pool_kind.value,
        pool_applications.c.state == "pending")).first()
    if pending is not None:
        raise ConflictError(f"application #{pending.id} for {pool_kind.value} is already pending")
    verdict = evaluate_account(conn, account_id, policy, now)
    if pool_kind is PoolKind.TRUSTED:
        eligible = verdict.trusted_eligible
    else:  # dedicated needs a clean record (no faults); volume is only a recommendation
        eligible = _fault_free(conn, account_id, policy, now)
    state = "pending" if eligible else "refused"
    try:
        with conn.begin_nested():
            key = conn.execute(pool_applications.insert().values(
                account_id=account_id, kind=pool_kind.value, state=state, eligible=eligible,
                reasons=list(verdict.reasons), requested_at=now,
                decided_at=None if eligible else now, decided_by=None if eligible else "eligibility engine",
            )).inserted_primary_key
    except IntegrityError as exc:  # one application per account, kind and moment
        raise ConflictError(f"an application for {pool_kind.value} was already recorded at "
                            f"{now.isoformat(timespec='seconds')}; look at it before applying again") from exc
    assert key is not None
    return _application(conn.execute(select(pool_applications).where(
        pool_applications.c.id == key[0])).one())


def _fault_free(conn: Connection, account_id: int, policy: PoolPolicy, now: datetime) -> bool:
    """No trap hit and rates within limits: the engine keeps a dedicated sender where it is."""
    record = replace(account_record(conn, account_id, now), current_pool=PoolKind.DEDICATED)
    return evaluate(record, policy, now).pool is PoolKind.DEDICATED


def list_applications(conn: Connection, state: str | None = None,
                      account_id: int | None = None) -> list[Application]:
    """Applications, oldest first; only one state's, or only one account's, when given."""
    query = select(pool_applications).order_by(pool_applications.c.requested_at, pool_applications.c.id)
    if state is not None:
        query = query.where(pool_applications.c.state == state)
    if account_id is not None:
        query = query.where(pool_applications.c.account_id == account_id)
    return [_application(r) for r in conn.execute(query)]


def decide_application(conn: Connection, application_id: int, *, approve: bool, who: str,
                       now: datetime, policy: PoolPolicy, pool_name: str | None = None,
                       note: str = "") -> Application:
    """Approve (assign the account to a pool of the kind) or refuse a pending application.

    Approval re-runs the engine: an account that stopped being eligible since it applied
    is not moved, and ConflictError says why.
    """
    row = conn.execute(select(pool_applications).where(pool_applications.c.id == application_id)
                       ).one_or_none()
    if row is None:
        raise NotFoundError(f"no pool application #{application_id}")
    if row.state != "pending":
        raise ConflictError(f"application #{application_id} was already {row.state}")
    kind = PoolKind(row.kind)
    if approve:
        verdict = evaluate_account(conn, row.account_id, policy, now)
        if (kind is PoolKind.TRUSTED and not verdict.trusted_eligible) or (
                kind is PoolKind.DEDICATED and not _fault_free(conn, row.account_id, policy, now)):
            raise ConflictError("no longer eligible: " + "; ".join(verdict.reasons))
        if pool_name is None:
            pool_name = conn.execute(select(ip_pools.c.name).where(ip_pools.c.kind == kind.value)
                                     .order_by(ip_pools.c.name).limit(1)).scalar_one_or_none()
            if pool_name is None:
                raise ConflictError(f"no {kind.value} pool exists; create one first")
        target = pool_by_name(conn, pool_name)
        if target.kind is not kind:
            raise ConflictError(f"pool {pool_name!r} is {target.kind.value}, not {kind.value}")
        assign_account(conn, row.account_id, pool_name, now,
                       reason=f"application #{application_id} approved by {who}")
    conn.execute(update(pool_applications).where(pool_applications.c.id == application_id).values(
        state="approved" if approve else "refused", decided_at=now, decided_by=who, note=note))
    return _application(conn.execute(select(pool_applications).where(
        pool_applications.c.id == application_id)).one())


# ---------------------------------------------------------------- reputation events


def record_reputation_event(conn: Connection, kind: SignalKind | str, now: datetime, *,
                            source: str, ip_address: str | None = None, account_id: int | None = None,
                            blocklist: str = "", evidence: str = "",
                            occurred_at: datetime | None = None) -> int:
    """Record a trap hit or listing; the accounts on the IP at that moment become its neighbours."""
    event_kind = SignalKind(kind)
    if source not in _REPUTATION_SOURCES:
        raise ValueError(f"unknown source {source!r}: use one of {', '.join(_REPUTATION_SOURCES)}")
    if ip_address is None and account_id is None:
        raise ValueError("a trap hit or listing needs an IP, an account or both")
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


# ---------------------------------------------------------------- counters and warm-up


def _lock_pools(conn: Connection, pool_ids: Sequence[int]) -> None:
    """Serialise choosers and reply recorders of the same pools (row locks on PostgreSQL, in id order).

    Without it two workers could both see room under a warm-up cap and overshoot it, or
    deadlock creating the same counter rows. SQLite writers are serialised already
    (``BEGIN IMMEDIATE``), so there is nothing to lock there.
    """
    if conn.dialect.name == "sqlite":
        return
    conn.execute(select(ip_pools.c.id).where(ip_pools.c.id.in_(sorted(pool_ids)))
                 .order_by(ip_pools.c.id).with_for_update()).all()


def _hour(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0)


def _bump(conn: Connection, table: Any, keys: dict[str, Any], **increments: int) -> None:
    """Add to counters, inserting the row on first use; portable across SQLite and PostgreSQL."""
    where = [table.c[k] == v for k, v in keys.items()]
    values = {name: table.c[name] + amount for name, amount in increments.items()}
    if conn.execute(update(table).where(*where).values(**values)).rowcount:
        return
    try:
        with conn.begin_nested():
            conn.execute(table.insert().values(**keys, **increments))
    except IntegrityError:  # a concurrent writer inserted it first
        conn.execute(update(table).where(*where).values(**values))


def record_send(conn: Connection, address: str, provider: str, now: datetime) -> None:
    """Count one message carried by the IP (daily total, hourly per provider, last day used)."""
    _count_send(conn, ip_by_address(conn, address), provider, now)


def _count_send(conn: Connection, ip: SendingIp, provider: str, now: datetime, count: int = 1) -> None:
    _bump(conn, ip_daily_volume, {"ip_id": ip.id, "day": now.date()}, sent=count)
    _bump(conn, ip_hourly_volume, {"ip_id": ip.id, "provider": provider, "hour": _hour(now)}, sent=count)
    if ip.warmup.last_sent_on != now.date():
        conn.execute(update(sending_ips).where(sending_ips.c.id == ip.id).values(last_sent_on=now.date()))


def release_reserved(conn: Connection, address: str, provider: str, reserved_at: datetime,
                     count: int) -> None:
    """Give back ``count`` messages reserved at ``reserved_at`` but never sent (uncount them)."""
    if count < 0:
        raise ValueError("count cannot be negative")
    if count == 0:
        return
    ip = ip_by_address(conn, address)
    _lock_pools(conn, [ip.pool_id])
    d, h = ip_daily_volume.c, ip_hourly_volume.c
    conn.execute(update(ip_daily_volume).where(d.ip_id == ip.id, d.day == reserved_at.date())
                 .values(sent=case((d.sent > count, d.sent - count), else_=0)))
    conn.execute(update(ip_hourly_volume).where(h.ip_id == ip.id, h.provider == provider,
                                                h.hour == _hour(reserved_at))
                 .values(sent=case((h.sent > count, h.sent - count), else_=0)))


def record_ip_outcome(conn: Connection, address: str, day: date, *, bounced: int = 0,
                      complained: int = 0) -> None:
    """Count bounces and complaints against the day the IP sent them (they hold the ramp)."""
    if bounced < 0 or complained < 0:
        raise ValueError("counts cannot be negative")
    ip = ip_by_address(conn, address)
    _lock_pools(conn, [ip.pool_id])
    _bump(conn, ip_daily_volume, {"ip_id": ip.id, "day": day}, bounced=bounced, complained=complained)


def _day_stats(conn: Connection, ip_id: int, day: date) -> DayStats | None:
    row = conn.execute(select(ip_daily_volume).where(ip_daily_volume.c.ip_id == ip_id,
                                                     ip_daily_volume.c.day == day)).one_or_none()
    return None if row is None else DayStats(row.sent, row.bounced, row.complained)


def _advanced(conn: Connection, ip: SendingIp, today: date, limits: WarmupLimits) -> WarmupState:
    """Bring the IP's ramp to today and persist it (idempotent within a day)."""
    state = ip.warmup
    if today <= state.as_of:
        return state
    new = advance(state, today, _day_stats(conn, ip.id, today - timedelta(days=1)), limits)
    conn.execute(update(sending_ips).where(sending_ips.c.id == ip.id).values(
        warmup_day=new.day, warmup_as_of=new.as_of, warmup_held=new.held, last_sent_on=new.last_sent_on))
    return new


# ---------------------------------------------------------------- throttling


def _throttle_state(conn: Connection, ip: SendingIp, provider: str, now: datetime) -> ThrottleState:
    """The stored automation state; an action whose time is up is closed in the log here."""
    row = conn.execute(select(throttle_states).where(throttle_states.c.ip_id == ip.id,
                                                     throttle_states.c.provider == provider)).one_or_none()
    if row is None:
        return ThrottleState(ip=ip.address, provider=provider)
    matches = tuple((str(name), datetime.fromisoformat(at)) for name, at in row.matches)
    action = None
    if row.action_id is not None:
        a = conn.execute(select(throttle_actions).where(throttle_actions.c.id == row.action_id)).one()
        if a.ended_at is None and a.until <= now:
            conn.execute(update(throttle_actions).where(throttle_actions.c.id == a.id).values(
                ended_at=a.until, end_reason="expired"))
            conn.execute(update(throttle_states).where(throttle_states.c.ip_id == ip.id,
                                                       throttle_states.c.provider == provider)
                         .values(action_id=None, matches=[]))
            return ThrottleState(ip=ip.address, provider=provider)
        if a.ended_at is None:
            action = ActiveAction(a.rule, ActionKind(a.kind), a.started_at, a.until, a.connections,
                                  a.rate_factor)
    return ThrottleState(ip=ip.address, provider=provider, matches=matches, action=action)


def _save_throttle(conn: Connection, ip: SendingIp, decision: ThrottleDecision, at: datetime,
                   trigger: str) -> None:
    state = decision.state
    current = conn.execute(select(throttle_states.c.action_id).where(
        throttle_states.c.ip_id == ip.id, throttle_states.c.provider == state.provider)).first()
    action_id = current.action_id if current is not None else None
    open_action = throttle_actions.c.ended_at.is_(None)
    if decision.ended is not None and action_id is not None:
        until = _until(conn, action_id)
        conn.execute(update(throttle_actions).where(throttle_actions.c.id == action_id, open_action).values(
            ended_at=min(at, until) if decision.ended == "expired" else at, end_reason=decision.ended))
    if decision.started is not None:
        if action_id is not None:  # a stronger action replaces the one in force
            conn.execute(update(throttle_actions).where(throttle_actions.c.id == action_id, open_action)
                         .values(ended_at=at, end_reason="superseded"))
        started = decision.started
        key = conn.execute(throttle_actions.insert().values(
            ip_id=ip.id, provider=state.provider, rule=started.rule, kind=started.kind.value,
            started_at=started.started, until=started.until, connections=started.connections,
            rate_factor=started.rate_factor, trigger=trigger[:2000])).inserted_primary_key
        assert key is not None
        action_id = int(key[0])
    if state.action is None:
        action_id = None
    matches = [[name, when.isoformat()] for name, when in state.matches]
    values = {"matches": matches, "action_id": action_id}
    if current is None:
        conn.execute(throttle_states.insert().values(ip_id=ip.id, provider=state.provider, **values))
    else:
        conn.execute(update(throttle_states).where(throttle_states.c.ip_id == ip.id,
                                                   throttle_states.c.provider == state.provider
                                                   ).values(**values))


def _until(conn: Connection, action_id: int) -> datetime:
    until: datetime = conn.execute(select(throttle_actions.c.until).where(
        throttle_actions.c.id == action_id)).scalar_one()
    return until


def record_reply_for_throttling(conn: Connection, address: str, destination: str, now: datetime, *,
                                delivered: bool, text: str = "",
                                rules: ThrottleRules | None = None) -> ThrottleDecision:
    """Feed one outcome towards a provider (recipient domain or MX host) into the automation.

    A clean delivery ends a slow-down; a temporary failure matching a rule is counted
    and may start a suspension or slow-down. Starts and ends are logged in
    ``throttle_actions``.
    """
    rules = rules or load_throttle_rules()
    provider = rules.provider_for(destination).provider
    ip = ip_by_address(conn, address)
    if delivered and conn.execute(select(throttle_states.c.ip_id).where(
            throttle_states.c.ip_id == ip.id, throttle_states.c.provider == provider)).first() is None:
        return ThrottleDecision(ThrottleState(ip=ip.address, provider=provider))  # nothing to relax
    _lock_pools(conn, [ip.pool_id])
    state = _throttle_state(conn, ip, provider, now)
    decision = on_reply(state, ReplyEvent(at=now, delivered=delivered, text=text), rules)
    if decision.started is not None or decision.ended is not None or decision.state != state:
        _save_throttle(conn, ip, decision, now, text)  # most clean deliveries change nothing
    return decision


def throttle_log(conn: Connection, *, active_at: datetime | None = None,
                 as_of: datetime | None = None, addresses: Sequence[str] | None = None,
                 limit: int | None = None) -> list[ThrottleLogEntry]:
    """Every automation action (newest first), or only those in force at ``active_at``.

    An action whose time ran out is closed in the store the next time its (IP, provider)
    pair is used; with ``as_of`` such an action is already shown as expired at its end.
    ``addresses`` keeps the actions of those IPs only (an account's view of its pool).
    """
    t = throttle_actions.c
    query = select(throttle_actions, sending_ips.c.address).join(sending_ips, sending_ips.c.id == t.ip_id)
    if addresses is not None:
        query = query.where(sending_ips.c.address.in_(list(addresses)))
    if limit is not None:
        query = query.limit(limit)
    if active_at is not None:
        query = query.where(t.ended_at.is_(None), t.until > active_at, t.started_at <= active_at)
    rows = conn.execute(query.order_by(t.started_at.desc(), t.id.desc())).all()
    entries = []
    for r in rows:
        ended_at, end_reason = r.ended_at, r.end_reason
        if ended_at is None and as_of is not None and r.until <= as_of:
            ended_at, end_reason = r.until, "expired"
        entries.append(ThrottleLogEntry(r.address, r.provider, r.rule, ActionKind(r.kind), r.started_at,
                                        r.until, ended_at, end_reason, r.trigger))
    return entries


# ---------------------------------------------------------------- choosing the source IP


def _statuses(conn: Connection, ips: Sequence[SendingIp], provider: str, now: datetime,
              limits: WarmupLimits) -> tuple[list[IpStatus], dict[str, SendingIp], tuple[str, ...]]:
    """Each enabled IP's cap, counters and throttle state (one query per kind, not per IP)."""
    schedules = load_schedules()
    enabled = [ip for ip in ips if ip.enabled]
    ids = [ip.id for ip in enabled]
    sent_today = dict(conn.execute(select(ip_daily_volume.c.ip_id, ip_daily_volume.c.sent).where(
        ip_daily_volume.c.ip_id.in_(ids), ip_daily_volume.c.day == now.date())).all())
    sent_hour = dict(conn.execute(select(ip_hourly_volume.c.ip_id, ip_hourly_volume.c.sent).where(
        ip_hourly_volume.c.ip_id.in_(ids), ip_hourly_volume.c.provider == provider,
        ip_hourly_volume.c.hour == _hour(now))).all())
    throttled = set(conn.execute(select(throttle_states.c.ip_id).where(
        throttle_states.c.ip_id.in_(ids), throttle_states.c.provider == provider)).scalars())
    statuses, by_address = [], {}
    for ip in enabled:
        state = _advanced(conn, ip, now.date(), limits)
        schedule = schedules.get(state.schedule)
        cap = daily_cap(schedule, state) if schedule is not None else None
        throttle = _throttle_state(conn, ip, provider, now) if ip.id in throttled else None
        statuses.append(IpStatus(ip=ip.address, daily_cap=cap, sent_today=int(sent_today.get(ip.id, 0)),
                                 sent_this_hour=int(sent_hour.get(ip.id, 0)), throttle=throttle))
        by_address[ip.address] = replace(ip, warmup=state)
    return statuses, by_address, tuple(ip.address for ip in enabled if ip.id in throttled)


def _room(status: IpStatus, limits: ProviderLimits, now: datetime) -> int:
    """How many more messages the IP may carry to the provider this hour (at least 1 once chosen)."""
    in_force = limits if status.throttle is None else effective_limits(status.throttle, limits, now)
    if in_force is None:
        return 1
    room = in_force.messages_per_hour - status.sent_this_hour
    allowance = hourly_allowance(status.daily_cap, status.sent_today, now)
    return max(1, min(room, allowance) if allowance is not None else room)


def choose_source_ip(conn: Connection, account_id: int, destination: str, now: datetime, *,
                     warmup_limits: WarmupLimits | None = None, rules: ThrottleRules | None = None,
                     overflow_pool: str | None = None, reserve: bool = True, batch: int = 1) -> SourcePick:
    """The source IP for the next message of the account to ``destination`` (domain or MX host).

    Looks at the account's pool; when no IP there may send (warm-up caps, hourly limits,
    suspensions) and ``overflow_pool`` names a warm pool, tries that one. With
    ``reserve`` the message is counted against the chosen IP at once, so concurrent
    callers cannot overshoot a warm-up cap; ``batch`` > 1 reserves up to that many messages
    on the chosen IP at once (never more than its room this hour), for a caller that hands
    them out itself and gives back what it did not use (:func:`release_reserved`).
    ``address`` None means wait; ``reasons`` say why.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    rules = rules or load_throttle_rules()
    limits = rules.provider_for(destination)
    warmup_limits = warmup_limits or WarmupLimits()
    pool = current_pool(conn, account_id)
    if pool is None:
        return SourcePick(None, limits.provider, 0, 0, None, False,
                          ("the account is not assigned to a pool (`mailcarrier pools assign`)",))
    candidates: list[tuple[Pool, bool]] = [(pool, False)]
    if overflow_pool and overflow_pool != pool.name:
        candidates.append((pool_by_name(conn, overflow_pool), True))
    _lock_pools(conn, [p.id for p, _ in candidates])
    reasons: list[str] = []
    for candidate, overflow in candidates:
        statuses, by_address, throttled = _statuses(conn, pool_ips(conn, candidate.id), limits.provider,
                                                    now, warmup_limits)
        choice = choose_from_statuses(statuses, limits, now)
        reasons += [f"pool {candidate.name}: {r}" for r in choice.reasons] or (
            [] if choice.ip else [f"pool {candidate.name}: no enabled IPs"])
        if choice.ip is not None:
            count = 0
            if reserve:
                status = next(st for st in statuses if st.ip == choice.ip)
                count = min(batch, _room(status, limits, now))
                _count_send(conn, by_address[choice.ip], limits.provider, now, count)
            return SourcePick(choice.ip, limits.provider, choice.connections, limits.messages_per_connection,
                              candidate.name, overflow, tuple(reasons), count, throttled)
    return SourcePick(None, limits.provider, 0, 0, pool.name, False, tuple(reasons))


# ---------------------------------------------------------------- hygiene inputs


def domain_check_request(conn: Connection, account_id: int, domain: str, *, dkim_selector: str,
                         bounce_domain: str, inbound_host: str,
                         dnsbl_zones: Sequence[str] = ()) -> DomainCheckRequest:
    """The hygiene checks for a sending domain of the account: SPF and rDNS for every IP of its pool."""
    pool = current_pool(conn, account_id)
    addresses = tuple(ip.address for ip in pool_ips(conn, pool.id) if ip.enabled) if pool else ()
    return DomainCheckRequest(domain=domain.strip().rstrip(".").lower(), sending_ips=addresses,
                              dkim_selector=dkim_selector, bounce_domain=bounce_domain,
                              inbound_host=inbound_host, dnsbl_zones=tuple(dnsbl_zones))


def dnsbl_check(engine: Engine, hygiene: DnsHygiene, zones: Sequence[str],
                now: datetime) -> list[DnsblResult]:
    """Look every enabled sending IP up in every zone and record the answers (the scheduled job).

    127.255.255.x answers and DNS failures are stored as query errors, never as listings.
    The look-ups run with no transaction open (a slow resolver must not hold SQLite's write
    lock): the IPs are read first, the answers recorded afterwards in one write unit.
    """
    with engine.connect() as conn:
        addresses = conn.execute(select(sending_ips.c.address).where(sending_ips.c.enabled.is_(True))
                                 .order_by(sending_ips.c.address)).scalars().all()
    results = []
    for address in addresses:
        for zone in zones:
            try:
                check = hygiene.dnsbl(address, zone)
            except DnsQueryError as exc:
                check = Check(f"DNSBL {zone} for {address}", CheckStatus.ERROR, f"DNS query failed: {exc}",
                              "check the resolver and retry")
            results.append((address, zone, check))
    return run_write(engine, lambda conn: record_dnsbl_results(conn, results, now),
                     what="recording DNSBL look-ups")


def assert_domain_sendable(engine: Engine, hygiene: DnsHygiene, account_id: int, domain: str, *,
                           dkim_selector: str, bounce_domain: str, inbound_host: str,
                           dnsbl_zones: Sequence[str] = ()) -> None:
    """Refuse marketing mail from ``domain`` unless every hygiene check passes for the account's IPs.

    Raises :class:`~mailcarrier.services.hygiene.DomainNotSendableError` whose message
    lists each failed check and what to fix. Call it before enqueuing a regular mailing.
    The DNS checks run after the read transaction closed.
    """
    with engine.connect() as conn:
        request = domain_check_request(conn, account_id, domain, dkim_selector=dkim_selector,
                                       bounce_domain=bounce_domain, inbound_host=inbound_host,
                                       dnsbl_zones=dnsbl_zones)
    assert_sendable(request.domain, hygiene.check_domain(request))


def open_dnsbl_listings(conn: Connection, addresses: Sequence[str]) -> list[Check]:
    """Listings the scheduled DNSBL look-ups found on these IPs and have not seen cleared, as failed checks.

    Only look-up results count: they close themselves at the next clean answer. Manual
    and API reports are history for the operator, not a switch that could stay on forever.
    """
    if not addresses:
        return []
    e = reputation_events.c
    rows = conn.execute(select(e.ip_address, e.blocklist, e.occurred_at, e.evidence).where(
        e.kind == SignalKind.LISTING.value, e.source == "dnsbl", e.resolved_at.is_(None),
        e.ip_address.in_(list(addresses))).order_by(e.ip_address, e.blocklist)).all()
    return [Check(f"DNSBL {r.blocklist} for {r.ip_address}", CheckStatus.FAIL,
                  f"listed since {r.occurred_at.isoformat(timespec='minutes')}: {r.evidence}"[:500],
                  f"request delisting from {r.blocklist} (see its lookup page for {r.ip_address}), then run "
                  "`mailcarrier pools dnsbl-check` to record the clean answer") for r in rows]


SenderCheck = Callable[[Engine, int, str], None]


def sender_hygiene_gate(settings: Settings, hygiene: DnsHygiene | None = None) -> SenderCheck | None:
    """The check ``send_mailing`` runs before enqueuing marketing mail, or None when switched off.

    Applies to accounts assigned to a pool (the IPs it checks SPF and FCrDNS for are the
    pool's); an account on no pool sends from the default source, outside pool
    management, and is not gated. DKIM uses the ``dkim_selector`` setting, the bounce
    domain's MX must point at ``hostname``; open DNSBL listings of the pool's IPs block too.
    Raises :class:`~mailcarrier.services.hygiene.DomainNotSendableError` saying what to fix.
    """
    if not settings.enforce_sender_hygiene:
        return None
    checker = hygiene or DnsHygiene(resolver_for(settings.hygiene_nameserver))

    def gate(engine: Engine, account_id: int, domain: str) -> None:
        with engine.connect() as conn:
            if current_pool(conn, account_id) is None:
                return
            request = domain_check_request(conn, account_id, domain, dkim_selector=settings.dkim_selector,
                                           bounce_domain=settings.bounce_domain,
                                           inbound_host=settings.hostname)
            listings = open_dnsbl_listings(conn, request.sending_ips)
        assert_sendable(request.domain, (*checker.check_domain(request), *listings))

    return gate


# ---------------------------------------------------------------- an account's view (API, dashboard)


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
    pool = _pool(conn.execute(select(ip_pools).where(ip_pools.c.id == row.pool_id)).one())
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
            yesterday = _day_stats(conn, ip.id, now.date() - timedelta(days=1))
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
        raise ValueError("occurred_at is in the future")
    pool = conn.execute(select(pool_assignments.c.pool_id, pool_assignments.c.assigned_at).where(
        pool_assignments.c.account_id == account_id, pool_assignments.c.ended_at.is_(None))).one_or_none()
    address = None
    if ip_address is not None:
        try:
            address = str(ipaddress.ip_address(ip_address.strip()))
        except ValueError:
            raise ValueError(f"{ip_address!r} is not an IP address") from None
        ip = conn.execute(select(sending_ips.c.pool_id).where(sending_ips.c.address == address)).one_or_none()
        if pool is None or ip is None or ip.pool_id != pool.pool_id:
            raise NotFoundError(f"no sending IP {address} in this account's pool")
        if when < pool.assigned_at:
            raise ValueError(f"occurred_at is before this account joined its pool "
                             f"({pool.assigned_at.isoformat(timespec='seconds')})")
    if event_kind is SignalKind.LISTING and address is None:
        raise ValueError("a listing names the listed IP (ip_address)")
    if event_kind is SignalKind.LISTING and not blocklist.strip():
        raise ValueError("a listing names the blocklist")
    event_id = record_reputation_event(
        conn, event_kind, now, source="api", ip_address=address,
        account_id=account_id if event_kind is SignalKind.TRAP else None,
        blocklist=blocklist.strip(), evidence=evidence, occurred_at=when)
    return next(e for e in account_events(conn, account_id, limit=1_000_000) if e.id == event_id)


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

