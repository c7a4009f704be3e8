"""Applying delivery, bounce and engagement events to contacts, and reading their history.

The delivery engine calls :func:`apply_event` (or :func:`apply_events` for throughput)
after each final outcome; inbound bounce processing and tracking do the same. One call
records the activity, updates the contact's latest-bounce fields, counters and status per
:mod:`mailcarrier.domain.contact_status`, and records a ``status_changed`` activity when the
status moves — all in one transaction.

Concurrency: no update is lost. On SQLite the transaction starts with ``BEGIN IMMEDIATE``
(one writer at a time, so the read-decide-write cycle cannot interleave); on PostgreSQL each
row is written only if its ``version`` is unchanged, and the whole batch is retried otherwise
(also when the server aborted it to break a deadlock, e.g. with an import locking the same
contacts in another order).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine

from mailcarrier.domain.contact_status import (
    ContactEvent,
    ContactState,
    EventKind,
    StatusPolicy,
    Transition,
    decide,
)
from mailcarrier.domain.errors import ConflictError, InvalidInputError, NotFoundError
from mailcarrier.services.policies import account_status_policy
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage import contact_state as state_repo
from mailcarrier.storage import contacts as repo
from mailcarrier.storage.engine import StaleWriteError, run_write

__all__ = [
    "ContactEventRecord",
    "apply_event",
    "apply_events",
    "confirm_filtering",
    "history",
    "reactivate",
    "release_filtering",
]

MAX_RETRIES = 20
BOUNCE_KINDS = frozenset({EventKind.SOFT_BOUNCE, EventKind.HARD_BOUNCE})


@dataclass(frozen=True, slots=True)
class ContactEventRecord:
    """One event for one contact, with the evidence stored in its history entry.

    ``cause`` says who or what caused it (e.g. ``"delivery engine"``,
    ``"reactivated by alice: confirmed by phone"``).
    """

    account_id: int
    contact_id: int
    event: ContactEvent
    mailing_id: int | None = None
    delivery_id: int | None = None
    reply_code: int | None = None
    enhanced_status: str | None = None
    diagnostic: str | None = None
    remote_mta: str | None = None
    cause: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def apply_event(engine: Engine, policy: StatusPolicy, record: ContactEventRecord,
                now: datetime) -> Transition:
    """Apply one event; raises NotFoundError if the contact is not the account's."""
    return apply_events(engine, policy, [record], now)[0]


def apply_events(engine: Engine, policy: StatusPolicy,
                 records: Sequence[ContactEventRecord] | Callable[[Connection], Sequence[ContactEventRecord]],
                 now: datetime, *,
                 take: Callable[[Connection], Collection[int]] | None = None,
                 finish: Callable[[Connection, list[Transition]], None] | None = None,
                 ) -> list[Transition]:
    """Apply a batch in order (several events for one contact chain), in one transaction.

    ``take``, when given, runs first in that transaction and returns the delivery ids it
    claimed for this writer (e.g. by clearing their pending flag): only records of those
    deliveries are applied, so events another writer already applied are skipped rather
    than counted twice. The transitions returned are those of the applied records.
    ``finish``, when given, runs last in the same transaction with those transitions: the
    caller's own bookkeeping (marking its source rows done) commits with the events or not
    at all, so a crash can neither apply an event twice nor lose it. An exception it raises
    rolls everything back and propagates. The hooks run even with no records, so a caller's
    bookkeeping needs no separate transaction for an empty batch.

    ``records`` may be a function of the transaction's connection: the events are then
    decided from reads made under the write lock (on SQLite) in the same transaction as
    their writes, and decided again if the transaction is retried.
    """
    if not callable(records) and not records and take is None and finish is None:
        return []

    def unit(conn: Connection) -> list[Transition]:
        batch = records(conn) if callable(records) else records
        if take is not None:
            taken = set(take(conn))
            batch = [record for record in batch if record.delivery_id in taken]
        outcome = _apply_in(conn, policy, batch, now) if batch else []
        if outcome is None:  # a concurrent writer changed a contact (PostgreSQL): run it again
            raise StaleWriteError("a contact changed under this batch")
        if finish is not None:
            finish(conn, outcome)
        return outcome

    try:
        return run_write(engine, unit, what="applying contact events", attempts=MAX_RETRIES)
    except StaleWriteError as exc:
        raise ConflictError(
            f"contact updates kept conflicting after {MAX_RETRIES} attempts; retry later") from exc


def reactivate(engine: Engine, policy: StatusPolicy, account_id: int, contact_id: int, *,
               who: str, why: str, now: datetime) -> Transition:
    """Explicitly restore a contact to ``active``, recording who and why."""
    if not who.strip() or not why.strip():
        raise InvalidInputError("reactivation needs who did it and why")
    record = ContactEventRecord(account_id, contact_id, ContactEvent(EventKind.REACTIVATE, now),
                                cause=f"reactivated by {who}: {why}",
                                details={"who": who, "why": why})
    return apply_event(engine, policy, record, now)


def confirm_filtering(engine: Engine, policy: StatusPolicy, account_id: int, contact_id: int, *,
                      who: str, why: str, now: datetime) -> Transition:
    """A user checked a contact held as suspected filtering: the address is invalid.

    The contact moves to ``error`` with ``email_invalid``; ConflictError if it was not held.
    """
    return _user_decision(engine, policy, account_id, contact_id, EventKind.FILTERING_CONFIRMED,
                          who=who, why=why, now=now)


def release_filtering(engine: Engine, policy: StatusPolicy, account_id: int, contact_id: int, *,
                      who: str, why: str, now: datetime) -> Transition:
    """A user checked a contact held as suspected filtering: the address is real.

    The hold ends, counters reset, the contact is ``active`` (unless opted out);
    ConflictError if it was not held.
    """
    return _user_decision(engine, policy, account_id, contact_id, EventKind.FILTERING_RELEASED,
                          who=who, why=why, now=now)


def _user_decision(engine: Engine, policy: StatusPolicy, account_id: int, contact_id: int,
                   kind: EventKind, *, who: str, why: str, now: datetime) -> Transition:
    if not who.strip() or not why.strip():
        raise InvalidInputError("a decision on suspected filtering needs who made it and why")
    verb = "confirmed invalid" if kind is EventKind.FILTERING_CONFIRMED else "released as real"
    record = ContactEventRecord(account_id, contact_id, ContactEvent(kind, now),
                                cause=f"suspected filtering {verb} by {who}: {why}",
                                details={"who": who, "why": why})
    return apply_event(engine, policy, record, now)


def history(engine: Engine, account_id: int, contact_id: int | None,
            filters: repo.ActivityFilter = repo.ActivityFilter()) -> list[repo.ActivityRow]:
    """A contact's (or the account's) activity history, newest first."""
    with engine.connect() as conn:
        return repo.activity_history(conn, account_id, contact_id, filters)


def _apply_in(conn: Connection, policy: StatusPolicy, records: Sequence[ContactEventRecord],
              now: datetime) -> list[Transition] | None:
    """Decide and write; None when a concurrent writer changed one of the contacts."""
    by_account: dict[int, set[int]] = {}
    for record in records:
        by_account.setdefault(record.account_id, set()).add(record.contact_id)
    # Each account's preset and thresholds (one small read per batch): synchronous outcomes,
    # late bounces, tracking and user decisions all pass here, so they all apply the same.
    policies = {account_id: account_status_policy(policy, own.contact_policy, own.thresholds)
                for account_id, own in account_repo.account_policies(conn, by_account).items()}
    loaded: dict[tuple[int, int], state_repo.VersionedState] = {}
    for account_id, ids in by_account.items():
        for cid, versioned in state_repo.load_states(conn, account_id, ids).items():
            loaded[(account_id, cid)] = versioned
    current: dict[tuple[int, int], ContactState] = {k: v.state for k, v in loaded.items()}
    moved: set[tuple[int, int]] = set()
    bounces: dict[tuple[int, int], state_repo.LatestBounce] = {}
    activity_rows: list[state_repo.NewActivity] = []
    transitions: list[Transition] = []
    for record in records:
        key = (record.account_id, record.contact_id)
        state = current.get(key)
        if state is None:
            raise NotFoundError(f"contact {record.contact_id} not found in account {record.account_id}")
        transition = decide(policies.get(record.account_id, policy), state, record.event, now)
        current[key] = transition.after
        transitions.append(transition)
        status_changed = transition.status_changed
        if status_changed:
            moved.add(key)
        if record.event.kind in BOUNCE_KINDS:
            bounces[key] = _latest_bounce(record, transition)
        _append_activities(activity_rows, record, transition, status_changed)
    writes: dict[int, list[state_repo.StateWrite]] = {}
    for key, versioned in loaded.items():
        writes.setdefault(key[0], []).append(state_repo.StateWrite(
            versioned.contact_id, versioned.version, versioned.state, current[key],
            key in moved, bounces.get(key)))
    for account_id, account_writes in writes.items():
        if not state_repo.write_states(conn, account_id, account_writes, now):
            return None
    state_repo.append_activities(conn, activity_rows)
    return transitions


def _latest_bounce(record: ContactEventRecord, transition: Transition) -> state_repo.LatestBounce:
    return state_repo.LatestBounce(
        record.event.occurred_at,
        int(transition.category) if transition.category is not None else None,
        transition.reason.value if transition.reason is not None else None,
        record.reply_code, record.enhanced_status, record.diagnostic, record.remote_mta,
        record.mailing_id)


def _append_activities(rows: list[state_repo.NewActivity], record: ContactEventRecord,
                       transition: Transition, status_changed: bool) -> None:
    """The event's history entry, and a ``status_changed`` entry when the status moved."""
    event = record.event
    details: dict[str, Any] | None = None
    if record.details or transition.suspected_filtering or transition.because:
        details = dict(record.details)
        if transition.suspected_filtering:
            details["suspected_filtering"] = True
        if transition.because:
            details["policy"] = list(transition.because)
    reason = transition.reason.value if transition.reason is not None else None
    category = int(transition.category) if transition.category is not None else None
    rows.append(state_repo.NewActivity(
        record.account_id, record.contact_id, record.mailing_id, record.delivery_id, category,
        record.reply_code, event.kind.value, reason, record.enhanced_status, record.diagnostic,
        record.remote_mta, record.cause, event.occurred_at, details))
    if status_changed:
        before, after = transition.before, transition.after
        rows.append(state_repo.NewActivity(
            record.account_id, record.contact_id, record.mailing_id, record.delivery_id, category,
            None, "status_changed", reason, None, None, None,
            "; ".join(transition.because) or record.cause, event.occurred_at,
            {"from": before.status.value, "to": after.status.value,
             "email_invalid": after.email_invalid, "by": record.cause}))
