"""Webhook endpoints and their outbox (revision ``0005_webhooks``).

An event is written to ``webhook_outbox`` in the same transaction as whatever caused it
(or right after), and a sender drains the outbox with retries; since the row survives a
restart, a notification is never lost, only delayed.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
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

__all__ = ["webhook_endpoints", "webhook_outbox"]

_BIG = BigInteger().with_variant(Integer, "sqlite")

webhook_endpoints = Table(
    "webhook_endpoints", metadata,
    Column("id", _BIG, primary_key=True, autoincrement=True),
    Column("account_id", _BIG, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("secret", String(128), nullable=False),
    Column("events", JSON, nullable=False),
    Column("active", Boolean, nullable=False, server_default="1"),
    Column("description", Text, nullable=False, server_default=""),
    Column("created_at", UTCDateTime(), nullable=False),
    Index(None, "account_id"),
)

webhook_outbox = Table(
    "webhook_outbox", metadata,
    Column("id", _BIG, primary_key=True, autoincrement=True),
    Column("account_id", _BIG, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("endpoint_id", _BIG, ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
           nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("lease_until", UTCDateTime()),
    Column("delivered_at", UTCDateTime()),
    Column("dead_at", UTCDateTime()),
    Column("last_status", Integer),
    Column("last_error", Text),
    UniqueConstraint("endpoint_id", "event_id"),
    Index(None, "delivered_at", "dead_at", "next_attempt_at"),
    Index(None, "account_id", "created_at"),
)
