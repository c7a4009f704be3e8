"""Consent: double opt-in subscriptions and unsubscribes, with the evidence of each.

Subscribing adds the contact as ``pending`` (or leaves an existing contact's status as it
is) and queues a confirmation message through the normal delivery engine: a one-recipient
``automated`` mailing whose body carries a signed, expiring confirmation link. Confirming
makes the contact ``active`` and records when, from where and through which source.

Unsubscribing (RFC 8058 one-click POST, the confirmation page's button, or the mailto
address) opts the contact out through the contact status policy, once: repeating it
changes nothing. A GET never reaches this module's write paths.
"""

from __future__ import annotations

import html as html_lib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Connection, Engine, select, update

from mailcarrier.config import Settings
from mailcarrier.domain.contact_status import ContactEvent, EventKind, StatusPolicy, Transition
from mailcarrier.domain.errors import MailcarrierError, NotFoundError
from mailcarrier.domain.tracking import TokenPurpose, TrackingToken, decode_token, encode_token
from mailcarrier.domain.vocabulary import ContactStatus
from mailcarrier.services.contacts import ContactEventRecord, apply_events
from mailcarrier.services.tracking.keys import TrackingKeys
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage import contacts as contact_repo
from mailcarrier.storage.engine import write_transaction
from mailcarrier.storage.tables import (
    activities,
    audience_members,
    contacts,
    deliveries,
    mailings,
)
from mailcarrier.storage.tracking_tables import consent_records, pending_subscriptions

__all__ = [
    "ConfirmOutcome",
    "InvalidSubscriptionError",
    "OptOutOutcome",
    "SubscribeOutcome",
    "SubscriptionRequest",
    "SubscriptionResult",
    "UnsubscribeTarget",
    "confirm_subscription",
    "opt_out_by_token",
    "request_subscription",
    "subscription_for_token",
    "unsubscribe_target",
]

SOURCE_FORM = "signup_form"
SOURCE_CONFIRMED = "double_opt_in"


class InvalidSubscriptionError(MailcarrierError, ValueError):
    """The subscription request cannot be accepted (bad address, unknown list)."""


class SubscribeOutcome(StrEnum):
    PENDING = "pending"  #: a confirmation message is on its way
    ALREADY_ACTIVE = "already_active"  #: nothing to do (answered like PENDING to the public)


class ConfirmOutcome(StrEnum):
    CONFIRMED = "confirmed"
    ALREADY_CONFIRMED = "already_confirmed"


class OptOutOutcome(StrEnum):
    OPTED_OUT = "opted_out"
    ALREADY_OPTED_OUT = "already_opted_out"


@dataclass(frozen=True, slots=True)
class SubscriptionRequest:
    email: str
    ip: str
    user_agent: str = ""
    first_name: str = ""
    last_name: str = ""
    audience: str | None = None
    source: str = SOURCE_FORM


@dataclass(frozen=True, slots=True)
class SubscriptionResult:
    outcome: SubscribeOutcome
    contact_id: int
    subscription_id: int | None = None
    confirm_url: str | None = None
    confirmation_mailing_id: int | None = None


@dataclass(frozen=True, slots=True)
class UnsubscribeTarget:
    """What the unsubscribe page shows: the address (partly masked) and whether it is done."""

    masked_email: str
    already_opted_out: bool


def _normalise(raw: str) -> str:
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidSubscriptionError(f"not a valid email address: {exc}") from exc
    local, _, domain = result.normalized.rpartition("@")
    return f"{local}@{domain.encode('idna').decode('ascii')}".lower()


def _mask(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}{'*' * max(len(local) - 1, 1)}@{domain}"


def _from_address(settings: Settings) -> str:
    return settings.api.subscribe_from_address or f"confirm@{settings.delivery.hostname}"


def request_subscription(engine: Engine, settings: Settings, keys: TrackingKeys, account_slug: str,
                         request: SubscriptionRequest, now: datetime) -> SubscriptionResult:
    """Record a subscription request and queue its confirmation message.

    NotFoundError for an unknown account or audience, InvalidSubscriptionError for a bad address.
    """
    email = _normalise(request.email)
    with write_transaction(engine) as conn:
        account = account_repo.account_by_slug(conn, account_slug)
        audience_id = None
        if request.audience:
            audience_id = account_repo.audience_by_name(conn, account.id, request.audience).id
        row = conn.execute(select(contacts.c.id, contacts.c.status).where(
            contacts.c.account_id == account.id, contacts.c.email == email)).one_or_none()
        if row is None:
            contact_id = contact_repo.add_contact(
                conn, account.id, email, now, first_name=request.first_name[:255],
                last_name=request.last_name[:255], consent_source=request.source[:64])
            conn.execute(update(contacts).where(contacts.c.id == contact_id)
                         .values(status=ContactStatus.PENDING.value, status_changed_at=now))
            status = ContactStatus.PENDING.value
        else:
            contact_id, status = int(row.id), str(row.status)
        if audience_id is not None:
            _join_audience(conn, audience_id, contact_id, now)
        if status == ContactStatus.ACTIVE.value:
            return SubscriptionResult(SubscribeOutcome.ALREADY_ACTIVE, contact_id)
        expires = now + timedelta(hours=settings.api.subscribe_confirm_hours)
        subscription_id = int(conn.execute(pending_subscriptions.insert().values(
            account_id=account.id, contact_id=contact_id, audience_id=audience_id, email=email,
            source=request.source[:64], requested_at=now, expires_at=expires, ip=request.ip[:45],
            user_agent=request.user_agent[:1024])).inserted_primary_key[0])  # type: ignore[index]
        _record(conn, account.id, contact_id, audience_id, "subscribe_requested", now, request.ip,
                request.user_agent, request.source, {"subscription_id": subscription_id})
        token = TrackingToken(TokenPurpose.CONFIRM, account.id, 0, subscription_id, 0,
                              int(expires.timestamp()))
        confirm_url = (f"{settings.api.public_url.rstrip('/')}/confirm/"
                       f"{encode_token(token, master_secret=keys.current, key_id=keys.key_id)}")
        mailing_id = _queue_confirmation(conn, settings, account.id, account.name, contact_id, email,
                                         confirm_url, now)
        conn.execute(update(pending_subscriptions).where(pending_subscriptions.c.id == subscription_id)
                     .values(confirmation_mailing_id=mailing_id))
    return SubscriptionResult(SubscribeOutcome.PENDING, contact_id, subscription_id, confirm_url,
                              mailing_id)


def _join_audience(conn: Connection, audience_id: int, contact_id: int, now: datetime) -> None:
    present = conn.execute(select(audience_members.c.contact_id).where(
        audience_members.c.audience_id == audience_id,
        audience_members.c.contact_id == contact_id)).first()
    if present is None:
        conn.execute(audience_members.insert().values(audience_id=audience_id, contact_id=contact_id,
                                                      added_at=now))


def _queue_confirmation(conn: Connection, settings: Settings, account_id: int, account_name: str,
                        contact_id: int, email: str, confirm_url: str, now: datetime) -> int:
    """A one-recipient automated mailing, queued for the delivery engine like any other."""
    from_address = _from_address(settings)
    name = html_lib.escape(account_name)
    link = html_lib.escape(confirm_url, quote=True)
    html_body = (f"<html><body><p>Please confirm that you want to receive email from {name}.</p>"
                 f'<p><a href="{link}">Confirm my subscription</a></p>'
                 "<p>If you did not ask for this, ignore this message: nothing will be sent.</p>"
                 "</body></html>")
    text_body = (f"Please confirm that you want to receive email from {account_name}:\n\n"
                 f"{confirm_url}\n\nIf you did not ask for this, ignore this message.\n")
    mailing_id = int(conn.execute(mailings.insert().values(
        account_id=account_id, name=f"Subscription confirmation for {email}"[:255],
        kind="automated", state="sending", from_address=from_address,
        subject=f"Confirm your subscription to {account_name}"[:500],
        html_body=_raw_template(html_body), text_body=_raw_template(text_body),
        sending_domain=from_address.rpartition("@")[2], created_at=now, started_at=now,
        recipients_total=1)).inserted_primary_key[0])  # type: ignore[index]
    conn.execute(deliveries.insert().values(
        account_id=account_id, mailing_id=mailing_id, contact_id=contact_id, email=email,
        domain=email.rpartition("@")[2], state="queued", next_attempt_at=now))
    return mailing_id


def _raw_template(body: str) -> str:
    """Mailing bodies are Jinja templates: keep this one literal whatever the URL contains."""
    return "{% raw %}" + body.replace("{% endraw %}", "") + "{% endraw %}"


def _record(conn: Connection, account_id: int, contact_id: int, audience_id: int | None, action: str,
            now: datetime, ip: str | None, user_agent: str | None, source: str,
            details: dict[str, Any] | None = None) -> None:
    conn.execute(consent_records.insert().values(
        account_id=account_id, contact_id=contact_id, audience_id=audience_id, action=action,
        occurred_at=now, ip=(ip or "")[:45] or None, user_agent=(user_agent or "")[:1024] or None,
        source=source[:64], details=details))


def _confirm_token(keys: TrackingKeys, text: str, now: datetime) -> TrackingToken | None:
    return decode_token(text, secrets=keys.secrets, purpose=TokenPurpose.CONFIRM,
                        now=int(now.timestamp()))


def subscription_for_token(engine: Engine, keys: TrackingKeys, text: str,
                           now: datetime) -> tuple[str, bool] | None:
    """(masked address, already confirmed) for a valid confirmation token, else None. Reads only."""
    token = _confirm_token(keys, text, now)
    if token is None:
        return None
    with engine.connect() as conn:
        row = conn.execute(select(pending_subscriptions.c.email, pending_subscriptions.c.confirmed_at)
                           .where(pending_subscriptions.c.id == token.delivery_id,
                                  pending_subscriptions.c.account_id == token.account_id)).one_or_none()
    if row is None:
        return None
    return _mask(row.email), row.confirmed_at is not None


def confirm_subscription(engine: Engine, keys: TrackingKeys, text: str, now: datetime, *, ip: str,
                         user_agent: str = "") -> ConfirmOutcome | None:
    """Activate the contact of a valid confirmation token; None if forged, altered or expired."""
    token = _confirm_token(keys, text, now)
    if token is None:
        return None
    with write_transaction(engine) as conn:
        sub = conn.execute(select(pending_subscriptions).where(
            pending_subscriptions.c.id == token.delivery_id,
            pending_subscriptions.c.account_id == token.account_id)).one_or_none()
        if sub is None or sub.expires_at <= now:
            return None
        if sub.confirmed_at is not None:
            return ConfirmOutcome.ALREADY_CONFIRMED
        claimed = conn.execute(update(pending_subscriptions).where(
            pending_subscriptions.c.id == sub.id, pending_subscriptions.c.confirmed_at.is_(None))
            .values(confirmed_at=now, confirmed_ip=ip[:45])).rowcount
        if claimed != 1:
            return ConfirmOutcome.ALREADY_CONFIRMED
        contact = conn.execute(select(contacts.c.status, contacts.c.version).where(
            contacts.c.id == sub.contact_id)).one()
        # Confirming proves the person asked for mail at a working address: whatever the
        # earlier status (pending, opted out, error), the new consent makes the contact active.
        conn.execute(update(contacts).where(contacts.c.id == sub.contact_id).values(
            status=ContactStatus.ACTIVE.value, consent_source=SOURCE_CONFIRMED, consent_at=now,
            consent_ip=ip[:45], email_invalid=False, consecutive_soft_bounces=0,
            consecutive_blocks=0, status_changed_at=now, updated_at=now,
            version=contacts.c.version + 1))
        _record(conn, sub.account_id, sub.contact_id, sub.audience_id, "confirmed", now, ip,
                user_agent, SOURCE_CONFIRMED,
                {"subscription_id": sub.id, "requested_at": sub.requested_at.isoformat(),
                 "requested_ip": sub.ip, "request_source": sub.source})
        if contact.status != ContactStatus.ACTIVE.value:
            conn.execute(activities.insert().values(
                account_id=sub.account_id, contact_id=sub.contact_id, type="status_changed",
                occurred_at=now, cause="double opt-in confirmed",
                details={"from": contact.status, "to": ContactStatus.ACTIVE.value,
                         "by": "double opt-in confirmation", "ip": ip[:45]}))
    return ConfirmOutcome.CONFIRMED


def _unsubscribe_token(keys: TrackingKeys, text: str, now: datetime) -> TrackingToken | None:
    return decode_token(text, secrets=keys.secrets, purpose=TokenPurpose.UNSUBSCRIBE,
                        now=int(now.timestamp()))


def _contact_of(conn: Connection, token: TrackingToken) -> Any:
    return conn.execute(select(contacts.c.id, contacts.c.email, contacts.c.status)
                        .select_from(deliveries.join(contacts, contacts.c.id == deliveries.c.contact_id))
                        .where(deliveries.c.id == token.delivery_id,
                               deliveries.c.mailing_id == token.mailing_id,
                               deliveries.c.account_id == token.account_id)).one_or_none()


def unsubscribe_target(engine: Engine, keys: TrackingKeys, text: str,
                       now: datetime) -> UnsubscribeTarget | None:
    """For the GET page: whom a valid unsubscribe token is for. Never writes anything."""
    token = _unsubscribe_token(keys, text, now)
    if token is None:
        return None
    with engine.connect() as conn:
        row = _contact_of(conn, token)
    if row is None:
        return None
    return UnsubscribeTarget(_mask(row.email), row.status == ContactStatus.OPTED_OUT.value)


def opt_out_by_token(engine: Engine, policy: StatusPolicy, keys: TrackingKeys, text: str,
                     now: datetime, *, ip: str | None, user_agent: str | None,
                     via: str) -> OptOutOutcome | None:
    """Opt the token's contact out (idempotent); None if the token is forged, altered or expired.

    ``via`` names the channel for the history (``one-click``, ``page``, ``mailto``).
    """
    token = _unsubscribe_token(keys, text, now)
    if token is None:
        return None
    found: list[OptOutOutcome | None] = [None]

    def plan(conn: Connection) -> list[ContactEventRecord]:
        # Read in the transaction that writes: two clicks at once opt out (and record) once.
        row = _contact_of(conn, token)
        if row is None:
            found[0] = None
            return []
        if row.status == ContactStatus.OPTED_OUT.value:
            found[0] = OptOutOutcome.ALREADY_OPTED_OUT
            return []
        found[0] = OptOutOutcome.OPTED_OUT
        return [ContactEventRecord(
            account_id=token.account_id, contact_id=int(row.id),
            event=ContactEvent(EventKind.UNSUBSCRIBE, now), mailing_id=token.mailing_id,
            delivery_id=token.delivery_id, cause=f"unsubscribed ({via})",
            details={"via": via, "ip": ip, "user_agent": (user_agent or "")[:256]})]

    def finish(conn: Connection, transitions: list[Transition]) -> None:
        # The consent record commits with the status change, or neither does.
        if found[0] is OptOutOutcome.OPTED_OUT and transitions:
            row = _contact_of(conn, token)
            _record(conn, token.account_id, int(row.id), None, "opted_out", now, ip, user_agent, via,
                    {"mailing_id": token.mailing_id, "delivery_id": token.delivery_id})

    try:
        apply_events(engine, policy, plan, now, finish=finish)
    except NotFoundError:
        return None
    return found[0]
