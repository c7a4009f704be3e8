"""Mailings: create, send (enqueue), pause, resume and cancel (their figures: ``services.figures``).

Creating a mailing validates its Jinja2 templates (sandboxed: no file access, no private
attributes) by rendering them against a sample contact (the audience's first), so template
errors surface at creation; a contact whose own data breaks the template later is marked
``failed`` alone, the rest of the send goes on. Sending enqueues one delivery per contact of
the audience (or segment) with ``INSERT ... SELECT`` in contact-id ranges, so a
million-recipient mailing never sits in memory; contacts that may not be mailed
(``error``, ``opted_out``, ``pending``) get a ``suppressed`` delivery and are counted apart.
Re-running ``send`` after an interruption resumes the enqueue (existing rows are skipped).

Templates are checked, and later rendered, composed and signed, by
:mod:`mailcarrier.services.composition`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, case, func, literal, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from mailcarrier.domain.errors import ConflictError, InvalidInputError, NotFoundError
from mailcarrier.domain.vocabulary import ContactStatus, DeliveryState
from mailcarrier.services.composition import check_templates, template_context
from mailcarrier.storage.engine import write_transaction
from mailcarrier.storage.tables import audience_members, audiences, contacts, deliveries, mailings

__all__ = [
    "KINDS",
    "MARKETING_KINDS",
    "MailingDraft",
    "MailingSummary",
    "Segment",
    "cancel_mailing",
    "create_mailing",
    "get_mailing",
    "list_mailings",
    "pause_mailing",
    "resume_mailing",
    "send_mailing",
]

KINDS = ("test", "regular", "automated")
#: Contacts enqueued per ``INSERT ... SELECT`` statement (by contact-id range).
ENQUEUE_ID_RANGE = 50_000
_SAMPLE = template_context("sample.contact@example.com", "Sample", "Contact", {},
                           "https://example.invalid/u/sample")
_OPEN = (DeliveryState.QUEUED.value, DeliveryState.IN_PROGRESS.value)


@dataclass(frozen=True, slots=True)
class Segment:
    """Narrows the audience: contact statuses to include and field values to match exactly.

    Statuses other than ``active`` may be listed to *count* such contacts as suppressed;
    only active contacts are ever mailed.
    """

    statuses: tuple[str, ...] = ()
    fields: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"statuses": list(self.statuses), "fields": dict(self.fields)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Segment | None:
        if not data:
            return None
        return cls(tuple(data.get("statuses") or ()), dict(data.get("fields") or {}))


@dataclass(frozen=True, slots=True)
class MailingDraft:
    account_id: int
    from_address: str
    subject: str
    html: str = ""
    text: str = ""
    name: str = ""
    from_name: str = ""
    reply_to: str | None = None
    kind: str = "regular"
    audience_id: int | None = None
    segment: Segment | None = None


@dataclass(frozen=True, slots=True)
class MailingSummary:
    id: int
    account_id: int
    name: str
    kind: str
    state: str
    subject: str
    from_address: str
    sending_domain: str
    audience_id: int | None
    recipients_total: int
    suppressed_total: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    #: what sends an automated mailing one contact at a time ('audience_join', 'api'), or None
    trigger: str | None = None


def _sending_domain(address: str) -> str:
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain or any(c in address for c in "\r\n <>"):
        raise InvalidInputError(f"invalid sender address {address!r}")
    return domain.lower()


def create_mailing(engine: Engine, draft: MailingDraft, now: datetime) -> int:
    """Store a draft mailing after checking its templates render for a sample contact.

    The sample is the audience's first contact when there is one, so field types are real;
    a later contact whose data still breaks the template fails alone at send time.
    """
    if draft.kind not in KINDS:
        raise InvalidInputError(f"mailing kind must be one of {', '.join(KINDS)}, not {draft.kind!r}")
    if not draft.html and not draft.text:
        raise InvalidInputError("a mailing needs an HTML or a text body")
    for label, value in (("subject", draft.subject), ("from name", draft.from_name)):
        if "\r" in value or "\n" in value:
            raise InvalidInputError(f"the {label} contains a line break")
    domain = _sending_domain(draft.from_address)
    with write_transaction(engine) as conn:
        if draft.audience_id is not None:
            owner = conn.execute(select(audiences.c.account_id).where(
                audiences.c.id == draft.audience_id)).scalar_one_or_none()
            if owner != draft.account_id:
                raise NotFoundError(f"audience {draft.audience_id} not found in account {draft.account_id}")
        check_templates(draft.subject, draft.html, draft.text, _sample_context(conn, draft))
        result = conn.execute(mailings.insert().values(
            account_id=draft.account_id, audience_id=draft.audience_id, name=draft.name,
            segment=draft.segment.to_json() if draft.segment else None, kind=draft.kind, state="draft",
            from_address=draft.from_address.strip(), from_name=draft.from_name, reply_to=draft.reply_to,
            subject=draft.subject, html_body=draft.html, text_body=draft.text, sending_domain=domain,
            created_at=now))
        return int(result.inserted_primary_key[0])  # type: ignore[index]


def _sample_context(conn: Any, draft: MailingDraft) -> dict[str, Any]:
    """The first contact of the audience (real data, real field types), else a made-up one."""
    query = select(contacts.c.email, contacts.c.first_name, contacts.c.last_name, contacts.c.fields).where(
        contacts.c.account_id == draft.account_id)
    if draft.audience_id is not None:
        query = query.where(contacts.c.id.in_(select(audience_members.c.contact_id).where(
            audience_members.c.audience_id == draft.audience_id)))
    row = conn.execute(query.order_by(contacts.c.id).limit(1)).first()
    if row is None:
        return dict(_SAMPLE)
    return template_context(row.email, row.first_name, row.last_name, row.fields or {},
                            _SAMPLE["unsubscribe_url"])


def _row(engine: Engine, account_id: int, mailing_id: int) -> Any:
    with engine.connect() as conn:
        row = conn.execute(select(mailings).where(
            mailings.c.id == mailing_id, mailings.c.account_id == account_id)).one_or_none()
    if row is None:
        raise NotFoundError(f"mailing {mailing_id} not found in account {account_id}")
    return row


def _summary(row: Any) -> MailingSummary:
    return MailingSummary(row.id, row.account_id, row.name, row.kind, row.state, row.subject,
                          row.from_address, row.sending_domain, row.audience_id, row.recipients_total,
                          row.suppressed_total, row.created_at, row.started_at, row.finished_at,
                          row.trigger)


def get_mailing(engine: Engine, account_id: int, mailing_id: int) -> MailingSummary:
    return _summary(_row(engine, account_id, mailing_id))


def list_mailings(engine: Engine, account_id: int) -> list[MailingSummary]:
    with engine.connect() as conn:
        rows = conn.execute(select(mailings).where(mailings.c.account_id == account_id)
                            .order_by(mailings.c.id)).all()
    return [_summary(r) for r in rows]


def _audience_filter(row: Any) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [contacts.c.account_id == row.account_id]
    if row.audience_id is not None:
        conditions.append(contacts.c.id.in_(select(audience_members.c.contact_id).where(
            audience_members.c.audience_id == row.audience_id)))
    segment = Segment.from_json(row.segment)
    if segment is not None:
        if segment.statuses:
            conditions.append(contacts.c.status.in_(segment.statuses))
        for name, value in segment.fields.items():
            conditions.append(contacts.c.fields[name].as_string() == str(value))
    return conditions


#: Marketing mail: the kinds a sender check (sender hygiene, issue 8) applies to; tests are exempt.
MARKETING_KINDS = ("regular", "automated")


def send_mailing(engine: Engine, account_id: int, mailing_id: int, now: datetime,
                 *, id_range: int = ENQUEUE_ID_RANGE,
                 sender_check: Callable[[Engine, int, str], None] | None = None) -> MailingSummary:
    """Enqueue the mailing's deliveries and start it; safe to re-run after an interruption.

    ``sender_check(engine, account_id, sending_domain)`` runs first for marketing kinds and
    raises to refuse the send (``services.pools.sender_checks.sender_hygiene_gate`` builds the hygiene one);
    nothing is enqueued then, and the mailing stays a draft to send again once fixed.
    """
    row = _row(engine, account_id, mailing_id)
    if row.state not in ("draft",):
        raise ConflictError(f"mailing {mailing_id} is {row.state}; only a draft can be sent")
    if row.kind == "test":
        _check_test_recipients(engine, row)
    if row.kind == "automated" and row.trigger is not None:
        raise ConflictError(f"mailing {mailing_id} is an automated mailing sent by its trigger "
                            f"({row.trigger}), one contact at a time; it is not sent to an audience")
    if sender_check is not None and row.kind in MARKETING_KINDS:
        sender_check(engine, account_id, row.sending_domain)
    conditions = _audience_filter(row)
    with engine.connect() as conn:
        low, high = conn.execute(select(func.min(contacts.c.id), func.max(contacts.c.id))
                                 .where(*conditions)).one()
    if low is not None:
        start = int(low)
        while start <= int(high):
            _enqueue_range(engine, row, conditions, start, start + id_range, now)
            start += id_range
    with write_transaction(engine) as conn:
        by_state: dict[str, int] = dict(conn.execute(
            select(deliveries.c.state, func.count()).where(deliveries.c.mailing_id == mailing_id)
            .group_by(deliveries.c.state)).all())
        suppressed = int(by_state.pop(DeliveryState.SUPPRESSED.value, 0))
        to_send = sum(int(v) for v in by_state.values())
        conn.execute(update(mailings).where(mailings.c.id == mailing_id, mailings.c.state == "draft")
                     .values(state="sending" if to_send else "done", started_at=now,
                             finished_at=None if to_send else now,
                             recipients_total=to_send + suppressed, suppressed_total=suppressed))
    return get_mailing(engine, account_id, mailing_id)


#: A test mailing goes to named addresses only (seed 003: test sends), never to an audience:
#: its audience is the account's test audience, set to exactly the addresses named.
MAX_TEST_RECIPIENTS = 20
TEST_AUDIENCE = "Test recipients"


def _check_test_recipients(engine: Engine, row: Any) -> None:
    """Refuse a test mailing that would go to anything but a handful of named addresses."""
    count, name = 0, None
    if row.audience_id is not None:
        with engine.connect() as conn:
            name = conn.execute(select(audiences.c.name).where(
                audiences.c.id == row.audience_id)).scalar_one_or_none()
            count = int(conn.execute(select(func.count()).where(
                audience_members.c.audience_id == row.audience_id)).scalar_one())
    if name != TEST_AUDIENCE or count > MAX_TEST_RECIPIENTS:
        raise ConflictError(
            f"mailing {row.id} is a test mailing: a test goes only to named addresses (at most "
            f"{MAX_TEST_RECIPIENTS}), never to an audience; create a regular draft and send a test "
            "of it with `mailcarrier mailings test-send ID --to ADDRESS` or POST "
            "/api/v1/mailings/ID/test-send")


def _enqueue_range(engine: Engine, row: Any, conditions: list[ColumnElement[bool]], start: int,
                   stop: int, now: datetime) -> None:
    active = contacts.c.status == ContactStatus.ACTIVE.value
    state = case((active, literal(DeliveryState.QUEUED.value)),
                 else_=literal(DeliveryState.SUPPRESSED.value))
    source = select(
        literal(row.account_id), literal(row.id), contacts.c.id, contacts.c.email, contacts.c.domain,
        state, case((active, literal(now, deliveries.c.next_attempt_at.type)), else_=None),
        case((active, None), else_=literal("suppressed")),
        case((active, None), else_=literal(now, deliveries.c.final_at.type)),
    ).where(*conditions, contacts.c.id >= start, contacts.c.id < stop, true())
    columns = ["account_id", "mailing_id", "contact_id", "email", "domain", "state",
               "next_attempt_at", "last_reason", "final_at"]
    with write_transaction(engine) as conn:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        statement = insert(deliveries).from_select(columns, source).on_conflict_do_nothing(
            index_elements=["mailing_id", "contact_id"])
        conn.execute(statement)


def _set_state(engine: Engine, account_id: int, mailing_id: int, allowed: Sequence[str], state: str,
               now: datetime) -> MailingSummary:
    with write_transaction(engine) as conn:  # read and change under one lock: no lost transition
        row = conn.execute(select(mailings.c.state).where(
            mailings.c.id == mailing_id, mailings.c.account_id == account_id).with_for_update()).one_or_none()
        if row is None:
            raise NotFoundError(f"mailing {mailing_id} not found in account {account_id}")
        if row.state not in allowed:
            raise ConflictError(f"mailing {mailing_id} is {row.state}; cannot become {state}")
        values: dict[str, Any] = {"state": state}
        if state == "cancelled":
            values["finished_at"] = now
        conn.execute(update(mailings).where(mailings.c.id == mailing_id, mailings.c.state == row.state)
                     .values(**values))
        if state == "cancelled":
            # Claimed deliveries finish their current attempt; the worker fails them afterwards.
            conn.execute(update(deliveries).where(
                deliveries.c.mailing_id == mailing_id, deliveries.c.state.in_(_OPEN),
                deliveries.c.claimed_by.is_(None),
            ).values(state=DeliveryState.FAILED.value, last_reason="cancelled", final_at=now,
                     next_attempt_at=None))
    return get_mailing(engine, account_id, mailing_id)


def pause_mailing(engine: Engine, account_id: int, mailing_id: int, now: datetime) -> MailingSummary:
    """Stop claiming new deliveries; attempts already under way finish."""
    return _set_state(engine, account_id, mailing_id, ("sending",), "paused", now)


def resume_mailing(engine: Engine, account_id: int, mailing_id: int, now: datetime) -> MailingSummary:
    return _set_state(engine, account_id, mailing_id, ("paused",), "sending", now)


def cancel_mailing(engine: Engine, account_id: int, mailing_id: int, now: datetime) -> MailingSummary:
    """Give up the mailing: recipients not yet final become ``failed`` (reason ``cancelled``)."""
    return _set_state(engine, account_id, mailing_id, ("draft", "sending", "paused"), "cancelled", now)

