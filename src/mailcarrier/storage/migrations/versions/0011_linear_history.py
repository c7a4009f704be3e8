"""one history: join the eight per-feature branches, every later revision goes on top

Until this revision each feature branched from 0001_base and ``upgrade`` applied every
head, so the order in which branches altered the base tables was whatever Alembic's
topological walk chose. This revision changes no schema: it names all eight heads as its
parents, so a database at any mix of them (every database that ``mailcarrier db upgrade``
ever produced) reaches this one revision, and from here on the history is a single line.
``tests/storage/test_migrations.py`` fails if a second head appears.

Revision ID: 0011_linear_history
Revises: 0002_delivery, 0003_inbound, 0004_tracking, 0005_reports, 0006_pools,
    0008_tracking_spool, 0009_activity_keys, 0010_contacts_fillfactor_50
Create Date: 2026-12-06
"""

from __future__ import annotations

revision = '0011_linear_history'
down_revision = (
    '0002_delivery',
    '0003_inbound',
    '0004_tracking',
    '0005_reports',
    '0006_pools',
    '0008_tracking_spool',
    '0009_activity_keys',
    '0010_contacts_fillfactor_50',
)
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change: the parents' schemas are disjoint, this only joins them."""


def downgrade() -> None:
    """Nothing to undo: downgrading past here re-opens the eight branches."""
