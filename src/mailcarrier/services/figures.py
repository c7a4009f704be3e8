"""A mailing's headline figures: one query, one definition of each number.

Every surface that shows how a mailing went (``mailcarrier mailings show`` and ``report
mailing``, the demo, the API's response page and mailing lists, the dashboard, the bounce
report's per-mailing rates) reads :class:`MailingFigures` from here, so "sent", "bounced"
or the hard-bounce rate mean the same thing everywhere. Before, the mailing service and the
reports counted separately and disagreed (an unknown reason was ``"None"`` in one and
``"undefined"`` in the other; "in progress" included queued recipients in one list and not
on the figures; the bounce report divided hard bounces by the recipients at send time, the
response page by those attempted).

The figures come from the deliveries' current states, so they move while retries settle and
late bounces arrive. One grouped query reads them for any number of mailings at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, case, func, select

from mailcarrier.domain.errors import NotFoundError
from mailcarrier.domain.vocabulary import DeliveryState
from mailcarrier.storage.tables import deliveries, mailings

__all__ = ["ATTEMPTED", "BOUNCED", "BUCKETS", "MailingFigures", "figures_of", "mailing_figures"]

#: One bucket per delivery state, in the order they are shown.
BUCKETS: tuple[str, ...] = tuple(s.value for s in DeliveryState)
BOUNCED = (DeliveryState.BOUNCED_HARD.value, DeliveryState.BOUNCED_SOFT.value)
#: States whose recipients had at least one attempt ("sent" on seed 003's response page).
ATTEMPTED = (DeliveryState.IN_PROGRESS.value, DeliveryState.DELIVERED.value, *BOUNCED)
#: A final bounce whose reason was never determined.
UNKNOWN_REASON = "undefined"
#: The category of a bounce that has none recorded (seed 001's "unknown").
UNKNOWN_CATEGORY = 9


@dataclass(frozen=True, slots=True)
class MailingFigures:
    """How one mailing went, as of now: each recipient in exactly one bucket (its delivery state)."""

    mailing_id: int
    buckets: dict[str, int]
    #: Delivered but the outcome of one attempt is unknown (a timeout after the final ".").
    outcome_unknown: int = 0
    resent_after_crash: int = 0
    #: Bounces judged to be a gateway filtering real mailboxes, not invalid addresses.
    suspected_filtering: int = 0
    #: Final bounces by marketer category (1, 2, 3, 4, 9), and by (reason, category).
    bounced_by_category: dict[int, int] = field(default_factory=dict)
    bounced_by_reason_category: dict[tuple[str, int | None], int] = field(default_factory=dict)

    def count(self, state: DeliveryState | str) -> int:
        return self.buckets.get(state.value if isinstance(state, DeliveryState) else state, 0)

    @property
    def recipients(self) -> int:
        return sum(self.buckets.values())

    @property
    def suppressed(self) -> int:
        return self.count(DeliveryState.SUPPRESSED)

    @property
    def queued(self) -> int:
        return self.count(DeliveryState.QUEUED)

    @property
    def in_progress(self) -> int:
        """Recipients with an attempt made and a retry pending."""
        return self.count(DeliveryState.IN_PROGRESS)

    @property
    def open(self) -> int:
        """Recipients not final yet: queued or in progress."""
        return self.queued + self.in_progress

    @property
    def delivered(self) -> int:
        return self.count(DeliveryState.DELIVERED)

    @property
    def bounced_hard(self) -> int:
        return self.count(DeliveryState.BOUNCED_HARD)

    @property
    def bounced_soft(self) -> int:
        return self.count(DeliveryState.BOUNCED_SOFT)

    @property
    def bounced(self) -> int:
        return self.bounced_hard + self.bounced_soft

    @property
    def failed(self) -> int:
        return self.count(DeliveryState.FAILED)

    @property
    def sent(self) -> int:
        """Recipients at least one attempt was made for (the response page's "attempted")."""
        return sum(self.count(s) for s in ATTEMPTED)

    @property
    def final(self) -> int:
        return self.delivered + self.bounced + self.failed

    @property
    def hard_bounce_rate(self) -> float:
        """Hard bounces among the recipients attempted (0 before any attempt)."""
        return self.bounced_hard / self.sent if self.sent else 0.0

    @property
    def bounced_by_reason(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for (reason, _category), n in self.bounced_by_reason_category.items():
            counts[reason] += n
        return dict(counts)

    def headline(self) -> dict[str, object]:
        """The figures as plain JSON-ready values: what every surface shows, under these names."""
        return {
            "recipients": self.recipients, "suppressed": self.suppressed, "sent": self.sent,
            "delivered": self.delivered, "outcome_unknown": self.outcome_unknown,
            "bounced": self.bounced, "bounced_hard": self.bounced_hard, "bounced_soft": self.bounced_soft,
            "in_progress": self.in_progress, "queued": self.queued, "failed": self.failed,
            "resent_after_crash": self.resent_after_crash, "suspected_filtering": self.suspected_filtering,
            "hard_bounce_rate": round(self.hard_bounce_rate, 6),
            "bounced_by_category": {str(k): v for k, v in self.bounced_by_category.items()},
            "bounced_by_reason": dict(sorted(self.bounced_by_reason.items())),
        }

    @property
    def reconciles(self) -> bool:
        """The bounce breakdowns add up to the bounced recipients."""
        return (sum(self.bounced_by_category.values()) == self.bounced
                == sum(self.bounced_by_reason_category.values()))


def figures_of(conn: Connection, account_id: int, mailing_ids: Iterable[int]) -> dict[int, MailingFigures]:
    """The figures of these mailings of the account (a mailing with no delivery: all zero)."""
    ids = sorted(set(mailing_ids))
    if not ids:
        return {}
    d = deliveries.c
    bounced = d.state.in_(BOUNCED)
    category = case((bounced, func.coalesce(d.last_category, UNKNOWN_CATEGORY)), else_=None)
    reason = case((bounced, func.coalesce(d.last_reason, UNKNOWN_REASON)), else_=None)
    flag = case((d.outcome_unknown == True, 1), else_=0)  # noqa: E712 (SQL comparison)
    crash = case((d.resent_after_crash == True, 1), else_=0)  # noqa: E712
    filtering = case((bounced & (d.suspected_filtering == True), 1), else_=0)  # noqa: E712
    query = (select(d.mailing_id, d.state, category, reason, func.count(), func.sum(flag), func.sum(crash),
                    func.sum(filtering))
             .where(d.account_id == account_id, d.mailing_id.in_(ids))
             .group_by(d.mailing_id, d.state, category, reason))
    buckets: dict[int, Counter[str]] = {mid: Counter() for mid in ids}
    flags: dict[int, Counter[str]] = {mid: Counter() for mid in ids}
    categories: dict[int, Counter[int]] = {mid: Counter() for mid in ids}
    reasons: dict[int, Counter[tuple[str, int | None]]] = {mid: Counter() for mid in ids}
    for mid, state, cat, why, n, unknown, resent, filtered in conn.execute(query):
        key = int(mid)
        buckets[key][str(state)] += int(n)
        flags[key]["unknown"] += int(unknown or 0)
        flags[key]["resent"] += int(resent or 0)
        flags[key]["filtering"] += int(filtered or 0)
        if state in BOUNCED:
            categories[key][int(cat)] += int(n)
            reasons[key][(str(why), int(cat))] += int(n)
    return {mid: MailingFigures(
        mid, {**dict.fromkeys(BUCKETS, 0), **buckets[mid]}, outcome_unknown=flags[mid]["unknown"],
        resent_after_crash=flags[mid]["resent"], suspected_filtering=flags[mid]["filtering"],
        bounced_by_category=dict(sorted(categories[mid].items())),
        bounced_by_reason_category=dict(reasons[mid].most_common())) for mid in ids}


def mailing_figures(engine: Engine, account_id: int, mailing_id: int) -> MailingFigures:
    """The figures of one of the account's mailings; NotFoundError if it has no such mailing."""
    with engine.connect() as conn:
        owner = conn.execute(select(mailings.c.account_id).where(mailings.c.id == mailing_id)).scalar()
        if owner != account_id:
            raise NotFoundError(f"mailing {mailing_id} not found in account {account_id}")
        return figures_of(conn, account_id, [mailing_id])[mailing_id]
