"""Final delivery outcomes turned into contact events, each applied exactly once.

The worker records a delivery's final state with ``contact_event_pending`` set, and then
applies the contact status rules for it (:func:`apply_pending`). Taking the flag and
applying the event happen in one transaction: a crash between the two used to apply the
event again on restart (a soft bounce counted twice), and two workers reading the same
pending rows both applied them. Now the transaction first clears the flags it still finds
set (:func:`mailcarrier.storage.outbox.take_contact_events`) and applies only those events;
a writer that finds them taken skips them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Engine

from mailcarrier.domain.contact_status import ContactEvent, EventKind, StatusPolicy
from mailcarrier.domain.vocabulary import Category, DeliveryState, Reason
from mailcarrier.services.contacts import ContactEventRecord, apply_events
from mailcarrier.storage import outbox

__all__ = ["apply_pending", "records_for"]

_KINDS = {DeliveryState.DELIVERED.value: EventKind.DELIVERED,
          DeliveryState.BOUNCED_HARD.value: EventKind.HARD_BOUNCE}


def records_for(pending: Sequence[outbox.PendingContactEvent]) -> list[ContactEventRecord]:
    """The contact event each final outcome stands for (not delivered, not hard: soft)."""
    return [ContactEventRecord(
        event.account_id, event.contact_id,
        ContactEvent(_KINDS.get(event.state, EventKind.SOFT_BOUNCE), event.occurred_at,
                     Reason(event.reason) if event.reason else None,
                     Category(event.category) if event.category is not None else None),
        mailing_id=event.mailing_id, delivery_id=event.delivery_id, reply_code=event.reply_code,
        enhanced_status=event.enhanced_status, diagnostic=event.diagnostic,
        cause="delivery engine") for event in pending]


def apply_pending(engine: Engine, policy: StatusPolicy, now: datetime,
                  pending: Sequence[outbox.PendingContactEvent] | None = None) -> int:
    """Apply pending outcomes (read now unless given); returns how many this call applied."""
    if pending is None:
        pending = outbox.pending_contact_events(engine)
    if not pending:
        return 0
    ids = [event.delivery_id for event in pending]
    applied = apply_events(engine, policy, records_for(pending), now,
                           take=lambda conn: outbox.take_contact_events(conn, ids))
    return len(applied)
