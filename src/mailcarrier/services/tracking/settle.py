"""Settling: after the hold, human engagement reaches the contact, and webhooks hear of it.

A hit is settled once ``tracking_hold_seconds`` have passed (a scanner burst recognised
late can still revise it until then): :func:`settle_hits` applies human opens and clicks
to the contacts in the transaction that marks them settled, and :func:`settled_events`
hands settled hits, with their verdicts, to webhooks and automation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, select, update

from mailcarrier.domain.contact_status import ContactEvent, EventKind, StatusPolicy
from mailcarrier.domain.machine_activity import (
    VerdictKind,
)
from mailcarrier.services.contacts import ContactEventRecord, apply_events
from mailcarrier.storage.tracking_tables import tracking_hits, tracking_links

__all__ = ["EngagementEvent", "settle_hits", "settled_events"]

# --- settling: contact effects and webhooks after the hold ----------------------------


def settle_hits(engine: Engine, policy: StatusPolicy, *, now: datetime, hold: timedelta,
                limit: int = 1000) -> int:
    """Settle hits older than ``hold`` (in id order); human ones count for their contacts.

    Settling takes a prefix of the unsettled ids, so ``settled_events`` can be read with an
    id cursor. When another process is settling the same rows, this call settles nothing.
    """
    cutoff = now - hold
    with engine.connect() as conn:
        rows = conn.execute(select(tracking_hits.c.id, tracking_hits.c.occurred_at,
                                   tracking_hits.c.kind, tracking_hits.c.verdict,
                                   tracking_hits.c.account_id, tracking_hits.c.contact_id,
                                   tracking_hits.c.mailing_id, tracking_hits.c.delivery_id)
                            .where(tracking_hits.c.settled_at.is_(None))
                            .order_by(tracking_hits.c.id).limit(limit)).all()
    due = []
    for row in rows:
        if row.occurred_at > cutoff:
            break
        due.append(row)
    if not due:
        return 0

    def settle(conn: Connection, _transitions: object) -> None:
        # In the contact events' transaction: a crash cannot leave hits settled whose
        # engagement never reached the contact, nor the reverse.
        claimed = conn.execute(update(tracking_hits).where(
            tracking_hits.c.id.in_([r.id for r in due]), tracking_hits.c.settled_at.is_(None))
            .values(settled_at=now)).rowcount
        if claimed != len(due):
            raise _SettledElsewhereError

    records = [
        ContactEventRecord(
            account_id=r.account_id, contact_id=r.contact_id,
            event=ContactEvent(EventKind.CLICK if r.kind == "click" else EventKind.OPEN, r.occurred_at),
            mailing_id=r.mailing_id, delivery_id=r.delivery_id, cause="tracking",
            details={"hit_id": r.id})
        for r in due
        if r.verdict == VerdictKind.HUMAN.value and r.contact_id is not None and r.account_id is not None
    ]
    try:
        apply_events(engine, policy, records, now, finish=settle)
    except _SettledElsewhereError:
        return 0
    return len(due)


class _SettledElsewhereError(Exception):
    """Another settler took some of these hits first: this one rolls back and settles none."""


@dataclass(frozen=True, slots=True)
class EngagementEvent:
    """A settled open or click, for webhooks and automation (``hit_id`` is the cursor)."""

    hit_id: int
    account_id: int
    kind: str
    verdict: str
    reasons: tuple[str, ...]
    occurred_at: datetime
    mailing_id: int
    delivery_id: int | None
    contact_id: int | None
    link_id: int | None
    url: str | None

    @property
    def human(self) -> bool:
        return self.verdict == VerdictKind.HUMAN.value


def settled_events(engine: Engine, *, after_id: int = 0, limit: int = 500,
                   account_id: int | None = None, human_only: bool = False) -> list[EngagementEvent]:
    """Settled opens and clicks with ``hit_id > after_id``, in id order.

    The webhook dispatcher keeps the last ``hit_id`` it handled and passes it back: settled
    ids only grow. The verdict is the one at read time (a later person may still upgrade it).
    """
    query = (select(tracking_hits, tracking_links.c.url)
             .select_from(tracking_hits.outerjoin(tracking_links,
                                                  tracking_links.c.id == tracking_hits.c.link_id))
             .where(tracking_hits.c.id > after_id, tracking_hits.c.settled_at.is_not(None),
                    tracking_hits.c.verdict.is_not(None))
             .order_by(tracking_hits.c.id).limit(limit))
    if account_id is not None:
        query = query.where(tracking_hits.c.account_id == account_id)
    if human_only:
        query = query.where(tracking_hits.c.verdict == VerdictKind.HUMAN.value)
    with engine.connect() as conn:
        return [EngagementEvent(r.id, r.account_id, r.kind, r.verdict, tuple(r.reasons or ()),
                                r.occurred_at, r.mailing_id, r.delivery_id, r.contact_id,
                                r.link_id, r.url) for r in conn.execute(query)]
