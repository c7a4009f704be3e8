"""The delivery queue: claiming due deliveries with a lease, and recording outcomes in batches.

Claiming
    A worker claims a batch of due deliveries in one transaction: it stamps them with its
    id, a fresh ``claim_token`` (one per batch), ``claimed_at`` and ``lease_until``, and
    keeps the lease alive with :func:`renew_leases` while it works. On PostgreSQL the
    candidate rows are selected ``FOR UPDATE SKIP LOCKED`` so several workers (processes or
    hosts) never claim the same row. SQLite has a single writer: the claim runs in a
    ``BEGIN IMMEDIATE`` transaction, which serialises claimers (``FOR UPDATE`` does not
    exist there and is never relied on).

The in-flight rule (crash safety)
    A claimed delivery *is* in flight: from the claim on, the worker may send it at any
    moment, and its outcome is only known once :func:`record_results` commits. Results are
    recorded in batches (one transaction per batch, never per message), so a worker killed
    between sending and recording leaves claimed rows whose messages may or may not have
    reached the server. When such a lease expires, :func:`recover_expired` records an
    attempt with outcome ``unknown`` (internal code 147, the "no answer after the final
    '.'" case), sets ``resent_after_crash`` and queues the delivery again at once. The
    recipient may therefore receive that message twice; only deliveries flagged
    ``resent_after_crash`` can, and each such case is recorded as an attempt. Resending was
    chosen over giving up because many claimed-but-unrecorded rows were never sent (a
    worker claims its next batch while the current one is on the wire), so giving up would
    lose recipients. A worker that stops cleanly gives such prefetched rows back untried,
    so only a crash (kill -9, power loss) produces this case.
    A worker that lost its lease (recovered by another) cannot record over the new owner:
    every write is conditioned on the ``claim_token``.

Contact events
    Final states also set ``contact_event_pending``; the worker applies the contact status
    rules afterwards, clearing the flag in the same transaction (:func:`pending_contact_events`,
    :func:`take_contact_events`), so each event is applied once, crash or not.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, delete, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from mailcarrier.domain.vocabulary import DeliveryState
from mailcarrier.storage.engine import is_sqlite, run_write, write_transaction
from mailcarrier.storage.tables import (
    attempts,
    contacts,
    deliveries,
    delivery_workers,
    domain_backoffs,
    mailings,
)

__all__ = [
    "AttemptRecord",
    "Backoff",
    "Claim",
    "ClaimedDelivery",
    "DeliveryUpdate",
    "OpenWork",
    "PendingContactEvent",
    "beat",
    "claim_due",
    "has_open_work",
    "leave",
    "next_wake_up",
    "open_work",
    "pending_contact_events",
    "record_results",
    "recover_expired",
    "renew_leases",
    "rewind_open_work",
    "take_contact_events",
    "write_transaction",
]

OPEN_STATES = (DeliveryState.QUEUED.value, DeliveryState.IN_PROGRESS.value)
CRASH_INTERNAL_CODE = 147


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: int
    account_id: int
    mailing_id: int
    contact_id: int
    email: str
    domain: str
    attempt_count: int
    first_attempt_at: datetime | None
    first_name: str
    last_name: str
    fields: dict[str, Any]
    #: attempts recorded by crash recovery, included in ``attempt_count`` but not real tries
    recovered_attempts: int = 0


@dataclass(frozen=True, slots=True)
class Claim:
    token: str
    worker_id: str
    deliveries: tuple[ClaimedDelivery, ...]


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One row of ``attempts``: the evidence of one try."""

    delivery_id: int
    number: int
    started_at: datetime
    ended_at: datetime | None
    outcome: str  #: delivered, deferred, bounced, unknown
    return_path: str | None = None
    local_ip: str | None = None
    remote_ip: str | None = None
    mx_host: str | None = None
    tls_version: str | None = None
    tls_cipher: str | None = None
    dialogue: str | None = None
    reply_code: int | None = None
    enhanced_status: str | None = None
    reply_text: str | None = None
    queue_id: str | None = None
    internal_code: int | None = None
    reason: str | None = None
    category: int | None = None


@dataclass(frozen=True, slots=True)
class DeliveryUpdate:
    """The delivery row after an attempt."""

    delivery_id: int
    state: str
    attempt_count: int
    first_attempt_at: datetime | None  #: None while the message has only waited (never tried)
    next_attempt_at: datetime | None
    message_id: str | None
    return_path: str | None
    last_reason: str | None
    last_category: int | None
    last_reply_code: int | None
    last_enhanced_status: str | None
    last_diagnostic: str | None
    outcome_unknown: bool
    delivered_at: datetime | None
    final_at: datetime | None
    contact_event_pending: bool
    #: the rendered subject of the message sent (None: nothing sent, keep what is stored)
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class Backoff:
    domain: str
    until: datetime
    reason: str
    consecutive: int


@dataclass(frozen=True, slots=True)
class PendingContactEvent:
    delivery_id: int
    account_id: int
    mailing_id: int
    contact_id: int
    state: str
    reason: str | None
    category: int | None
    reply_code: int | None
    enhanced_status: str | None
    diagnostic: str | None
    occurred_at: datetime
    domain: str = ""


def _due_condition(now: datetime) -> Any:
    d = deliveries.c
    backed_off = exists().where(domain_backoffs.c.domain == d.domain, domain_backoffs.c.until > now)
    sending = exists().where(mailings.c.id == d.mailing_id, mailings.c.state == "sending")
    return and_(d.state.in_(OPEN_STATES), d.next_attempt_at <= now, d.claimed_by.is_(None),
                sending, ~backed_off)


def claim_due(engine: Engine, worker_id: str, now: datetime, *, lease: timedelta, limit: int) -> Claim:
    """Claim up to ``limit`` due deliveries of mailings that are sending, outside backed-off domains."""
    token = uuid.uuid4().hex
    d = deliveries.c

    def unit(conn: Connection) -> tuple[ClaimedDelivery, ...]:
        candidates = select(d.id).where(_due_condition(now)).limit(limit)
        if not is_sqlite(engine):
            candidates = candidates.with_for_update(skip_locked=True, of=deliveries)
        ids = list(conn.execute(candidates).scalars())
        if not ids:
            return ()
        conn.execute(update(deliveries).where(d.id.in_(ids), d.claimed_by.is_(None)).values(
            claimed_by=worker_id, claim_token=token, claimed_at=now, lease_until=now + lease))
        c = contacts.c
        rows = conn.execute(select(
            d.id, d.account_id, d.mailing_id, d.contact_id, d.email, d.domain, d.attempt_count,
            d.first_attempt_at, c.first_name, c.last_name, c.fields, d.recovered_attempts,
        ).join_from(deliveries, contacts, c.id == d.contact_id).where(d.claim_token == token)).all()
        return tuple(ClaimedDelivery(r.id, r.account_id, r.mailing_id, r.contact_id, r.email, r.domain,
                                     r.attempt_count, r.first_attempt_at, r.first_name, r.last_name,
                                     dict(r.fields or {}), r.recovered_attempts) for r in rows)

    return Claim(token, worker_id, run_write(engine, unit, what="claiming due deliveries"))


def beat(engine: Engine, worker_id: str, now: datetime, *, lease_until: datetime,
         alive_within: timedelta) -> int:
    """The worker's heartbeat: renew its leases, mark it alive; returns how many workers are alive.

    Workers seen within ``alive_within`` count; each takes an equal share of every
    destination's connection limit, so the limit holds across processes and hosts.
    """
    w = delivery_workers.c

    def unit(conn: Connection) -> int:
        conn.execute(update(deliveries).where(deliveries.c.claimed_by == worker_id)
                     .values(lease_until=lease_until))
        if conn.execute(update(delivery_workers).where(w.worker_id == worker_id)
                        .values(seen_at=now)).rowcount == 0:
            conn.execute(delivery_workers.insert().values(worker_id=worker_id, started_at=now, seen_at=now))
        conn.execute(delete(delivery_workers).where(w.seen_at < now - alive_within * 10))
        alive = conn.execute(select(func.count()).select_from(delivery_workers)
                             .where(w.seen_at >= now - alive_within)).scalar_one()
        return int(alive)

    alive = run_write(engine, unit, what="the worker heartbeat")
    return max(1, int(alive))


def leave(engine: Engine, worker_id: str) -> None:
    """The worker stops: it no longer takes a share of the connection limits."""
    run_write(engine, lambda conn: conn.execute(
        delete(delivery_workers).where(delivery_workers.c.worker_id == worker_id)), what="leaving")


def renew_leases(engine: Engine, worker_id: str, until: datetime) -> int:
    """Extend every lease this worker holds; returns how many rows it still holds."""
    with write_transaction(engine) as conn:
        result = conn.execute(update(deliveries).where(deliveries.c.claimed_by == worker_id)
                              .values(lease_until=until))
    return int(result.rowcount)


def recover_expired(engine: Engine, now: datetime, *, limit: int = 10_000) -> int:
    """Record and requeue deliveries whose worker died with them in flight (see the module doc)."""
    d = deliveries.c
    expired = and_(d.claimed_by.is_not(None), d.lease_until < now)
    with engine.connect() as conn:  # a cheap read first: recovery is rare, the write lock is not free
        if conn.execute(select(d.id).where(expired).limit(1)).first() is None:
            return 0

    def unit(conn: Connection) -> int:
        query = select(d.id, d.attempt_count, d.claimed_by, d.claimed_at, d.lease_until, d.first_attempt_at,
                       d.return_path, d.claim_token).where(expired).limit(limit)
        if not is_sqlite(engine):
            query = query.with_for_update(skip_locked=True)
        rows = conn.execute(query).all()
        if not rows:
            return 0
        conn.execute(attempts.insert(), [{
            "delivery_id": r.id, "number": r.attempt_count + 1, "started_at": r.claimed_at or now,
            "ended_at": now, "return_path": r.return_path, "outcome": "unknown",
            "internal_code": CRASH_INTERNAL_CODE, "reason": "networkerror", "category": 4,
            "reply_text": (f"worker {r.claimed_by} stopped with this message in flight (lease expired "
                           f"{r.lease_until.isoformat() if r.lease_until else '?'}); the server may "
                           "have it; sent again"),
        } for r in rows])
        conn.execute(update(deliveries).where(
            d.id == bindparam("b_id"), d.claim_token == bindparam("b_token")).values(
            attempt_count=bindparam("b_count"),
            first_attempt_at=bindparam("b_first", type_=d.first_attempt_at.type),
            state=DeliveryState.IN_PROGRESS.value, next_attempt_at=now, resent_after_crash=True,
            recovered_attempts=d.recovered_attempts + 1,
            claimed_by=None, claim_token=None, claimed_at=None, lease_until=None,
        ), [{"b_id": r.id, "b_token": r.claim_token, "b_count": r.attempt_count + 1,
             "b_first": r.first_attempt_at or r.claimed_at or now} for r in rows])
        return len(rows)

    return run_write(engine, unit, what="recovering expired leases")


_UPDATE_COLUMNS = ("state", "attempt_count", "first_attempt_at", "next_attempt_at", "message_id",
                   "return_path", "last_reason", "last_category", "last_reply_code",
                   "last_enhanced_status", "last_diagnostic", "outcome_unknown", "delivered_at",
                   "final_at", "contact_event_pending", "subject")


def record_results(engine: Engine, claim: Claim,
                   results: Sequence[tuple[AttemptRecord | None, DeliveryUpdate]],
                   *, released: Iterable[int] = (), backoffs: Sequence[Backoff] = (),
                   delivered_domains: Iterable[str] = (), now: datetime) -> set[int]:
    """Write a batch of outcomes in one transaction; returns the delivery ids recorded.

    Rows no longer held under ``claim.token`` (their lease expired and another worker
    recovered them) are skipped. ``released`` rows go back to the queue without an attempt
    (e.g. their domain started backing off before they were tried). An update without an
    attempt record is a delivery that failed before any attempt (its template broke).
    """
    d = deliveries.c
    released = list(released)

    def unit(conn: Connection) -> set[int]:
        owned = set(conn.execute(select(d.id).where(d.claim_token == claim.token)).scalars())
        kept = [(a, u) for a, u in results if u.delivery_id in owned]
        if kept:
            _write_outcomes(conn, claim.token, kept)
        back = [i for i in released if i in owned]
        if back:
            conn.execute(update(deliveries).where(d.id.in_(back), d.claim_token == claim.token).values(
                claimed_by=None, claim_token=None, claimed_at=None, lease_until=None))
        for backoff in backoffs:
            _upsert_backoff(conn, backoff)
        done_domains = sorted(set(delivered_domains))
        if done_domains:
            conn.execute(delete(domain_backoffs).where(domain_backoffs.c.domain.in_(done_domains),
                                                       domain_backoffs.c.until <= now))
        mailing_ids = {c.mailing_id for c in claim.deliveries}
        _settle_mailings(conn, mailing_ids, now)
        return {u.delivery_id for _, u in kept}

    return run_write(engine, unit, what="recording a batch's outcomes")


_ATTEMPT_COLUMNS = tuple(f.name for f in fields(AttemptRecord))
_ATTEMPT_TIMES = ("started_at", "ended_at")
_UPDATE_TIMES = ("first_attempt_at", "next_attempt_at", "delivered_at", "final_at")


def _write_outcomes(conn: Connection, token: str,
                    kept: Sequence[tuple[AttemptRecord | None, DeliveryUpdate]]) -> None:
    """Insert the attempts and update the deliveries with two driver-level ``executemany`` calls.

    This is the hottest write of the engine (every message, every attempt): building the
    statements once and converting timestamps with the column type's own bind processor
    avoids SQLAlchemy's per-row parameter processing, about half the recording cost.
    """
    dialect = conn.dialect
    processor = deliveries.c.final_at.type.bind_processor(dialect)

    def stamp(value: datetime | None) -> Any:
        return processor(value) if processor is not None else value

    def mark(name: str) -> str:
        return f"%({name})s" if dialect.name == "postgresql" else f":{name}"

    evidence = []
    for attempt, _ in kept:
        if attempt is None:
            continue
        row = {name: getattr(attempt, name) for name in _ATTEMPT_COLUMNS}
        for name in _ATTEMPT_TIMES:
            row[name] = stamp(row[name])
        evidence.append(row)
    if evidence:
        conn.exec_driver_sql(
            f"INSERT INTO attempts ({', '.join(_ATTEMPT_COLUMNS)}) "
            f"VALUES ({', '.join(mark(name) for name in _ATTEMPT_COLUMNS)})", evidence)
    updates = []
    for _, update_row in kept:
        row = {name: getattr(update_row, name) for name in _UPDATE_COLUMNS}
        for name in _UPDATE_TIMES:
            row[name] = stamp(row[name])
        row["b_id"], row["b_token"] = update_row.delivery_id, token
        updates.append(row)
    assignments = ", ".join(f"{name} = COALESCE({mark(name)}, {name})" if name == "subject"
                            else f"{name} = {mark(name)}" for name in _UPDATE_COLUMNS)
    conn.exec_driver_sql(
        f"UPDATE deliveries SET {assignments}, claimed_by = NULL, claim_token = NULL, "
        f"claimed_at = NULL, lease_until = NULL "
        f"WHERE id = {mark('b_id')} AND claim_token = {mark('b_token')}", updates)


def _upsert_backoff(conn: Connection, backoff: Backoff) -> None:
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(domain_backoffs).values(domain=backoff.domain, until=backoff.until,
                                               reason=backoff.reason, consecutive=backoff.consecutive)
    conn.execute(statement.on_conflict_do_update(index_elements=["domain"], set_={
        "until": statement.excluded.until, "reason": statement.excluded.reason,
        "consecutive": statement.excluded.consecutive}))


def backoff_counts(engine: Engine, domains: Iterable[str]) -> dict[str, int]:
    """How many back-offs in a row each domain has had (for the doubling pause)."""
    names = sorted(set(domains))
    if not names:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(select(domain_backoffs.c.domain, domain_backoffs.c.consecutive)
                            .where(domain_backoffs.c.domain.in_(names))).all()
    return {domain: int(count) for domain, count in rows}


def _settle_mailings(conn: Connection, mailing_ids: set[int], now: datetime) -> None:
    """Cancelled mailings fail their released rows; sending ones with nothing open are done."""
    if not mailing_ids:
        return
    d, m = deliveries.c, mailings.c
    cancelled = list(conn.execute(
        select(m.id).where(m.id.in_(mailing_ids), m.state == "cancelled")).scalars())
    if cancelled:
        conn.execute(update(deliveries).where(
            d.mailing_id.in_(cancelled), d.state.in_(OPEN_STATES), d.claimed_by.is_(None),
        ).values(state=DeliveryState.FAILED.value, last_reason="cancelled", final_at=now,
                 next_attempt_at=None))
    still_open = exists().where(d.mailing_id == m.id, d.state.in_(OPEN_STATES))
    # an automation with a trigger stays active between the contacts it is sent to
    conn.execute(update(mailings).where(m.id.in_(mailing_ids), m.state == "sending", ~still_open,
                                        m.trigger.is_(None))
                 .values(state="done", finished_at=now))


def pending_contact_events(engine: Engine, *, limit: int = 5_000) -> list[PendingContactEvent]:
    d = deliveries.c
    with engine.connect() as conn:
        rows = conn.execute(select(
            d.id, d.account_id, d.mailing_id, d.contact_id, d.state, d.last_reason, d.last_category,
            d.last_reply_code, d.last_enhanced_status, d.last_diagnostic, d.final_at, d.domain,
        ).where(d.contact_event_pending.is_(True)).order_by(d.id).limit(limit)).all()
    return [PendingContactEvent(r.id, r.account_id, r.mailing_id, r.contact_id, r.state, r.last_reason,
                                r.last_category, r.last_reply_code, r.last_enhanced_status,
                                r.last_diagnostic, r.final_at, r.domain) for r in rows]


def take_contact_events(conn: Connection, delivery_ids: Sequence[int]) -> set[int]:
    """Clear the pending flag of those of ``delivery_ids`` that still have it, in the caller's
    transaction, and return their ids: the caller applies exactly these events.

    A concurrent writer that cleared some first (PostgreSQL: this UPDATE waits for its
    commit, then finds them cleared; SQLite: writers are serialised) gets them left out.
    """
    taken: set[int] = set()
    d = deliveries.c
    for start in range(0, len(delivery_ids), 900):
        chunk = list(delivery_ids[start:start + 900])
        taken.update(conn.execute(update(deliveries).where(
            d.id.in_(chunk), d.contact_event_pending.is_(True),
        ).values(contact_event_pending=False).returning(d.id)).scalars())
    return taken


def has_open_work(engine: Engine) -> bool:
    """Whether any delivery of a sending mailing is still open (or claimed by someone)."""
    d = deliveries.c
    sending = exists().where(mailings.c.id == d.mailing_id, mailings.c.state == "sending")
    with engine.connect() as conn:
        found = conn.execute(select(d.id).where(d.state.in_(OPEN_STATES), sending).limit(1)).first()
    return found is not None


def rewind_open_work(engine: Engine, start: datetime) -> int:
    """Move the open, unclaimed deliveries of sending mailings due after ``start`` to be due
    at ``start``, and those mailings' start back to it (a simulated run replayed from the
    past); returns how many deliveries moved."""
    d, m = deliveries.c, mailings.c
    sending = exists().where(m.id == d.mailing_id, m.state == "sending")
    with write_transaction(engine) as conn:
        moved = conn.execute(update(deliveries).where(
            d.state.in_(OPEN_STATES), d.claimed_by.is_(None), d.next_attempt_at > start, sending,
        ).values(next_attempt_at=start)).rowcount
        # (not automations: their start is when they began to watch for new audience members)
        conn.execute(update(mailings).where(m.state == "sending", m.trigger.is_(None),
                                            m.started_at > start).values(started_at=start))
    return int(moved or 0)


def next_wake_up(engine: Engine, now: datetime) -> datetime | None:
    """The earliest future moment something may become claimable: a retry, a lease or a back-off end."""
    d = deliveries.c
    sending = exists().where(mailings.c.id == d.mailing_id, mailings.c.state == "sending")
    with engine.connect() as conn:
        retry = conn.execute(select(func.min(d.next_attempt_at)).where(
            d.state.in_(OPEN_STATES), sending, d.next_attempt_at > now, d.claimed_by.is_(None))).scalar()
        lease = conn.execute(select(func.min(d.lease_until)).where(
            d.claimed_by.is_not(None), d.lease_until > now)).scalar()
        backoff = conn.execute(select(func.min(domain_backoffs.c.until)).where(
            domain_backoffs.c.until > now)).scalar()
    times = [t for t in (retry, lease, backoff) if t is not None]
    return min(times) if times else None


@dataclass(frozen=True, slots=True)
class OpenWork:
    """What is left to do across sending mailings, for progress displays."""

    #: Open deliveries (queued or in progress) of mailings in the ``sending`` state.
    waiting: int
    #: Of those, the ones with a retry scheduled after ``now`` (the rest are due or claimed).
    scheduled: int
    #: The earliest scheduled retry, if any.
    next_retry: datetime | None


def open_work(engine: Engine, now: datetime) -> OpenWork:
    """Count the open deliveries of sending mailings and find the next scheduled retry (reads only)."""
    d = deliveries.c
    sending = exists().where(mailings.c.id == d.mailing_id, mailings.c.state == "sending")
    later = d.next_attempt_at > now
    with engine.connect() as conn:
        row = conn.execute(select(
            func.count(),
            func.count().filter(later),
            func.min(d.next_attempt_at).filter(later),
        ).where(d.state.in_(OPEN_STATES), sending)).one()
    return OpenWork(waiting=int(row[0]), scheduled=int(row[1]), next_retry=row[2])
