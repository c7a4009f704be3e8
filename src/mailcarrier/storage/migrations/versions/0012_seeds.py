"""what the seeds promise (issue 18): account contact policy and thresholds, the
suspected-filtering hold on contacts, automated-mailing triggers, rendered subjects

* ``accounts.contact_policy``: 'marketo' (seed 001, default) or 'emma' (seed 003), what a
  hard bounce does to a contact; ``accounts.thresholds``: the account's own thresholds
  (JSON; empty object: the operator's settings);
* ``contacts.suspected_filtering``: a "user unknown" that looked like B2B gateway filtering
  holds the contact until a user confirms or releases it;
* ``mailings.trigger``: 'audience_join' or 'api' for automated mailings sent one contact
  at a time;
* ``deliveries.subject``: the subject as the recipient received it (rendered), for the
  delivery evidence.

All columns are added with defaults (or nullable), so existing rows need no rewrite.

Revision ID: 0012_seeds
Revises: 0011_linear_history
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012_seeds'
down_revision = '0011_linear_history'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("contact_policy", sa.String(16), nullable=False,
                                        server_default="marketo"))
    op.add_column("accounts", sa.Column("thresholds", sa.JSON(), nullable=False,
                                        server_default="{}"))
    op.add_column("contacts", sa.Column("suspected_filtering", sa.Boolean(), nullable=False,
                                        server_default="0"))
    op.add_column("mailings", sa.Column("trigger", sa.String(16), nullable=True))
    op.add_column("deliveries", sa.Column("subject", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch_op:
        batch_op.drop_column("subject")
    with op.batch_alter_table("mailings") as batch_op:
        batch_op.drop_column("trigger")
    with op.batch_alter_table("contacts") as batch_op:
        batch_op.drop_column("suspected_filtering")
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.drop_column("thresholds")
        batch_op.drop_column("contact_policy")
