"""deliveries.recovered_attempts: attempts recorded only because a worker died with the message

``recover_expired`` records an ``unknown`` attempt (internal code 147) for a delivery whose
worker stopped mid-send, so the evidence shows the interrupted try. Those records are not
tries of the recipient's server and must not use up the retry schedule; this counter lets the
worker subtract them.

Revision ID: 0014_recovered_attempts
Revises: 0013_inbound_unverified
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014_recovered_attempts'
down_revision = '0013_inbound_unverified'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('recovered_attempts', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('recovered_attempts')
