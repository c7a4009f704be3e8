"""Read-side views of an account's resources for the API, dashboard and CLI.

Each function takes ``account_id`` and filters by it, so an id belonging to another
account reads as "not found" — never as someone else's data. Lists are keyset-paginated:
they return up to ``limit + 1`` rows after ``after_id`` so the caller can tell whether a
next page exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.sql.elements import ColumnElement

from mailcarrier.domain.bounce_labels import bounce_labels
from mailcarrier.domain.errors import InvalidInputError, NotFoundError
from mailcarrier.domain.reason_help import explain, provider_for
from mailcarrier.storage.tables import (
    activities,
    attempts,
    audience_members,
    audiences,
    contacts,
    deliveries,
    mailings,
)
from mailcarrier.storage.tracking_tables import tracking_hits

__all__ = [
    "ActivityView",
    "AttemptView",
    "AudienceView",
    "BounceView",
    "ContactSegment",
    "ContactView",
    "DeliveryView",
    "HitView",
    "contact_history",
    "contact_hits",
    "count_contacts",
    "export_rows",
    "get_audience",
    "get_contact",
    "get_delivery",
    "iter_contacts",
    "list_audiences",
    "list_bounces",
    "list_contacts",
    "mailing_content",
]

CONTACT_STATUSES = ("active", "error", "opted_out", "pending")


@dataclass(frozen=True, slots=True)
class AudienceView:
    id: int
    name: str
    description: str
    created_at: datetime
    members: int


@dataclass(frozen=True, slots=True)
class ContactView:
    id: int
    email: str
    first_name: str
    last_name: str
    status: str
    email_invalid: bool
    consecutive_soft_bounces: int
    consecutive_blocks: int
    total_bounces: int
    last_bounce_at: datetime | None
    last_bounce_category: int | None
    last_bounce_reason: str | None
    last_bounce_explanation: str | None
    last_bounce_reply_code: int | None
    last_bounce_diagnostic: str | None
    last_delivered_at: datetime | None
    last_engaged_at: datetime | None
    status_changed_at: datetime | None
    created_at: datetime
    #: held as suspected B2B filtering: a user confirms (invalid) or releases (real) it
    suspected_filtering: bool = False
    #: the latest bounce's type in seed 001's sense: "hard" (categories 1, 2) or "soft"
    last_bounce_type: str | None = None


@dataclass(frozen=True, slots=True)
class ContactSegment:
    """Seed 001's filters on bounce data: the contact's status and latest bounce (category,
    reason, when) and the suspected-filtering hold. Unset fields do not filter."""

    status: str | None = None
    audience_id: int | None = None
    email: str | None = None
    bounce_category: int | None = None
    bounce_reason: str | None = None
    bounced_since: datetime | None = None
    bounced_until: datetime | None = None
    email_invalid: bool | None = None
    suspected_filtering: bool | None = None
    #: Part of the address or of the name, any case (the dashboard's search box).
    search: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptView:
    number: int
    started_at: datetime
    ended_at: datetime | None
    return_path: str | None
    local_ip: str | None
    remote_ip: str | None
    mx_host: str | None
    tls_version: str | None
    reply_code: int | None
    enhanced_status: str | None
    reply_text: str | None
    queue_id: str | None
    internal_code: int | None
    reason: str | None
    category: int | None
    outcome: str
    #: seed 001: "hard" (categories 1, 2) or "soft" (3, 4, 9); None when not a bounce
    bounce_type: str | None = None
    #: seed 001's "Email Invalid": category 2 only
    address_invalid: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryView:
    id: int
    mailing_id: int
    contact_id: int
    email: str
    state: str
    attempt_count: int
    next_attempt_at: datetime | None
    last_reason: str | None
    last_category: int | None
    last_reply_code: int | None
    outcome_unknown: bool
    suspected_filtering: bool
    delivered_at: datetime | None
    attempts: list[AttemptView]
    #: seed 001: "hard" (categories 1, 2) or "soft" (3, 4, 9); None when not a bounce
    bounce_type: str | None = None
    #: seed 001's "Email Invalid": category 2 only
    address_invalid: bool = False


@dataclass(frozen=True, slots=True)
class BounceView:
    id: int
    contact_id: int
    email: str
    mailing_id: int | None
    delivery_id: int | None
    type: str
    occurred_at: datetime
    reason: str | None
    category: int | None
    reply_code: int | None
    enhanced_status: str | None
    diagnostic: str | None
    remote_mta: str | None
    explanation: str
    provider: str | None
    postmaster: str | None
    #: seed 001: "hard" (categories 1, 2) or "soft" (3, 4, 9); None when not a bounce
    bounce_type: str | None = None
    #: seed 001's "Email Invalid": category 2 only
    address_invalid: bool = False


def _contact(r: Any) -> ContactView:
    return ContactView(
        r.id, r.email, r.first_name, r.last_name, r.status, bool(r.email_invalid),
        r.consecutive_soft_bounces, r.consecutive_blocks, r.total_bounces, r.last_bounce_at,
        r.last_bounce_category, r.last_bounce_reason,
        explain(r.last_bounce_reason) if r.last_bounce_reason else None, r.last_bounce_reply_code,
        r.last_bounce_diagnostic, r.last_delivered_at, r.last_engaged_at, r.status_changed_at,
        r.created_at, bool(r.suspected_filtering),
        bounce_labels(r.last_bounce_reason, r.last_bounce_category)[0])


def list_audiences(engine: Engine, account_id: int, *, after_id: int, limit: int) -> list[AudienceView]:
    a, m = audiences.c, audience_members.c
    members = (select(func.count()).where(m.audience_id == a.id).scalar_subquery())
    with engine.connect() as conn:
        rows = conn.execute(select(a.id, a.name, a.description, a.created_at, members.label("members"))
                            .where(a.account_id == account_id, a.id > after_id)
                            .order_by(a.id).limit(limit + 1))
        return [AudienceView(r.id, r.name, r.description, r.created_at, int(r.members)) for r in rows]


def get_audience(engine: Engine, account_id: int, audience_id: int) -> AudienceView:
    a = audiences.c
    with engine.connect() as conn:
        row = conn.execute(select(a.id, a.name, a.description, a.created_at).where(
            a.account_id == account_id, a.id == audience_id)).one_or_none()
        if row is None:
            raise NotFoundError(f"no audience {audience_id} in this account")
        count = conn.execute(select(func.count()).where(
            audience_members.c.audience_id == audience_id)).scalar_one()
    return AudienceView(row.id, row.name, row.description, row.created_at, int(count))


def _segment_conditions(engine: Engine, account_id: int,
                        seg: ContactSegment) -> list[ColumnElement[bool]] | None:
    """The WHERE terms of a segment; None when it can match nothing (a NUL in a text filter)."""
    if "\x00" in (seg.email or "") + (seg.search or "") + (seg.bounce_reason or ""):
        return None  # no stored value has one (and PostgreSQL text cannot)
    c = contacts.c
    where: list[ColumnElement[bool]] = [c.account_id == account_id]
    if seg.status is not None:
        if seg.status not in CONTACT_STATUSES:
            raise InvalidInputError(f"status must be one of {', '.join(CONTACT_STATUSES)}")
        where.append(c.status == seg.status)
    if seg.email is not None:
        where.append(c.email == seg.email.strip().lower())
    if seg.audience_id is not None:
        get_audience(engine, account_id, seg.audience_id)
        where.append(c.id.in_(select(audience_members.c.contact_id).where(
            audience_members.c.audience_id == seg.audience_id)))
    if seg.bounce_category is not None:
        where.append(c.last_bounce_category == seg.bounce_category)
    if seg.bounce_reason is not None:
        where.append(c.last_bounce_reason == seg.bounce_reason.strip().lower())
    if seg.bounced_since is not None:
        where.append(c.last_bounce_at >= seg.bounced_since)
    if seg.bounced_until is not None:
        where.append(c.last_bounce_at < seg.bounced_until)
    if seg.email_invalid is not None:
        where.append(c.email_invalid.is_(seg.email_invalid))
    if seg.suspected_filtering is not None:
        where.append(c.suspected_filtering.is_(seg.suspected_filtering))
    if seg.search and seg.search.strip():
        # LIKE wildcards typed by the user are matched literally.
        term = seg.search.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{term}%"
        if "@" in term:  # an address: names cannot match, so only the address is compared
            where.append(c.email.like(pattern, escape="\\"))
        else:
            where.append(c.email.like(pattern, escape="\\")
                         | func.lower(c.first_name).like(pattern, escape="\\")
                         | func.lower(c.last_name).like(pattern, escape="\\"))
    return where


def list_contacts(engine: Engine, account_id: int, *, after_id: int, limit: int,
                  status: str | None = None, audience_id: int | None = None,
                  email: str | None = None, segment: ContactSegment | None = None) -> list[ContactView]:
    """A page of the account's contacts matching ``segment`` (plus the older keyword filters)."""
    seg = segment or ContactSegment()
    if status is not None:
        seg = replace(seg, status=status)
    if audience_id is not None:
        seg = replace(seg, audience_id=audience_id)
    if email is not None:
        seg = replace(seg, email=email)
    where = _segment_conditions(engine, account_id, seg)
    if where is None:
        return []
    c = contacts.c
    query = select(contacts).where(*where, c.id > after_id)
    with engine.connect() as conn:
        return [_contact(r) for r in conn.execute(query.order_by(c.id).limit(limit + 1))]


def count_contacts(engine: Engine, account_id: int, segment: ContactSegment) -> int:
    """How many of the account's contacts the segment holds."""
    where = _segment_conditions(engine, account_id, segment)
    if where is None:
        return 0
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(contacts).where(*where)).scalar_one())


def iter_contacts(engine: Engine, account_id: int, segment: ContactSegment, *,
                  page: int = 1000) -> Iterator[ContactView]:
    """Every contact of the segment, streamed page by page (exports of any size)."""
    after = 0
    while True:
        rows = list_contacts(engine, account_id, after_id=after, limit=page, segment=segment)
        yield from rows[:page]
        if len(rows) <= page:
            return
        after = rows[page - 1].id


EXPORT_COLUMNS = ("email", "status", "email_invalid", "suspected_filtering", "last_bounce_at",
                  "last_bounce_category", "last_bounce_reason", "last_bounce_reply_code",
                  "last_bounce_diagnostic", "total_bounces", "first_name", "last_name")


def export_rows(contacts_: Iterable[ContactView]) -> Iterator[list[str]]:
    """CSV rows (header first) of an export: the seed-001 bounce fields per contact."""
    yield list(EXPORT_COLUMNS)
    for contact in contacts_:
        row = []
        for name in EXPORT_COLUMNS:
            value = getattr(contact, name)
            row.append("" if value is None else value.isoformat() if isinstance(value, datetime)
                       else str(value).lower() if isinstance(value, bool) else str(value))
        yield row


def get_contact(engine: Engine, account_id: int, contact_id: int) -> ContactView:
    c = contacts.c
    with engine.connect() as conn:
        row = conn.execute(select(contacts).where(c.account_id == account_id,
                                                  c.id == contact_id)).one_or_none()
    if row is None:
        raise NotFoundError(f"no contact {contact_id} in this account")
    return _contact(row)


def get_delivery(engine: Engine, account_id: int, delivery_id: int) -> DeliveryView:
    d, t = deliveries.c, attempts.c
    with engine.connect() as conn:
        r = conn.execute(select(deliveries).where(d.account_id == account_id,
                                                  d.id == delivery_id)).one_or_none()
        if r is None:
            raise NotFoundError(f"no delivery {delivery_id} in this account")
        tried = [AttemptView(a.number, a.started_at, a.ended_at, a.return_path, a.local_ip,
                             a.remote_ip, a.mx_host, a.tls_version, a.reply_code, a.enhanced_status,
                             a.reply_text, a.queue_id, a.internal_code, a.reason, a.category,
                             a.outcome, *bounce_labels(a.reason, a.category))
                 for a in conn.execute(select(attempts).where(t.delivery_id == delivery_id)
                                       .order_by(t.number))]
    return DeliveryView(r.id, r.mailing_id, r.contact_id, r.email, r.state, r.attempt_count,
                        r.next_attempt_at, r.last_reason, r.last_category, r.last_reply_code,
                        bool(r.outcome_unknown), bool(r.suspected_filtering), r.delivered_at, tried,
                        *(bounce_labels(r.last_reason, r.last_category) if r.state.startswith("bounced")
                          else (None, False)))


def list_bounces(engine: Engine, account_id: int, *, after_id: int, limit: int,
                 category: int | None = None, mailing_id: int | None = None,
                 contact_id: int | None = None) -> list[BounceView]:
    """Bounce activities, oldest first by id (so the cursor walks forward)."""
    a = activities.c
    query = (select(activities, contacts.c.email).join(contacts, contacts.c.id == a.contact_id)
             .where(a.account_id == account_id, a.id > after_id,
                    a.type.in_(("hard_bounce", "soft_bounce"))))
    if category is not None:
        query = query.where(a.category == category)
    if mailing_id is not None:
        query = query.where(a.mailing_id == mailing_id)
    if contact_id is not None:
        query = query.where(a.contact_id == contact_id)
    with engine.connect() as conn:
        rows = list(conn.execute(query.order_by(a.id).limit(limit + 1)))
    out = []
    for r in rows:
        provider = provider_for(r.remote_mta, r.email.rpartition("@")[2])
        out.append(BounceView(r.id, r.contact_id, r.email, r.mailing_id, r.delivery_id, r.type,
                              r.occurred_at, r.reason, r.category, r.reply_code, r.enhanced_status,
                              r.diagnostic, r.remote_mta, explain(r.reason),
                              provider.name if provider else None,
                              provider.postmaster if provider else None,
                              *bounce_labels(r.reason, r.category)))
    return out


@dataclass(frozen=True, slots=True)
class ActivityView:
    id: int
    type: str
    occurred_at: datetime
    mailing_id: int | None
    delivery_id: int | None
    reason: str | None
    category: int | None
    reply_code: int | None
    enhanced_status: str | None
    diagnostic: str | None
    remote_mta: str | None
    cause: str | None
    details: dict[str, Any] | None


def contact_history(engine: Engine, account_id: int, contact_id: int, *, before_id: int | None,
                    limit: int, types: tuple[str, ...] = (),
                    category: int | None = None) -> list[ActivityView]:
    """The contact's history, newest first (by id); NotFoundError if not the account's."""
    get_contact(engine, account_id, contact_id)
    a = activities.c
    query = select(activities).where(a.account_id == account_id, a.contact_id == contact_id)
    if before_id:
        query = query.where(a.id < before_id)
    if types:
        query = query.where(a.type.in_(types))
    if category is not None:
        query = query.where(a.category == category)
    with engine.connect() as conn:
        return [ActivityView(r.id, r.type, r.occurred_at, r.mailing_id, r.delivery_id, r.reason,
                             r.category, r.reply_code, r.enhanced_status, r.diagnostic, r.remote_mta,
                             r.cause, r.details)
                for r in conn.execute(query.order_by(a.id.desc()).limit(limit + 1))]


def mailing_content(engine: Engine, account_id: int, mailing_id: int) -> tuple[str, str]:
    """The HTML and text templates of the account's mailing (for test sends)."""
    m = mailings.c
    with engine.connect() as conn:
        row = conn.execute(select(m.html_body, m.text_body).where(
            m.account_id == account_id, m.id == mailing_id)).one_or_none()
    if row is None:
        raise NotFoundError(f"no mailing {mailing_id} in this account")
    return row.html_body, row.text_body


@dataclass(frozen=True, slots=True)
class HitView:
    """One open or click of a contact's message, with the verdict person or machine."""

    id: int
    kind: str
    occurred_at: datetime
    mailing_id: int | None
    delivery_id: int | None
    verdict: str | None
    reasons: list[str]
    user_agent: str
    ip: str


def contact_hits(engine: Engine, account_id: int, delivery_ids: Sequence[int], *,
                 limit: int = 200) -> list[HitView]:
    """Opens and clicks recorded for the given deliveries of the account, newest first.

    Verdicts say who it was: ``human``, ``machine`` (a scanner), ``apple_mpp`` or
    ``privacy_proxy``; unsettled hits have none yet. Hits with an invalid token are left out.
    """
    if not delivery_ids:
        return []
    h = tracking_hits.c
    query = (select(h.id, h.kind, h.occurred_at, h.mailing_id, h.delivery_id, h.verdict, h.reasons,
                    h.user_agent, h.ip)
             .where(h.account_id == account_id, h.delivery_id.in_(list(delivery_ids)),
                    h.token_valid == True)  # noqa: E712
             .order_by(h.id.desc()).limit(limit))
    with engine.connect() as conn:
        return [HitView(r.id, r.kind, r.occurred_at, r.mailing_id, r.delivery_id, r.verdict,
                        [str(x) for x in (r.reasons or [])], r.user_agent, r.ip)
                for r in conn.execute(query)]
