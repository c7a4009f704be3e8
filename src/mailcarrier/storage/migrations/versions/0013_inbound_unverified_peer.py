"""inbound emails: 'unverified' state, and the SMTP peer's address and HELO name

A bounce matched by recipient address alone (no signed VERP address, no Message-ID of ours)
proves nothing: anyone can mail ``postmaster@`` a list of addresses. Such emails are now stored
as ``unverified`` instead of being applied, so the state constraint gains that value. The
reporting host's IP address and HELO/EHLO name are kept with every email received over SMTP.

Revision ID: 0013_inbound_unverified
Revises: 0012_seeds
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013_inbound_unverified'
down_revision = '0012_seeds'
branch_labels = None
depends_on = None

_OLD = "state IN ('pending', 'processed', 'failed', 'unmatched', 'duplicate')"
_NEW = "state IN ('pending', 'processed', 'failed', 'unmatched', 'duplicate', 'unverified')"


def upgrade() -> None:
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('peer_ip', sa.String(length=45), nullable=True))
        batch_op.add_column(sa.Column('helo', sa.String(length=255), nullable=True))
        batch_op.drop_constraint(batch_op.f('ck_inbound_messages_state'), type_='check')
        batch_op.create_check_constraint(batch_op.f('ck_inbound_messages_state'), _NEW)


def downgrade() -> None:
    op.execute("UPDATE inbound_messages SET state = 'unmatched' WHERE state = 'unverified'")
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_inbound_messages_state'), type_='check')
        batch_op.create_check_constraint(batch_op.f('ck_inbound_messages_state'), _OLD)
        batch_op.drop_column('helo')
        batch_op.drop_column('peer_ip')
