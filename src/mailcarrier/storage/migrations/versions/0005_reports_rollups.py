# ruff: noqa: E501
"""report rollups and report indexes

Revision ID: 0005_reports
Revises: 0005_webhooks
Create Date: 2026-11-22 19:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005_reports'
down_revision = '0005_webhooks'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('report_watermarks',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('last_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_report_watermarks'))
    )
    op.create_table('report_bounce_daily',
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('mailing_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('category', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_report_bounce_daily_account_id_accounts'), ondelete='CASCADE'),
    sa.UniqueConstraint('account_id', 'day', 'mailing_id', 'kind', 'category', 'reason', name=op.f('uq_report_bounce_daily_account_id_day_mailing_id_kind_category_reason'))
    )
    op.create_table('report_bounce_domain',
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('domain', sa.String(length=255), nullable=False),
    sa.Column('remote_mta', sa.String(length=255), nullable=False),
    sa.Column('bounces', sa.Integer(), nullable=False),
    sa.Column('hard', sa.Integer(), nullable=False),
    sa.Column('filtered', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_report_bounce_domain_account_id_accounts'), ondelete='CASCADE'),
    sa.UniqueConstraint('account_id', 'day', 'domain', 'remote_mta', name=op.f('uq_report_bounce_domain_account_id_day_domain_remote_mta'))
    )
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.create_index('ix_contacts_account_id_consecutive_soft_bounces', ['account_id', 'consecutive_soft_bounces'], unique=False)

    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_account_id_suspected_filtering_domain', ['account_id', 'suspected_filtering', 'domain'], unique=False)
        batch_op.create_index('ix_deliveries_mailing_id_outcome_unknown', ['mailing_id', 'outcome_unknown'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_mailing_id_outcome_unknown')
        batch_op.drop_index('ix_deliveries_account_id_suspected_filtering_domain')

    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_index('ix_contacts_account_id_consecutive_soft_bounces')

    op.drop_table('report_bounce_domain')
    op.drop_table('report_bounce_daily')
    op.drop_table('report_watermarks')
