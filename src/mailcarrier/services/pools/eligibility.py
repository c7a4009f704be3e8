"""Pool eligibility: an account's record gathered from the store and judged by
``domain.pools``; an account no longer eligible goes back to shared; applications for a
trusted or dedicated pool, decided by an operator.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from mailcarrier.domain.consent import ConsentTable, unconsented
from mailcarrier.domain.errors import ConflictError, InvalidInputError, NotFoundError
from mailcarrier.domain.pools import AccountRecord, Eligibility, PoolKind, PoolPolicy, evaluate
from mailcarrier.services.policies import account_pool_policy
from mailcarrier.services.pools.membership import assign_account, current_pool, pool_by_name
from mailcarrier.services.pools.values import Application
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.pool_tables import (
    ip_pools,
    pool_applications,
    reputation_events,
    sending_ips,
)
from mailcarrier.storage.tables import accounts, activities, contacts, deliveries

__all__ = [
    "account_record",
    "apply_for_pool",
    "decide_application",
    "enforce_eligibility",
    "evaluate_account",
    "list_applications",
]

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
        raise InvalidInputError("every account may use a shared pool: no application needed")
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
