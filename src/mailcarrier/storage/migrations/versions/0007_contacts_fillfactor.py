"""contacts fillfactor 85 on PostgreSQL (room for HOT updates by the contact event writer)

Every delivery outcome rewrites its contact's row (counters, latest bounce, version). On
PostgreSQL a row update that changes no indexed column can stay on its page without touching
any of the table's five indexes (a HOT update) — but only if the page has free space, and a
freshly imported table packs pages full. Leaving 15% free makes most event updates HOT. SQLite
has no such setting; there the writer leaves unchanged indexed columns out of its UPDATE
(storage/contacts.py). A storage parameter is not part of the SQLAlchemy metadata, so the
schema-drift test is unaffected.

Revision ID: 0007_contacts_fillfactor
Revises: 0001_base
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = '0007_contacts_fillfactor'
down_revision = '0001_base'
branch_labels = None
depends_on = None

CONTACTS_FILLFACTOR = 85


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE contacts SET (fillfactor = {CONTACTS_FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE contacts RESET (fillfactor)")
