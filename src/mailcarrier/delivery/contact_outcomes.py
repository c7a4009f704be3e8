"""Final delivery outcomes turned into contact events, each applied exactly once.

The worker records a delivery's final state with ``contact_event_pending`` set, and then
applies the contact status rules for it (:func:`apply_pending`). Taking the flag and
applying the event happen in one transaction: a crash between the two used to apply the
event again on restart (a soft bounce counted twice), and two workers reading the same
pending rows both applied them. Now the transaction first clears the flags it still finds
set (:func:`mailcarrier.storage.outbox.take_contact_events`) and applies only those events;
a writer that finds them taken skips them.

A refusal "user unknown" during the SMTP session gets the same B2B filtering evidence as a
late bounce email (:mod:`mailcarrier.storage.filtering`): how the recipient's domain
answered the rest of the mailing, and whether it refuses addresses it accepted in earlier
mailings. A contact judged suspected is held rather than invalidated, and its delivery is
marked ``suspected_filtering`` (reason ``filtered``, category 1) in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, select

from mailcarrier.domain.contact_status import (
    ContactEvent,
    DomainEvidence,
    EventKind,
    StatusPolicy,
    Transition,
)
from mailcarrier.domain.vocabulary import Category, DeliveryState, Reason
from mailcarrier.services.contacts import ContactEventRecord, apply_events
from mailcarrier.storage import filtering, outbox
from mailcarrier.storage.tables import mailings

__all__ = ["apply_pending", "records_for"]

_KINDS = {DeliveryState.DELIVERED.value: EventKind.DELIVERED,
          DeliveryState.BOUNCED_HARD.value: EventKind.HARD_BOUNCE}


_Evidence = dict[tuple[int, str], tuple[int, int, int]]


def records_for(pending: Sequence[outbox.PendingContactEvent],
                evidence: _Evidence | None = None) -> list[ContactEventRecord]:
    """The contact event each final outcome stands for (not delivered, not hard: soft);
    refusals as unknown carry their domain's evidence when ``evidence`` has it."""
    evidence = evidence or {}
    records = []
    for event in pending:
        domain_evidence = None
        counts = evidence.get((event.mailing_id, event.domain))
        if counts is not None and _refused_as_unknown(event):
            domain_evidence = DomainEvidence(*counts)
        records.append(ContactEventRecord(
            event.account_id, event.contact_id,
            ContactEvent(_KINDS.get(event.state, EventKind.SOFT_BOUNCE), event.occurred_at,
                         Reason(event.reason) if event.reason else None,
                         Category(event.category) if event.category is not None else None,
                         domain_evidence=domain_evidence),
            mailing_id=event.mailing_id, delivery_id=event.delivery_id, reply_code=event.reply_code,
            enhanced_status=event.enhanced_status, diagnostic=event.diagnostic,
            cause="delivery engine"))
    return records


def _test_mailings(engine: Engine, mailing_ids: set[int]) -> set[int]:
    if not mailing_ids:
        return set()
    with engine.connect() as conn:
        return set(conn.execute(select(mailings.c.id).where(
            mailings.c.id.in_(sorted(mailing_ids)), mailings.c.kind == "test")).scalars())


def _refused_as_unknown(event: outbox.PendingContactEvent) -> bool:
    return event.state == DeliveryState.BOUNCED_HARD.value and event.reason in filtering.REFUSED_AS_UNKNOWN


def apply_pending(engine: Engine, policy: StatusPolicy, now: datetime,
                  pending: Sequence[outbox.PendingContactEvent] | None = None) -> int:
    """Apply pending outcomes (read now unless given); returns how many this call applied."""
    if pending is None:
        pending = outbox.pending_contact_events(engine)
    if not pending:
        return 0
    ids = [event.delivery_id for event in pending]
    pairs = {(e.mailing_id, e.domain) for e in pending if _refused_as_unknown(e)}
    evidence: _Evidence = {}
    if pairs:
        since = now - timedelta(days=policy.filtering_recent_days)
        with engine.connect() as conn:
            evidence = filtering.domain_evidence(conn, pairs, since)
    # a test send never changes a contact (seed 003): its outcomes are taken, not applied
    tests = _test_mailings(engine, {e.mailing_id for e in pending})
    records = [r for r in records_for(pending, evidence) if r.mailing_id not in tests]

    suspected_pairs: set[tuple[int, str]] = set()
    domain_of = {e.delivery_id: (e.mailing_id, e.domain) for e in pending}

    def mark(conn: Connection, transitions: list[Transition]) -> None:
        # the applied records are those taken, in order: pair them by delivery id
        taken = [r for r in records if r.delivery_id in applied_ids]
        suspected = [r.delivery_id for r, t in zip(taken, transitions, strict=True)
                     if t.suspected_filtering and r.delivery_id is not None]
        if suspected:
            filtering.mark_suspected(conn, suspected)
        suspected_pairs.clear()
        suspected_pairs.update(domain_of[i] for i in suspected)

    applied_ids: set[int] = set()

    def take(conn: Connection) -> set[int]:
        applied_ids.clear()
        applied_ids.update(outbox.take_contact_events(conn, ids))
        return applied_ids

    applied = apply_events(engine, policy, records, now, take=take, finish=mark)
    if suspected_pairs:
        _rejudge(engine, policy, suspected_pairs, now)
    return len(applied)


def _rejudge(engine: Engine, policy: StatusPolicy, pairs: set[tuple[int, str]], now: datetime) -> None:
    """Hold, rather than leave invalid, the contacts a domain refused earlier in the same
    mailing, before its evidence crossed the threshold (a big domain's recipients spread over
    several batches). Idempotent: the delivery is marked suspected in the same transaction."""
    with engine.connect() as conn:
        earlier = filtering.invalidated_earlier(conn, pairs)
    if not earlier:
        return
    records = [ContactEventRecord(account_id, contact_id,
                                  ContactEvent(EventKind.FILTERING_SUSPECTED, now, Reason.FILTERED,
                                               Category.SPAM_BLOCK),
                                  mailing_id=mailing_id, delivery_id=delivery_id,
                                  cause="delivery engine: the domain's later refusals point to filtering")
               for account_id, contact_id, mailing_id, delivery_id in earlier]

    def mark(conn: Connection, transitions: list[Transition]) -> None:
        filtering.mark_suspected(conn, [r.delivery_id for r, t in zip(records, transitions, strict=True)
                                        if t.suspected_filtering and r.delivery_id is not None])

    apply_events(engine, policy, records, now, finish=mark)
