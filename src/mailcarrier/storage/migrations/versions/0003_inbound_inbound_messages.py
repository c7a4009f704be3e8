# ruff: noqa: E501
"""inbound messages: the return path's raw store

Revision ID: 0003_inbound
Revises: 0001_base
Create Date: 2026-11-22 19:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003_inbound'
down_revision = '0001_base'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('inbound_messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=8), nullable=False),
    sa.Column('origin', sa.String(length=1024), server_default='', nullable=False),
    sa.Column('envelope_from', sa.String(length=512), nullable=True),
    sa.Column('envelope_to', sa.JSON(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('truncated', sa.Boolean(), server_default='0', nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('raw', sa.LargeBinary(), nullable=False),
    sa.Column('state', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=True),
    sa.Column('match_method', sa.String(length=16), nullable=True),
    sa.Column('matched_delivery_ids', sa.JSON(), nullable=True),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('duplicate_of', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('claim_token', sa.String(length=32), nullable=True),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("state IN ('pending', 'processed', 'failed', 'unmatched', 'duplicate')", name=op.f('ck_inbound_messages_state')),
    sa.CheckConstraint("source IN ('smtp', 'file', 'imap')", name=op.f('ck_inbound_messages_source')),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_inbound_messages_account_id_accounts'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inbound_messages'))
    )
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_inbound_messages_account_id_state'), ['account_id', 'state'], unique=False)
        batch_op.create_index(batch_op.f('ix_inbound_messages_digest'), ['digest'], unique=False)
        batch_op.create_index(batch_op.f('ix_inbound_messages_state_id'), ['state', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_inbound_messages_state_id'))
        batch_op.drop_index(batch_op.f('ix_inbound_messages_digest'))
        batch_op.drop_index(batch_op.f('ix_inbound_messages_account_id_state'))
    op.drop_table('inbound_messages')
