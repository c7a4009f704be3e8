"""Tables of the sending-IP feature: pools, IPs, warm-up, reputation events, throttling.

A shared IP carries the reputation of every account on it, so the store keeps enough to
answer "who was on this IP when it was listed?" (``reputation_event_accounts`` copies
the assignment at the time), "how much did this IP send today?" (daily and hourly
counters) and "why is Yahoo suspended on this IP?" (``throttle_actions``, a log that is
never rewritten except to close an action).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from mailcarrier.storage.tables import UTCDateTime, metadata

__all__ = [
    "dnsbl_lookups",
    "ip_daily_volume",
    "ip_hourly_volume",
    "ip_pools",
    "pool_applications",
    "pool_assignments",
    "reputation_event_accounts",
    "reputation_events",
    "sending_ips",
    "throttle_actions",
    "throttle_states",
]

_BIGINT = BigInteger().with_variant(Integer, "sqlite")


def _id() -> Column[int]:
    return Column("id", _BIGINT, primary_key=True, autoincrement=True)


def _fk(name: str, target: str, *, nullable: bool = False, ondelete: str = "CASCADE",
        primary_key: bool = False) -> Column[int]:
    return Column(name, _BIGINT, ForeignKey(target, ondelete=ondelete), nullable=nullable,
                  primary_key=primary_key)


ip_pools = Table(
    "ip_pools", metadata, _id(),
    Column("name", String(64), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("created_at", UTCDateTime(), nullable=False),
    CheckConstraint("kind IN ('shared', 'trusted', 'dedicated')", name="kind"),
)

# One row per source address. Warm-up state lives beside the address because the ramp
# belongs to the IP, whoever sends through it.
sending_ips = Table(
    "sending_ips", metadata, _id(),
    Column("address", String(45), nullable=False, unique=True),
    _fk("pool_id", "ip_pools.id", ondelete="RESTRICT"),
    Column("hostname", String(255), nullable=False, server_default=""),
    Column("enabled", Boolean, nullable=False, server_default="1"),
    Column("warmup_schedule", String(32), nullable=False),
    Column("warmup_day", Integer, nullable=False, server_default="1"),
    Column("warmup_as_of", Date, nullable=False),
    Column("warmup_held", Boolean, nullable=False, server_default="0"),
    Column("last_sent_on", Date),
    Column("created_at", UTCDateTime(), nullable=False),
    Index(None, "pool_id"),
)

# Assignment history: the current assignment is the row with ended_at NULL.
pool_assignments = Table(
    "pool_assignments", metadata, _id(),
    _fk("account_id", "accounts.id"),
    _fk("pool_id", "ip_pools.id", ondelete="RESTRICT"),
    Column("assigned_at", UTCDateTime(), nullable=False),
    Column("ended_at", UTCDateTime()),
    Column("reason", Text, nullable=False, server_default=""),
    Index(None, "account_id", "ended_at"),
    Index(None, "pool_id", "ended_at"),
)

ip_daily_volume = Table(
    "ip_daily_volume", metadata,
    _fk("ip_id", "sending_ips.id", primary_key=True),
    Column("day", Date, primary_key=True),
    Column("sent", Integer, nullable=False, server_default="0"),
    Column("bounced", Integer, nullable=False, server_default="0"),
    Column("complained", Integer, nullable=False, server_default="0"),
)

ip_hourly_volume = Table(
    "ip_hourly_volume", metadata,
    _fk("ip_id", "sending_ips.id", primary_key=True),
    Column("provider", String(32), primary_key=True),
    Column("hour", UTCDateTime(), primary_key=True),
    Column("sent", Integer, nullable=False, server_default="0"),
)

# Spam-trap hits and blocklist listings. ``account_id`` is the account whose mail caused
# it when known; the neighbours on the IP at that moment go to reputation_event_accounts.
reputation_events = Table(
    "reputation_events", metadata, _id(),
    Column("kind", String(16), nullable=False),
    _fk("ip_id", "sending_ips.id", nullable=True, ondelete="SET NULL"),
    Column("ip_address", String(45)),
    _fk("account_id", "accounts.id", nullable=True, ondelete="SET NULL"),
    Column("blocklist", String(255), nullable=False, server_default=""),
    Column("source", String(16), nullable=False),
    Column("evidence", Text, nullable=False, server_default=""),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("recorded_at", UTCDateTime(), nullable=False),
    Column("resolved_at", UTCDateTime()),
    CheckConstraint("kind IN ('trap', 'listing')", name="kind"),
    CheckConstraint("source IN ('manual', 'api', 'bounce', 'dnsbl')", name="source"),
    Index(None, "ip_id", "kind", "occurred_at"),
    Index(None, "account_id", "kind", "occurred_at"),
)

reputation_event_accounts = Table(
    "reputation_event_accounts", metadata,
    _fk("event_id", "reputation_events.id", primary_key=True),
    _fk("account_id", "accounts.id", primary_key=True),
    Index(None, "account_id"),
)

dnsbl_lookups = Table(
    "dnsbl_lookups", metadata, _id(),
    _fk("ip_id", "sending_ips.id"),
    Column("zone", String(255), nullable=False),
    Column("checked_at", UTCDateTime(), nullable=False),
    Column("status", String(8), nullable=False),
    Column("detail", Text, nullable=False, server_default=""),
    CheckConstraint("status IN ('pass', 'fail', 'error')", name="status"),
    Index(None, "ip_id", "zone", "checked_at"),
)

# Automation state per (IP, provider): counted replies of the last hour and the action
# in force, so a restarted worker resumes where the previous one stopped.
throttle_states = Table(
    "throttle_states", metadata,
    _fk("ip_id", "sending_ips.id", primary_key=True),
    Column("provider", String(32), primary_key=True),
    Column("matches", JSON, nullable=False),
    _fk("action_id", "throttle_actions.id", nullable=True, ondelete="SET NULL"),
)

throttle_actions = Table(
    "throttle_actions", metadata, _id(),
    _fk("ip_id", "sending_ips.id"),
    Column("provider", String(32), nullable=False),
    Column("rule", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("until", UTCDateTime(), nullable=False),
    Column("connections", Integer, nullable=False),
    Column("rate_factor", Float, nullable=False),
    Column("trigger", Text, nullable=False, server_default=""),
    Column("ended_at", UTCDateTime()),
    Column("end_reason", String(32)),
    CheckConstraint("kind IN ('suspend', 'slow_down')", name="kind"),
    Index(None, "ip_id", "provider", "started_at"),
)

pool_applications = Table(
    "pool_applications", metadata, _id(),
    _fk("account_id", "accounts.id"),
    Column("kind", String(16), nullable=False),
    Column("state", String(16), nullable=False, server_default="pending"),
    Column("eligible", Boolean, nullable=False),
    Column("reasons", JSON, nullable=False),
    Column("requested_at", UTCDateTime(), nullable=False),
    Column("decided_at", UTCDateTime()),
    Column("decided_by", String(255)),
    Column("note", Text, nullable=False, server_default=""),
    CheckConstraint("kind IN ('shared', 'trusted', 'dedicated')", name="kind"),
    CheckConstraint("state IN ('pending', 'approved', 'refused')", name="state"),
    Index(None, "account_id", "state"),
    UniqueConstraint("account_id", "kind", "requested_at"),
)
