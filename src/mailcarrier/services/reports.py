"""The reports marketers read: the response page per mailing, mailing lists, the bounce report.

Figures are computed from the current state of the store on every call, so they move as
retries settle and late bounces arrive (seed 003: totals settle over ~30 hours). The
response page puts every recipient of a mailing in exactly one bucket — its delivery
state — and :attr:`ResponsePage.reconciles` checks the buckets add up to the recipients.

The bounce report ("Bounce House", seed 001) reads per-day rollups of bounce activities
(``storage/report_tables.py``) that writers fold incrementally above a watermark
(``services.report_rollups``), plus the few bounces above it grouped on the fly: it answers
in milliseconds however long the history, exactly, and never writes (a GET must not).
Every query filters by ``account_id``: one account never sees another's figures.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Select, and_, case, func, select, type_coerce, union_all

from mailcarrier.config import Settings
from mailcarrier.domain.bounce_labels import bounce_labels
from mailcarrier.domain.errors import ConfigurationError, InvalidInputError, NotFoundError
from mailcarrier.domain.reason_help import explain, provider_for
from mailcarrier.services.figures import BOUNCED, BUCKETS, figures_of
from mailcarrier.services.report_rollups import as_date, unfolded_bounce_groups, unfolded_domain_groups
from mailcarrier.storage.report_tables import bounce_rollup, domain_rollup
from mailcarrier.storage.tables import UTCDateTime, activities, contacts, deliveries, mailings
from mailcarrier.storage.tracking_tables import tracking_hits

__all__ = [
    "BounceReport",
    "Engagement",
    "MailingRate",
    "MailingSummary",
    "RecipientRow",
    "ResponsePage",
    "Thresholds",
    "bounce_report",
    "domain_trend",
    "list_mailings",
    "mailing_recipients",
    "rate_level",
    "report_thresholds",
    "response_page",
]

MAILING_LISTS = ("test", "in_progress", "automated", "sent")



@dataclass(frozen=True, slots=True)
class Thresholds:
    """Hard-bounce rate levels of a mailing (warn at 2 %, alert at 5 %)."""

    warn: float = 0.02
    alert: float = 0.05
    soft_bounce_mailings_to_error: int = 3


def report_thresholds(settings: Settings) -> Thresholds:
    """The thresholds configured by the operator; ConfigurationError if warn exceeds alert."""
    if settings.reports.hard_bounce_warn > settings.reports.hard_bounce_alert:
        raise ConfigurationError(
            f"MAILCARRIER_REPORT_HARD_BOUNCE_WARN ({settings.reports.hard_bounce_warn}) must not exceed "
            f"MAILCARRIER_REPORT_HARD_BOUNCE_ALERT ({settings.reports.hard_bounce_alert})")
    return Thresholds(warn=settings.reports.hard_bounce_warn, alert=settings.reports.hard_bounce_alert,
                      soft_bounce_mailings_to_error=settings.contacts.status_soft_bounce_mailings)


def rate_level(rate: float, thresholds: Thresholds) -> str:
    """``ok``, ``warn`` or ``alert`` for a hard-bounce rate."""
    if rate >= thresholds.alert:
        return "alert"
    if rate >= thresholds.warn:
        return "warn"
    return "ok"


@dataclass(frozen=True, slots=True)
class Engagement:
    """Unique contacts who opened/clicked, people and machines apart, and opt-outs."""

    opens_human: int = 0
    opens_machine: int = 0
    clicks_human: int = 0
    clicks_machine: int = 0
    unsubscribes: int = 0
    complaints: int = 0


@dataclass(frozen=True, slots=True)
class ReasonCount:
    reason: str
    category: int | None
    count: int
    explanation: str


@dataclass(frozen=True, slots=True)
class DomainCount:
    domain: str
    bounced: int
    hard: int
    suspected_filtering: int


@dataclass(frozen=True, slots=True)
class ResponsePage:
    """Seed 003's response page for one mailing."""

    mailing_id: int
    name: str
    kind: str
    state: str
    subject: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    recipients: int
    buckets: dict[str, int]
    attempted: int
    hard_bounce_rate: float
    hard_bounce_level: str
    bounced_by_category: dict[int, int]
    top_reasons: list[ReasonCount]
    top_domains: list[DomainCount]
    next_attempt_at: datetime | None
    outcome_unknown: int
    suspected_filtering: int
    engagement: Engagement
    #: The headline figures under the names every surface uses (``services.figures``).
    figures: dict[str, object] = field(default_factory=dict)

    @property
    def reconciles(self) -> bool:
        """Every recipient is in exactly one bucket, and the bounce breakdown adds up."""
        bounced = self.buckets["bounced_hard"] + self.buckets["bounced_soft"]
        return sum(self.buckets.values()) == self.recipients and \
            sum(self.bounced_by_category.values()) == bounced


@dataclass(frozen=True, slots=True)
class MailingSummary:
    id: int
    name: str
    kind: str
    state: str
    subject: str
    created_at: datetime
    recipients: int
    delivered: int
    bounced: int
    in_progress: int


@dataclass(frozen=True, slots=True)
class RecipientRow:
    delivery_id: int
    contact_id: int
    email: str
    state: str
    attempt_count: int
    reason: str | None
    category: int | None
    reply_code: int | None
    next_attempt_at: datetime | None
    suspected_filtering: bool
    #: seed 001: "hard" (categories 1, 2) or "soft" (3, 4, 9) for a bounced recipient
    bounce_type: str | None = None
    #: seed 001's "Email Invalid": category 2 only
    address_invalid: bool = False


@dataclass(frozen=True, slots=True)
class MailingRate:
    mailing_id: int
    name: str
    attempted: int
    bounced_hard: int
    rate: float
    level: str


@dataclass(frozen=True, slots=True)
class NearThreshold:
    contact_id: int
    email: str
    consecutive_soft_bounces: int
    threshold: int
    last_bounce_reason: str | None
    last_bounce_at: datetime | None


@dataclass(frozen=True, slots=True)
class BounceReport:
    """Seed 001's "Bounce House" for one account over a period."""

    since: date
    until: date
    total: int
    by_day: list[dict[str, Any]]
    by_day_reason: list[dict[str, Any]]
    by_category: dict[int, int]
    by_reason: list[ReasonCount]
    by_domain: list[DomainCount]
    by_provider: list[dict[str, Any]]
    filtering_domains: list[DomainCount]
    near_threshold: list[NearThreshold]
    mailing_rates: list[MailingRate]
    thresholds: dict[str, float] = field(default_factory=dict)


# --- response page -----------------------------------------------------------------------

def _mailing_row(conn: Connection, account_id: int, mailing_id: int) -> Any:
    row = conn.execute(select(mailings).where(mailings.c.id == mailing_id,
                                              mailings.c.account_id == account_id)).one_or_none()
    if row is None:
        raise NotFoundError(f"no mailing {mailing_id} in this account")
    return row


def response_page(engine: Engine, account_id: int, mailing_id: int,
                  thresholds: Thresholds = Thresholds(), *, top: int = 10) -> ResponsePage:
    """The response page of one of the account's mailings; NotFoundError otherwise."""
    d = deliveries.c
    with engine.connect() as conn:
        m = _mailing_row(conn, account_id, mailing_id)
        figures = figures_of(conn, account_id, [mailing_id])[mailing_id]
        where = and_(d.mailing_id == mailing_id, d.account_id == account_id)
        bounced_where = and_(where, d.state.in_(BOUNCED))
        domains = [DomainCount(dom, int(n), int(hard or 0), int(filt or 0)) for dom, n, hard, filt in
                   conn.execute(select(d.domain, func.count(),
                                       func.sum(case((d.state == "bounced_hard", 1), else_=0)),
                                       func.sum(case((d.suspected_filtering == True, 1),  # noqa: E712
                                                     else_=0)))
                                .where(bounced_where).group_by(d.domain)
                                .order_by(func.count().desc(), d.domain).limit(top))]
        next_attempt = conn.execute(select(type_coerce(func.min(d.next_attempt_at), UTCDateTime()))
                                    .where(where, d.state.in_(("queued", "in_progress")))).scalar()
        engagement = _engagement(conn, account_id, mailing_id)
    rate = figures.hard_bounce_rate
    top_reasons = [ReasonCount(r, c, n, explain(r))
                   for (r, c), n in list(figures.bounced_by_reason_category.items())[:top]]
    return ResponsePage(
        mailing_id=m.id, name=m.name, kind=m.kind, state=m.state, subject=m.subject,
        created_at=m.created_at, started_at=m.started_at, finished_at=m.finished_at,
        recipients=figures.recipients, buckets=dict(figures.buckets), attempted=figures.sent,
        hard_bounce_rate=rate, hard_bounce_level=rate_level(rate, thresholds),
        bounced_by_category=dict(figures.bounced_by_category), top_reasons=top_reasons,
        top_domains=domains, next_attempt_at=next_attempt, outcome_unknown=figures.outcome_unknown,
        suspected_filtering=figures.suspected_filtering, engagement=engagement,
        figures=figures.headline())


def _engagement(conn: Connection, account_id: int, mailing_id: int) -> Engagement:
    """Unique contacts who opened/clicked: people (any hit judged human) and machines only.

    Hits come from ``tracking_hits`` with their verdicts; a contact with both a scanner hit
    and a person's hit counts once, as a person. Opt-outs come from the activity history.
    """
    h, a = tracking_hits.c, activities.c
    per_contact = (select(h.kind, h.contact_id,
                          func.max(case((h.verdict == "human", 1), else_=0)).label("human"))
                   .where(h.account_id == account_id, h.mailing_id == mailing_id,
                          h.token_valid == True, h.contact_id.is_not(None))  # noqa: E712
                   .group_by(h.kind, h.contact_id).subquery())
    counts: Counter[tuple[str, bool]] = Counter()
    for kind, human, n in conn.execute(
            select(per_contact.c.kind, per_contact.c.human, func.count())
            .group_by(per_contact.c.kind, per_contact.c.human)):
        counts[(kind, bool(human))] += int(n)
    for kind, n in conn.execute(
            select(a.type, func.count(func.distinct(a.contact_id)))
            .where(a.account_id == account_id, a.mailing_id == mailing_id,
                   a.type.in_(("unsubscribe", "complaint"))).group_by(a.type)):
        counts[(kind, True)] += int(n)
    return Engagement(
        opens_human=counts[("open", True)], opens_machine=counts[("open", False)],
        clicks_human=counts[("click", True)], clicks_machine=counts[("click", False)],
        unsubscribes=counts[("unsubscribe", True)], complaints=counts[("complaint", True)])


def mailing_recipients(engine: Engine, account_id: int, mailing_id: int, *,
                       bucket: str | None = None, after_id: int = 0,
                       limit: int = 100) -> list[RecipientRow]:
    """The mailing's recipients (optionally one bucket), by delivery id, ``limit`` after ``after_id``."""
    if bucket is not None and bucket not in BUCKETS:
        raise InvalidInputError(f"unknown bucket {bucket!r}; choose one of {', '.join(BUCKETS)}")
    d = deliveries.c
    with engine.connect() as conn:
        _mailing_row(conn, account_id, mailing_id)
        query = (select(d.id, d.contact_id, d.email, d.state, d.attempt_count, d.last_reason,
                        d.last_category, d.last_reply_code, d.next_attempt_at,
                        d.suspected_filtering)
                 .where(d.mailing_id == mailing_id, d.account_id == account_id, d.id > after_id)
                 .order_by(d.id).limit(max(1, min(limit, 1000))))
        if bucket is not None:
            query = query.where(d.state == bucket)
        return [RecipientRow(r.id, r.contact_id, r.email, r.state, r.attempt_count, r.last_reason,
                             r.last_category, r.last_reply_code, r.next_attempt_at,
                             bool(r.suspected_filtering),
                             *(bounce_labels(r.last_reason, r.last_category)
                               if r.state.startswith("bounced") else (None, False)))
                for r in conn.execute(query)]


def list_mailings(engine: Engine, account_id: int, which: str, *, before_id: int | None = None,
                  limit: int = 50) -> list[MailingSummary]:
    """Seed 003's lists: ``test``, ``in_progress``, ``automated`` or ``sent`` mailings, newest first."""
    m = mailings.c
    conditions = {
        "test": m.kind == "test",
        "automated": m.kind == "automated",
        "in_progress": and_(m.kind == "regular", m.state.in_(("sending", "paused"))),
        "sent": and_(m.kind == "regular", m.state.in_(("done", "cancelled"))),
    }
    if which not in conditions:
        raise InvalidInputError(f"unknown list {which!r}; choose one of {', '.join(MAILING_LISTS)}")
    query = (select(m.id, m.name, m.kind, m.state, m.subject, m.created_at)
             .where(m.account_id == account_id, conditions[which])
             .order_by(m.id.desc()).limit(max(1, min(limit, 1000))))
    if before_id is not None:
        query = query.where(m.id < before_id)
    with engine.connect() as conn:
        rows = list(conn.execute(query))
        figures = figures_of(conn, account_id, [r.id for r in rows])
    out = []
    for r in rows:
        f = figures[r.id]
        # "in progress" on a list means not final yet: queued or with a retry pending
        out.append(MailingSummary(r.id, r.name, r.kind, r.state, r.subject, r.created_at, f.recipients,
                                  f.delivered, f.bounced, f.open))
    return out


# --- bounce report -----------------------------------------------------------------------

def bounce_report(engine: Engine, account_id: int, *, since: date, until: date,
                  thresholds: Thresholds = Thresholds(), top: int = 20) -> BounceReport:
    """Bounces of the account between ``since`` and ``until`` (inclusive days, UTC).

    Read-only, so a GET never writes: the folded rollups plus the bounces above the fold's
    watermark grouped on the fly (:func:`_daily_groups`), exact however far the fold lags.
    """
    if until < since:
        raise InvalidInputError("the report period ends before it starts")
    with engine.connect() as conn:
        daily = list(conn.execute(_daily_groups(conn.dialect.name, account_id, since, until)))
        domain_rows = list(conn.execute(_domain_groups(conn.dialect.name, account_id, since, until)))
        near = _near_threshold(conn, account_id, thresholds, top)
        rates = _mailing_rates(conn, account_id, thresholds, since, until, top)
    by_day: dict[tuple[date, int], int] = Counter()
    by_day_reason: dict[tuple[date, int, str], int] = Counter()
    by_category: Counter[int] = Counter()
    reasons: Counter[tuple[str, int]] = Counter()
    for day, _kind, raw_category, raw_reason, n in daily:
        # the fold's normalisation, for the unfolded rows (folded ones already have it)
        category, reason = int(raw_category or 9), raw_reason or "undefined"
        by_day[(as_date(day), int(category))] += int(n)
        by_day_reason[(as_date(day), int(category), reason)] += int(n)
        by_category[int(category)] += int(n)
        reasons[(reason, int(category))] += int(n)
    domains: dict[str, list[int]] = {}
    providers: dict[str, dict[str, Any]] = {}
    for raw_dom, raw_mta, n, hard, filt in domain_rows:
        dom, mta = raw_dom or "", (raw_mta or "")[:255]
        acc = domains.setdefault(dom, [0, 0, 0])
        acc[0] += int(n)
        acc[1] += int(hard or 0)
        acc[2] += int(filt or 0)
        provider = provider_for(mta or None, dom or None)
        key = provider.name if provider else (mta or "unknown MX")
        entry = providers.setdefault(key, {"provider": key, "bounces": 0,
                                           "postmaster": provider.postmaster if provider else None})
        entry["bounces"] += int(n)
    domain_counts = sorted((DomainCount(k, *v) for k, v in domains.items()),
                           key=lambda x: (-x.bounced, x.domain))
    return BounceReport(
        since=since, until=until, total=sum(by_category.values()),
        by_day=[{"day": d.isoformat(), "category": cat, "count": n}
                for (d, cat), n in sorted(by_day.items())],
        by_day_reason=[{"day": d.isoformat(), "category": cat, "reason": reason, "count": n}
                       for (d, cat, reason), n in sorted(by_day_reason.items())],
        by_category=dict(sorted(by_category.items())),
        by_reason=[ReasonCount(reason, cat, n, explain(reason))
                   for (reason, cat), n in reasons.most_common(top)],
        by_domain=domain_counts[:top],
        by_provider=sorted(providers.values(), key=lambda p: (-p["bounces"], p["provider"]))[:top],
        filtering_domains=[x for x in sorted(domain_counts, key=lambda x: (-x.suspected_filtering,
                                                                             x.domain))
                           if x.suspected_filtering][:top],
        near_threshold=near, mailing_rates=rates,
        thresholds={"warn": thresholds.warn, "alert": thresholds.alert,
                    "soft_bounce_mailings_to_error": thresholds.soft_bounce_mailings_to_error})


def _daily_groups(dialect: str, account_id: int, since: date, until: date) -> Select[Any]:
    """Bounces per day, kind, category and reason: folded rollups and unfolded tail, one statement.

    One statement is one snapshot (PostgreSQL's READ COMMITTED and SQLite alike), so a fold
    committing meanwhile is seen either wholly or not at all: never counted twice or missed.
    """
    b = bounce_rollup.c
    folded = select(b.day, b.kind, b.category, b.reason, b.count).where(
        b.account_id == account_id, b.day >= since, b.day <= until)
    t = unfolded_bounce_groups(dialect, account_id, since, until).subquery()
    both = union_all(folded, select(t.c.day, t.c.kind, t.c.category, t.c.reason, t.c.count)).subquery()
    return (select(both.c.day, both.c.kind, both.c.category, both.c.reason, func.sum(both.c.count))
            .group_by(both.c.day, both.c.kind, both.c.category, both.c.reason))


def _domain_rows(dialect: str, account_id: int, since: date, until: date) -> Any:
    """Per-day bounces per domain and MX: folded rollups and unfolded tail (a subquery)."""
    r = domain_rollup.c
    folded = select(r.day, r.domain, r.remote_mta, r.bounces, r.hard, r.filtered).where(
        r.account_id == account_id, r.day >= since, r.day <= until)
    t = unfolded_domain_groups(dialect, account_id, since, until).subquery()
    return union_all(folded, select(t.c.day, t.c.domain, t.c.remote_mta, t.c.bounces, t.c.hard,
                                    t.c.filtered)).subquery()


def _domain_groups(dialect: str, account_id: int, since: date, until: date) -> Select[Any]:
    both = _domain_rows(dialect, account_id, since, until).c
    return (select(both.domain, both.remote_mta, func.sum(both.bounces), func.sum(both.hard),
                   func.sum(both.filtered)).group_by(both.domain, both.remote_mta))


def _near_threshold(conn: Connection, account_id: int, thresholds: Thresholds,
                    top: int) -> list[NearThreshold]:
    """Active contacts one soft-bounced mailing away from ``error``."""
    c = contacts.c
    limit = thresholds.soft_bounce_mailings_to_error
    floor = max(1, limit - 1)
    query = (select(c.id, c.email, c.consecutive_soft_bounces, c.last_bounce_reason, c.last_bounce_at)
             .where(c.account_id == account_id, c.consecutive_soft_bounces >= floor,
                    c.consecutive_soft_bounces < limit, c.status == "active")
             .order_by(c.consecutive_soft_bounces.desc(), c.id).limit(top))
    return [NearThreshold(r.id, r.email, r.consecutive_soft_bounces, limit, r.last_bounce_reason,
                          r.last_bounce_at) for r in conn.execute(query)]


def _mailing_rates(conn: Connection, account_id: int, thresholds: Thresholds, since: date,
                   until: date, top: int) -> list[MailingRate]:
    """Hard-bounce rate of the account's mailings created in the period, newest first.

    The rate is the response page's (``services.figures``): the recipients whose final state
    is a hard bounce (late bounces included) among those attempted. It used to divide the
    bounce rollup's count by the recipients at send time, and disagreed with the page.
    """
    m = mailings.c
    start = datetime.combine(since, datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(until + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    chosen = list(conn.execute(select(m.id, m.name).where(
        m.account_id == account_id, m.kind != "test", m.created_at >= start, m.created_at < end)
        .order_by(m.id.desc()).limit(top)))
    figures = figures_of(conn, account_id, [r.id for r in chosen])
    out = []
    for r in chosen:
        f = figures[r.id]
        out.append(MailingRate(r.id, r.name, f.sent, f.bounced_hard, f.hard_bounce_rate,
                               rate_level(f.hard_bounce_rate, thresholds)))
    return out


def domain_trend(engine: Engine, account_id: int, *, since: date, until: date,
                 top: int = 5) -> dict[str, dict[date, int]]:
    """Bounces per day of the ``top`` receiving domains with the most bounces in the period.

    Read-only, like :func:`bounce_report`: the per-domain rollup plus the unfolded tail.
    Days without bounces are absent and read as zero.
    """
    if until < since:
        raise InvalidInputError("the report period ends before it starts")
    with engine.connect() as conn:
        dialect = conn.dialect.name
        both = _domain_rows(dialect, account_id, since, until).c
        domain = func.coalesce(both.domain, "")
        leaders = [dom for dom, _n in conn.execute(
            select(domain, func.sum(both.bounces)).group_by(domain)
            .order_by(func.sum(both.bounces).desc(), domain).limit(max(1, top)))]
        trend: dict[str, dict[date, int]] = {dom: {} for dom in leaders}
        if leaders:
            both = _domain_rows(dialect, account_id, since, until).c
            domain = func.coalesce(both.domain, "")
            for dom, day, n in conn.execute(
                    select(domain, both.day, func.sum(both.bounces)).where(domain.in_(leaders))
                    .group_by(domain, both.day)):
                key = as_date(day)
                trend[dom][key] = trend[dom].get(key, 0) + int(n)
    return trend
