"""Tracking and consent tables (revision ``0004_tracking``).

``tracking_links`` is the only place a click's destination lives: tokens carry the link id,
never the URL, so nothing outside this table decides where a redirect goes.
A hit is *settled* (``settled_at``) once the hold after it has passed: only then does it
count for the contact and reach webhooks, so a scanner burst is recognised first.
``tracking_hits`` keeps every request raw (the evidence behind each verdict), including
requests with invalid tokens, which are stored with no account, mailing or contact so
nothing is attributed to anyone on the strength of a forged link.
``pending_subscriptions`` and ``consent_records`` hold double opt-in: who asked, from
where, and when the confirmation came.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from mailcarrier.storage.tables import UTCDateTime, metadata

__all__ = ["consent_records", "pending_subscriptions", "tracking_hits", "tracking_links"]

_BIG = BigInteger().with_variant(Integer, "sqlite")


def _ref(name: str, target: str, *, nullable: bool = True, ondelete: str = "SET NULL") -> Column[int]:
    return Column(name, _BIG, ForeignKey(target, ondelete=ondelete), nullable=nullable)


tracking_links = Table(
    "tracking_links", metadata,
    Column("id", _BIG, primary_key=True, autoincrement=True),
    _ref("account_id", "accounts.id", nullable=False, ondelete="CASCADE"),
    _ref("mailing_id", "mailings.id", nullable=False, ondelete="CASCADE"),
    Column("number", Integer, nullable=False),
    Column("url", Text, nullable=False),
    Column("url_sha256", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("mailing_id", "url_sha256"),
    UniqueConstraint("mailing_id", "number"),
)

tracking_hits = Table(
    "tracking_hits", metadata,
    Column("id", _BIG, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("method", String(8), nullable=False),
    Column("ip", String(45), nullable=False),
    Column("user_agent", Text, nullable=False, server_default=""),
    Column("headers", JSON, nullable=False),
    Column("token_valid", Boolean, nullable=False),
    _ref("account_id", "accounts.id", ondelete="CASCADE"),
    _ref("mailing_id", "mailings.id", ondelete="CASCADE"),
    _ref("delivery_id", "deliveries.id"),
    _ref("contact_id", "contacts.id"),
    _ref("link_id", "tracking_links.id"),
    Column("verdict", String(16)),
    Column("reasons", JSON),
    Column("upgraded_at", UTCDateTime()),
    Column("settled_at", UTCDateTime()),
    CheckConstraint("kind IN ('open', 'click')", name="kind"),
    CheckConstraint("verdict IN ('human', 'machine', 'apple_mpp', 'privacy_proxy')", name="verdict"),
    Index(None, "mailing_id", "occurred_at"),
    Index(None, "delivery_id", "kind"),
    Index(None, "account_id", "occurred_at"),
    Index(None, "settled_at"),
)

pending_subscriptions = Table(
    "pending_subscriptions", metadata,
    Column("id", _BIG, primary_key=True, autoincrement=True),
    _ref("account_id", "accounts.id", nullable=False, ondelete="CASCADE"),
    _ref("contact_id", "contacts.id", nullable=False, ondelete="CASCADE"),
    _ref("audience_id", "audiences.id"),
    Column("email", String(320), nullable=False),
    Column("source", String(64), nullable=False),
    Column("requested_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("ip", String(45), nullable=False),
    Column("user_agent", Text, nullable=False, server_default=""),
    _ref("confirmation_mailing_id", "mailings.id"),
    Column("confirmed_at", UTCDateTime()),
    Column("confirmed_ip", String(45)),
    Index(None, "account_id", "email"),
)

consent_records = Table(
    "consent_records", metadata,
    Column("id", _BIG, primary_key=True, autoincrement=True),
    _ref("account_id", "accounts.id", nullable=False, ondelete="CASCADE"),
    _ref("contact_id", "contacts.id", nullable=False, ondelete="CASCADE"),
    _ref("audience_id", "audiences.id"),
    Column("action", String(32), nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("ip", String(45)),
    Column("user_agent", Text),
    Column("source", String(64), nullable=False),
    Column("details", JSON),
    CheckConstraint("action IN ('subscribe_requested', 'confirmed', 'opted_out')", name="action"),
    Index(None, "contact_id", "occurred_at"),
)
