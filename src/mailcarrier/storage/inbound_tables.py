"""Tables of the return path: every inbound email (bounce, complaint, auto-reply), stored raw.

The raw bytes are written before anything reads them, so a crash or a parser bug loses
nothing and a message can be processed again after a fix (``mailcarrier bounces reprocess``).
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
    LargeBinary,
    String,
    Table,
    Text,
)

from mailcarrier.storage.tables import UTCDateTime, metadata

__all__ = ["INBOUND_KINDS", "INBOUND_SOURCES", "INBOUND_STATES", "MATCH_METHODS", "inbound_messages"]

#: pending: stored, not yet read; processed: matched and acted on; failed: could not be read
#: (error says why); unmatched: read but attributable to no delivery; duplicate: the same
#: email was already received (duplicate_of names the first copy); unverified: matched by
#: recipient address alone, which proves nothing (anyone can mail postmaster@ a list of
#: addresses), so it is shown for review and never applied.
INBOUND_STATES = ("pending", "processed", "failed", "unmatched", "duplicate", "unverified")
INBOUND_KINDS = ("bounce", "delay", "autoreply", "complaint", "unsubscribe", "other")
INBOUND_SOURCES = ("smtp", "file", "imap")
#: token: the signed unsubscribe token of a mail to ``unsubscribe@<bounce domain>``
MATCH_METHODS = ("verp", "message_id", "recipient", "token")

inbound_messages = Table(
    "inbound_messages", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("source", String(8), nullable=False),
    #: the SMTP peer (ip:port), the file path (mbox: path#n) or imap://user@host/folder;uid=n
    Column("origin", String(1024), nullable=False, server_default=""),
    #: SMTP only: the reporting host's IP address and the name it gave in HELO/EHLO
    Column("peer_ip", String(45)),
    Column("helo", String(255)),
    Column("envelope_from", String(512)),
    Column("envelope_to", JSON, nullable=False),
    Column("size", Integer, nullable=False),
    Column("truncated", Boolean, nullable=False, server_default="0"),
    #: SHA-256 of the email without its trace headers: equal for one DSN delivered twice.
    Column("digest", String(64), nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("state", String(16), nullable=False, server_default="pending"),
    Column("kind", String(16)),
    Column("match_method", String(16)),
    Column("matched_delivery_ids", JSON),
    Column("account_id", BigInteger().with_variant(Integer, "sqlite"),
           ForeignKey("accounts.id", ondelete="SET NULL")),
    Column("duplicate_of", BigInteger().with_variant(Integer, "sqlite")),
    Column("error", Text),
    Column("processed_at", UTCDateTime()),
    #: set while one processor reads the row, so two processors never act on the same email
    Column("claim_token", String(32)),
    Column("claimed_at", UTCDateTime()),
    CheckConstraint("state IN " + repr(INBOUND_STATES), name="state"),
    CheckConstraint("source IN " + repr(INBOUND_SOURCES), name="source"),
    Index(None, "state", "id"),
    Index(None, "digest"),
    Index(None, "account_id", "state"),
)
