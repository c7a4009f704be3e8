"""The base schema, as SQLAlchemy Core tables (the single source of truth for migrations).

Every tenant-owned row carries ``account_id`` so that each query can filter by it.
Timestamps are timezone-aware UTC on both backends (see :class:`UTCDateTime`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

__all__ = [
    "UTCDateTime",
    "accounts",
    "activities",
    "api_keys",
    "attempts",
    "audience_members",
    "audiences",
    "contacts",
    "deliveries",
    "delivery_workers",
    "domain_backoffs",
    "mailings",
    "metadata",
]

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware.

    SQLite has no time zone type and hands back naive values; naive input is refused
    rather than guessed, because a wrong offset silently corrupts the evidence trail.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: pass a timezone-aware UTC time")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


def _id() -> Column[int]:
    return Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                  autoincrement=True)


def _account_fk() -> Column[int]:
    return Column("account_id", BigInteger().with_variant(Integer, "sqlite"),
                  ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False)


def _fk(name: str, target: str, *, nullable: bool = False, ondelete: str = "CASCADE") -> Column[int]:
    return Column(name, BigInteger().with_variant(Integer, "sqlite"),
                  ForeignKey(target, ondelete=ondelete), nullable=nullable)


accounts = Table(
    "accounts", metadata, _id(),
    Column("slug", String(64), nullable=False, unique=True),
    Column("name", String(255), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    # Added by revision 0012_seeds: what a hard bounce does to the account's contacts
    # (domain.contact_status.ContactPolicy) and the account's own thresholds (JSON object
    # of setting names to values, e.g. {"max_bounce_rate": 0.11}); empty: the operator's.
    Column("contact_policy", String(16), nullable=False, server_default="marketo"),
    Column("thresholds", JSON, nullable=False, server_default="{}"),
)

api_keys = Table(
    "api_keys", metadata, _id(), _account_fk(),
    Column("name", String(255), nullable=False),
    Column("prefix", String(16), nullable=False, unique=True),
    Column("key_hash", String(128), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("last_used_at", UTCDateTime()),
    Column("revoked_at", UTCDateTime()),
)

audiences = Table(
    "audiences", metadata, _id(), _account_fk(),
    Column("name", String(255), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("account_id", "name"),
)

# On PostgreSQL the table has fillfactor 85 (revision 0007_contacts_fillfactor) so that the
# contact event writer's updates can be HOT; a storage parameter, not part of this metadata.
contacts = Table(
    "contacts", metadata, _id(), _account_fk(),
    Column("email", String(320), nullable=False),
    Column("domain", String(255), nullable=False),
    Column("first_name", String(255), nullable=False, server_default=""),
    Column("last_name", String(255), nullable=False, server_default=""),
    Column("fields", JSON, nullable=False),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("email_invalid", Boolean, nullable=False, server_default="0"),
    Column("consent_source", String(64), nullable=False, server_default="unknown"),
    Column("consent_at", UTCDateTime()),
    Column("consent_ip", String(45)),
    Column("last_bounce_at", UTCDateTime()),
    Column("last_bounce_category", Integer),
    Column("last_bounce_reason", String(64)),
    Column("last_bounce_reply_code", Integer),
    Column("last_bounce_enhanced_status", String(16)),
    Column("last_bounce_diagnostic", Text),
    Column("last_bounce_remote_mta", String(255)),
    Column("last_bounce_mailing_id", BigInteger().with_variant(Integer, "sqlite")),
    Column("consecutive_soft_bounces", Integer, nullable=False, server_default="0"),
    Column("consecutive_blocks", Integer, nullable=False, server_default="0"),
    Column("total_bounces", Integer, nullable=False, server_default="0"),
    Column("last_delivered_at", UTCDateTime()),
    Column("last_engaged_at", UTCDateTime()),
    # Added by revision 0012_seeds: held as suspected B2B filtering until a user decides.
    Column("suspected_filtering", Boolean, nullable=False, server_default="0"),
    Column("status_changed_at", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
    UniqueConstraint("account_id", "email"),
    CheckConstraint("status IN ('active', 'error', 'opted_out', 'pending')", name="status"),
    Index(None, "account_id", "status"),
    Index(None, "account_id", "domain"),
)

audience_members = Table(
    "audience_members", metadata,
    _fk("audience_id", "audiences.id"),
    _fk("contact_id", "contacts.id"),
    Column("added_at", UTCDateTime(), nullable=False),
    UniqueConstraint("audience_id", "contact_id"),
    Index(None, "contact_id"),
)

mailings = Table(
    "mailings", metadata, _id(), _account_fk(),
    _fk("audience_id", "audiences.id", nullable=True, ondelete="SET NULL"),
    Column("name", String(255), nullable=False, server_default=""),
    Column("segment", JSON),
    Column("kind", String(16), nullable=False, server_default="regular"),
    Column("state", String(16), nullable=False, server_default="draft"),
    Column("from_address", String(320), nullable=False),
    Column("from_name", String(255), nullable=False, server_default=""),
    Column("reply_to", String(320)),
    Column("subject", Text, nullable=False),
    Column("html_body", Text, nullable=False, server_default=""),
    Column("text_body", Text, nullable=False, server_default=""),
    Column("sending_domain", String(255), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime()),
    Column("finished_at", UTCDateTime()),
    Column("recipients_total", Integer, nullable=False, server_default="0"),
    Column("suppressed_total", Integer, nullable=False, server_default="0"),
    # Added by revision 0012_seeds: what sends an automated mailing to one contact at a time
    # ('audience_join': a welcome to each new member of its audience; 'api': the trigger
    # endpoint only); NULL for mailings sent once to a whole audience.
    Column("trigger", String(16)),
    CheckConstraint("kind IN ('test', 'regular', 'automated')", name="kind"),
    CheckConstraint("state IN ('draft', 'sending', 'paused', 'cancelled', 'done')", name="state"),
    Index(None, "account_id", "state"),
)

DELIVERY_STATES = ("queued", "in_progress", "delivered", "bounced_hard", "bounced_soft",
                   "suppressed", "failed")

deliveries = Table(
    "deliveries", metadata, _id(), _account_fk(),
    _fk("mailing_id", "mailings.id"),
    _fk("contact_id", "contacts.id"),
    Column("email", String(320), nullable=False),
    Column("domain", String(255), nullable=False),
    Column("state", String(16), nullable=False, server_default="queued"),
    Column("attempt_count", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime()),
    Column("claimed_by", String(128)),
    Column("claim_token", String(64)),
    Column("claimed_at", UTCDateTime()),
    Column("message_id", String(255)),
    Column("return_path", String(512)),
    Column("last_reason", String(64)),
    Column("last_category", Integer),
    Column("last_reply_code", Integer),
    Column("last_enhanced_status", String(16)),
    Column("last_diagnostic", Text),
    Column("outcome_unknown", Boolean, nullable=False, server_default="0"),
    Column("suspected_filtering", Boolean, nullable=False, server_default="0"),
    Column("delivered_at", UTCDateTime()),
    Column("final_at", UTCDateTime()),
    # Added by revision 0002_delivery (the delivery engine's outbox columns).
    Column("lease_until", UTCDateTime()),
    Column("first_attempt_at", UTCDateTime()),
    Column("resent_after_crash", Boolean, nullable=False, server_default="0"),
    # Added by revision 0014_recovered_attempts: attempts recorded by crash recovery (not real
    # tries of the server; they do not use up the retry schedule).
    Column("recovered_attempts", Integer, nullable=False, server_default="0"),
    Column("contact_event_pending", Boolean, nullable=False, server_default="0"),
    # Added by revision 0012_seeds: the subject as this recipient received it (rendered).
    Column("subject", Text),
    UniqueConstraint("mailing_id", "contact_id"),
    CheckConstraint("state IN " + repr(DELIVERY_STATES), name="state"),
    Index(None, "state", "next_attempt_at"),
    Index(None, "mailing_id", "state"),
    Index(None, "account_id", "email"),
    Index(None, "message_id"),
    Index(None, "lease_until"),
    Index(None, "claimed_by"),
    Index(None, "contact_event_pending"),
)

attempts = Table(
    "attempts", metadata, _id(),
    _fk("delivery_id", "deliveries.id"),
    Column("number", Integer, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("ended_at", UTCDateTime()),
    Column("return_path", String(512)),
    Column("local_ip", String(45)),
    Column("remote_ip", String(45)),
    Column("mx_host", String(255)),
    Column("tls_version", String(32)),
    Column("tls_cipher", String(128)),
    Column("dialogue", Text),
    Column("reply_code", Integer),
    Column("enhanced_status", String(16)),
    Column("reply_text", Text),
    Column("queue_id", String(128)),
    Column("internal_code", Integer),
    Column("reason", String(64)),
    Column("category", Integer),
    Column("outcome", String(16), nullable=False),
    UniqueConstraint("delivery_id", "number"),
    CheckConstraint("outcome IN ('delivered', 'deferred', 'bounced', 'unknown')", name="outcome"),
)

# The history's account and contact are plain columns, not foreign keys: every delivery
# outcome appends a row, and PostgreSQL checked each key with a locking look-up of the
# parent row, which tripled the cost of the append (bench/store.py). The writer reads and
# locks the contact in the same transaction, so the contact exists; deleting a contact or an
# account still removes its history, through triggers (revision 0009_activity_keys).
activities = Table(
    "activities", metadata, _id(),
    Column("account_id", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("contact_id", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("type", String(32), nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    _fk("mailing_id", "mailings.id", nullable=True, ondelete="SET NULL"),
    _fk("delivery_id", "deliveries.id", nullable=True, ondelete="SET NULL"),
    Column("reason", String(64)),
    Column("category", Integer),
    Column("reply_code", Integer),
    Column("enhanced_status", String(16)),
    Column("diagnostic", Text),
    Column("remote_mta", String(255)),
    Column("cause", Text),
    Column("details", JSON),
    Index(None, "contact_id", "occurred_at"),
    Index(None, "account_id", "type", "occurred_at"),
    Index(None, "account_id", "category", "occurred_at"),
    Index(None, "mailing_id", "type"),
)

domain_backoffs = Table(
    "domain_backoffs", metadata,
    Column("domain", String(255), primary_key=True),
    Column("until", UTCDateTime(), nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("consecutive", Integer, nullable=False, server_default="0"),
)

# Added by revision 0002_delivery: live delivery workers, so that per-destination connection
# limits can be shared out among them.
delivery_workers = Table(
    "delivery_workers", metadata,
    Column("worker_id", String(128), primary_key=True),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("seen_at", UTCDateTime(), nullable=False),
    Index(None, "seen_at"),
)
