"""SQL of suspected B2B filtering (seeds 002, 004): the evidence a domain gave, the holds.

The same evidence feeds the rule for synchronous refusals (the delivery worker) and for
late bounce emails (inbound), so both decide alike:

* within a mailing: how many of the domain's recipients were refused as unknown, of all;
* across mailings: how many of those refused addresses the same domain had accepted (a
  delivery that stayed delivered) in another mailing recently — a gateway that "suddenly"
  does not know people it took mail for last week.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, func, select, update

from mailcarrier.storage.tables import contacts, deliveries

__all__ = ["REFUSED_AS_UNKNOWN", "HeldContact", "domain_evidence", "held_contacts", "invalidated_earlier",
           "mark_suspected"]

#: Last reasons of a delivery refused as unknown (``filtered`` once judged suspected).
REFUSED_AS_UNKNOWN = ("userunknown", "filtered")


def domain_evidence(conn: Connection, pairs: Iterable[tuple[int, str]], since: datetime,
                    ) -> dict[tuple[int, str], tuple[int, int, int]]:
    """Per (mailing, domain): (refused as unknown, all deliveries, refused ones accepted
    before in another mailing delivered since ``since``)."""
    wanted = sorted(set(pairs))
    d = deliveries.c
    counts: dict[tuple[int, str], tuple[int, int, int]] = {}
    for mailing_id in sorted({m for m, _ in wanted}):
        domains = [dom for m, dom in wanted if m == mailing_id]
        refused = and_(d.state == "bounced_hard", d.last_reason.in_(REFUSED_AS_UNKNOWN))
        bad = func.sum(func.cast(refused, d.attempt_count.type))
        query = (select(d.domain, bad, func.count()).where(d.mailing_id == mailing_id,
                                                            d.domain.in_(domains))
                 .group_by(d.domain))
        found = {dom: (int(b or 0), int(total)) for dom, b, total in conn.execute(query)}
        earlier = deliveries.alias("earlier")
        e = earlier.c
        accepted = (select(d.domain, func.count(func.distinct(d.contact_id)))
                    .join(earlier, and_(e.contact_id == d.contact_id, e.mailing_id != d.mailing_id))
                    .where(d.mailing_id == mailing_id, d.domain.in_(domains), refused,
                           e.state == "delivered", e.delivered_at >= since)
                    .group_by(d.domain))
        before = {dom: int(n) for dom, n in conn.execute(accepted)}
        for dom, (b, total) in found.items():
            counts[(mailing_id, dom)] = (b, total, before.get(dom, 0))
    return counts


def mark_suspected(conn: Connection, delivery_ids: Sequence[int]) -> None:
    """Record on the deliveries that their refusal was judged suspected filtering."""
    d = deliveries.c
    for start in range(0, len(delivery_ids), 900):
        chunk = list(delivery_ids[start:start + 900])
        conn.execute(update(deliveries).where(d.id.in_(chunk))
                     .values(suspected_filtering=True, last_reason="filtered", last_category=1))


def invalidated_earlier(conn: Connection, pairs: Iterable[tuple[int, str]],
                        ) -> list[tuple[int, int, int, int]]:
    """(account, contact, mailing, delivery) of refusals as unknown in these (mailing, domain)
    pairs that were applied as invalid addresses before the domain's evidence pointed to
    filtering: the contact is still invalid from that very mailing and not held."""
    d, c = deliveries.c, contacts.c
    out: list[tuple[int, int, int, int]] = []
    for mailing_id, domain in sorted(set(pairs)):
        rows = conn.execute(
            select(d.account_id, d.contact_id, d.mailing_id, d.id).join(contacts, c.id == d.contact_id)
            .where(d.mailing_id == mailing_id, d.domain == domain, d.state == "bounced_hard",
                   d.last_reason == "userunknown", d.suspected_filtering.is_(False),
                   d.contact_event_pending.is_(False), c.email_invalid.is_(True),
                   c.suspected_filtering.is_(False), c.last_bounce_mailing_id == mailing_id)
            .order_by(d.id))
        out.extend((int(a), int(ct), int(m), int(i)) for a, ct, m, i in rows)
    return out


@dataclass(frozen=True, slots=True)
class HeldContact:
    """A contact held as suspected filtering, with its latest refusal."""

    id: int
    email: str
    domain: str
    status: str
    last_bounce_at: datetime | None
    last_bounce_mailing_id: int | None
    last_bounce_diagnostic: str | None
    consecutive_blocks: int


def held_contacts(conn: Connection, account_id: int, *, domain: str | None = None,
                  after_id: int = 0, limit: int = 500) -> list[HeldContact]:
    """The account's contacts held as suspected filtering, by id."""
    c = contacts.c
    query = (select(c.id, c.email, c.domain, c.status, c.last_bounce_at, c.last_bounce_mailing_id,
                    c.last_bounce_diagnostic, c.consecutive_blocks)
             .where(c.account_id == account_id, c.suspected_filtering.is_(True), c.id > after_id)
             .order_by(c.id).limit(limit))
    if domain:
        query = query.where(c.domain == domain.lower())
    return [HeldContact(*row) for row in conn.execute(query)]
