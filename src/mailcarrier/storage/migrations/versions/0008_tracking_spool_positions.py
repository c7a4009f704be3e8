"""tracking spool positions: how far the hit writer has stored each spool segment

Revision ID: 0008_tracking_spool
Revises: 0001_base
Create Date: 2026-11-22 23:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008_tracking_spool'
down_revision = '0001_base'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tracking_spool_positions',
    sa.Column('segment', sa.String(length=128), nullable=False),
    sa.Column('position', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.PrimaryKeyConstraint('segment', name=op.f('pk_tracking_spool_positions'))
    )


def downgrade() -> None:
    op.drop_table('tracking_spool_positions')
