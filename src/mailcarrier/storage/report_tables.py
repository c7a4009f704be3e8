"""Report rollups and report indexes (revision ``0005_reports``).

The bounce report must answer in milliseconds over millions of activities, so bounce
activities are aggregated per day (and per receiving domain/MX) into small tables,
filled incrementally above a watermark on ``activities.id`` (see
:mod:`mailcarrier.services.reports`). The indexes at the end serve report queries on the
base tables; they live here, with the feature that needs them.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Date, ForeignKey, Index, Integer, String, Table, UniqueConstraint

from mailcarrier.storage.tables import contacts, deliveries, metadata

__all__ = ["bounce_rollup", "domain_rollup", "report_watermarks"]

_BIG = BigInteger().with_variant(Integer, "sqlite")

# Report rollups: bounce activities aggregated per day (and per domain/MX), filled
# incrementally from ``activities`` above a watermark.
bounce_rollup = Table(
    "report_bounce_daily", metadata,
    Column("account_id", _BIG, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("day", Date, nullable=False),
    Column("mailing_id", _BIG, nullable=False),  # 0: not tied to a mailing
    Column("kind", String(32), nullable=False),
    Column("category", Integer, nullable=False),
    Column("reason", String(64), nullable=False),
    Column("count", Integer, nullable=False),
    UniqueConstraint("account_id", "day", "mailing_id", "kind", "category", "reason"),
)

domain_rollup = Table(
    "report_bounce_domain", metadata,
    Column("account_id", _BIG, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("day", Date, nullable=False),
    Column("domain", String(255), nullable=False),
    Column("remote_mta", String(255), nullable=False),
    Column("bounces", Integer, nullable=False),
    Column("hard", Integer, nullable=False),
    Column("filtered", Integer, nullable=False),
    UniqueConstraint("account_id", "day", "domain", "remote_mta"),
)

report_watermarks = Table(
    "report_watermarks", metadata,
    Column("name", String(64), primary_key=True),
    Column("last_id", _BIG, nullable=False),
)

# Indexes on base tables that the reports need (created by this feature's revision).
Index("ix_contacts_account_id_consecutive_soft_bounces", contacts.c.account_id,
      contacts.c.consecutive_soft_bounces)
Index("ix_deliveries_mailing_id_outcome_unknown", deliveries.c.mailing_id, deliveries.c.outcome_unknown)
Index("ix_deliveries_account_id_suspected_filtering_domain", deliveries.c.account_id,
      deliveries.c.suspected_filtering, deliveries.c.domain)
