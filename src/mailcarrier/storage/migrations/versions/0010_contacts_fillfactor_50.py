"""contacts fillfactor 50 on PostgreSQL: a mailing's outcomes update every row of a page at once

Revision 0007 left 15% of each page free so that event updates stay HOT (no index
entries). That holds for events in no order, one row per page at a time; but the delivery
engine applies a mailing's outcomes in send order, which is contact order: one batch
updates every contact on a page in the same transaction, before any old row version can be
pruned. A page then needs room for a second copy of all its rows, or all but the first few
updates leave the page and write a new entry in each of the table's indexes (the
(account, email) index among them, at a random place). Half-full pages keep them all HOT:
applying 200,000 delivery outcomes in send order went from ~13,800 to ~16,000 events/s on a
1M-contact table (the harness behind bench/store.py), for a table ~65% larger on disk.
The setting applies to pages written from now on; an existing table takes it on its next
rewrite (VACUUM FULL or CLUSTER), which this revision does not force.

Revision ID: 0010_contacts_fillfactor_50
Revises: 0007_contacts_fillfactor
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = '0010_contacts_fillfactor_50'
down_revision = '0007_contacts_fillfactor'
branch_labels = None
depends_on = None

CONTACTS_FILLFACTOR = 50


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE contacts SET (fillfactor = {CONTACTS_FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE contacts SET (fillfactor = 85)")
