"""activity history without foreign keys on its hot path; deletions cascade through triggers

Every delivery outcome appends an ``activities`` row in the contact event writer's
transaction. On PostgreSQL each foreign key of an appended row is checked by a look-up that
also locks the parent row (``FOR KEY SHARE``): for the contact and account keys that tripled
the cost of the append (COPY of 5,000 rows: ~56k rows/s with the keys, ~160k without). The
writer has just read and locked the contact, in the same transaction, so the keys checked
nothing it did not already know. What the keys also did, cascading a deletion of a contact
or an account to its history, is kept by triggers on ``contacts`` and ``accounts``, on both
backends. The mailing and delivery keys stay (NULL on most appends, and ``SET NULL`` on
delete is their point).

Revision ID: 0009_activity_keys
Revises: 0001_base
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = '0009_activity_keys'
down_revision = '0001_base'
branch_labels = None
depends_on = None

_KEYS = (("fk_activities_account_id_accounts", "accounts", "account_id"),
         ("fk_activities_contact_id_contacts", "contacts", "contact_id"))

# PostgreSQL: statement-level triggers with transition tables, so deleting an account's
# million contacts runs one DELETE on the history, not a million.
_PG_UP = (
    """CREATE FUNCTION mailcarrier_drop_contact_activities() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM activities WHERE contact_id IN (SELECT id FROM gone);
    RETURN NULL;
END $$""",
    """CREATE TRIGGER contacts_drop_activities AFTER DELETE ON contacts
REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
EXECUTE FUNCTION mailcarrier_drop_contact_activities()""",
    """CREATE FUNCTION mailcarrier_drop_account_activities() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM activities WHERE account_id IN (SELECT id FROM gone);
    RETURN NULL;
END $$""",
    """CREATE TRIGGER accounts_drop_activities AFTER DELETE ON accounts
REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
EXECUTE FUNCTION mailcarrier_drop_account_activities()""",
)
_PG_DOWN = (
    "DROP TRIGGER IF EXISTS accounts_drop_activities ON accounts",
    "DROP FUNCTION IF EXISTS mailcarrier_drop_account_activities()",
    "DROP TRIGGER IF EXISTS contacts_drop_activities ON contacts",
    "DROP FUNCTION IF EXISTS mailcarrier_drop_contact_activities()",
)
_SQLITE_UP = (
    """CREATE TRIGGER contacts_drop_activities AFTER DELETE ON contacts
BEGIN DELETE FROM activities WHERE contact_id = OLD.id; END""",
    """CREATE TRIGGER accounts_drop_activities AFTER DELETE ON accounts
BEGIN DELETE FROM activities WHERE account_id = OLD.id; END""",
)
_SQLITE_DOWN = (
    "DROP TRIGGER IF EXISTS accounts_drop_activities",
    "DROP TRIGGER IF EXISTS contacts_drop_activities",
)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("activities") as batch:
        for name, _table, _column in _KEYS:
            batch.drop_constraint(name, type_="foreignkey")
    for statement in _PG_UP if postgres else _SQLITE_UP:
        op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in _PG_DOWN if postgres else _SQLITE_DOWN:
        op.execute(statement)
    with op.batch_alter_table("activities") as batch:
        for name, table, column in _KEYS:
            batch.create_foreign_key(name, table, [column], ["id"], ondelete="CASCADE")
