"""delivery engine: outbox columns (leases, first attempt, crash resend flag, contact-event
outbox), domain back-off counter, and the table of live delivery workers

Revision ID: 0002_delivery
Revises: 0001_base
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_delivery"
down_revision = "0001_base"
branch_labels = None
depends_on = None



def upgrade() -> None:
    op.add_column("deliveries", sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column("deliveries", sa.Column("first_attempt_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("deliveries", sa.Column("resent_after_crash", sa.Boolean(), server_default="0",
                                          nullable=False))
    op.add_column("deliveries", sa.Column("contact_event_pending", sa.Boolean(), server_default="0",
                                          nullable=False))
    op.create_index(op.f("ix_deliveries_lease_until"), "deliveries", ["lease_until"])
    op.create_index(op.f("ix_deliveries_claimed_by"), "deliveries", ["claimed_by"])
    op.create_index(op.f("ix_deliveries_contact_event_pending"), "deliveries", ["contact_event_pending"])
    op.add_column("domain_backoffs", sa.Column("consecutive", sa.Integer(), server_default="0",
                                               nullable=False))
    op.create_table(
        "delivery_workers",
        sa.Column("worker_id", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("worker_id", name=op.f("pk_delivery_workers")),
    )
    op.create_index(op.f("ix_delivery_workers_seen_at"), "delivery_workers", ["seen_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_delivery_workers_seen_at"), table_name="delivery_workers")
    op.drop_table("delivery_workers")
    with op.batch_alter_table("domain_backoffs") as batch:
        batch.drop_column("consecutive")
    op.drop_index(op.f("ix_deliveries_contact_event_pending"), table_name="deliveries")
    op.drop_index(op.f("ix_deliveries_claimed_by"), table_name="deliveries")
    op.drop_index(op.f("ix_deliveries_lease_until"), table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        for name in ("contact_event_pending", "resent_after_crash", "first_attempt_at", "lease_until"):
            batch.drop_column(name)
