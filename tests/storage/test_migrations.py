"""The migrations produce exactly the schema declared in ``tables.py`` on both backends, in one
linear history that downgrades and upgrades again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, select

from mailcarrier.storage import schema, tables
from mailcarrier.storage.migrate import MIGRATIONS_DIR, current_revision, downgrade, script_heads, upgrade


def test_migrations_match_tables(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    with empty_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, schema.metadata)
    assert diff == []
    assert set(schema.metadata.tables) <= set(inspect(empty_engine).get_table_names())


def test_upgrade_is_idempotent(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    upgrade(empty_engine)
    assert "contacts" in inspect(empty_engine).get_table_names()


def test_timestamps_come_back_aware_utc(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    paris = timezone(timedelta(hours=1))
    stamp = datetime(2026, 1, 2, 13, 0, tzinfo=paris)
    with empty_engine.begin() as conn:
        conn.execute(tables.accounts.insert().values(slug="a", name="A", created_at=stamp))
        got = conn.execute(select(tables.accounts.c.created_at)).scalar_one()
    assert got == stamp
    assert got.tzinfo is not None and got.utcoffset() == timedelta(0)
    assert got == datetime(2026, 1, 2, 12, 0, tzinfo=UTC)


# ---- one linear history ---------------------------------------------------------------

# The heads of the history before revision 0011 joined them: databases migrated with
# ``upgrade(engine, "heads")`` before then hold (a subset of) these in alembic_version.
PRE_LINEAR_HEADS = (
    "0002_delivery", "0003_inbound", "0004_tracking", "0005_reports", "0006_pools",
    "0008_tracking_spool", "0009_activity_keys", "0010_contacts_fillfactor_50",
)


def alembic_config_for_scripts() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _schema_diff(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, schema.metadata))


def _user_tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_history_has_exactly_one_head() -> None:
    """A second head means a new revision did not go on top of the last one: rebase it
    (set its ``down_revision`` to the current head) instead of adding a merge."""
    heads = script_heads()
    assert len(heads) == 1, f"migration history has {len(heads)} heads: {sorted(heads)}"


def test_history_is_linear_after_the_join() -> None:
    """Every revision after 0011 has exactly one parent, and only 0011 joins branches."""
    scripts = ScriptDirectory.from_config(alembic_config_for_scripts())
    joins = [rev.revision for rev in scripts.walk_revisions() if rev.is_merge_point]
    assert joins == ["0011_linear_history"]
    chain = []
    rev = scripts.get_revision(script_heads()[0])
    while rev is not None and rev.revision != "0011_linear_history":
        chain.append(rev.revision)
        assert isinstance(rev.down_revision, str), f"{rev.revision} has parents {rev.down_revision}"
        rev = scripts.get_revision(rev.down_revision)
    assert rev is not None, "the head does not descend from 0011_linear_history"


def test_upgrade_downgrade_upgrade_round_trip(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    head = current_revision(empty_engine)
    assert head == script_heads()[0]

    downgrade(empty_engine, "base")
    assert current_revision(empty_engine) is None
    assert _user_tables(empty_engine) == set()

    upgrade(empty_engine)
    assert current_revision(empty_engine) == head
    assert _schema_diff(empty_engine) == []


def test_each_revision_steps_down_and_up_again(empty_engine: Engine) -> None:
    """Every revision on the line (head back to the join) downgrades to its parent and
    upgrades again to the same schema; then the join itself undoes to one of its parents."""
    scripts = ScriptDirectory.from_config(alembic_config_for_scripts())
    upgrade(empty_engine)
    head = current_revision(empty_engine)
    rev = scripts.get_revision(head)
    while rev is not None and isinstance(rev.down_revision, str):
        downgrade(empty_engine, rev.down_revision)
        assert current_revision(empty_engine) == rev.down_revision
        upgrade(empty_engine)
        assert _schema_diff(empty_engine) == []
        downgrade(empty_engine, rev.down_revision)
        rev = scripts.get_revision(rev.down_revision)
    assert rev is not None and rev.revision == "0011_linear_history"
    downgrade(empty_engine, "0009_activity_keys")
    assert "0011_linear_history" not in (current_revision(empty_engine) or "")
    assert "0009_activity_keys" in (current_revision(empty_engine) or "")
    upgrade(empty_engine)
    assert current_revision(empty_engine) == head
    assert _schema_diff(empty_engine) == []


def test_database_at_the_old_heads_upgrades_to_the_single_head(empty_engine: Engine) -> None:
    """A database that the branched history left at all eight heads moves to the join."""
    for head in PRE_LINEAR_HEADS:
        upgrade(empty_engine, head)
    assert current_revision(empty_engine) == ",".join(sorted(PRE_LINEAR_HEADS))

    upgrade(empty_engine)
    assert current_revision(empty_engine) == script_heads()[0]
    assert _schema_diff(empty_engine) == []


def test_database_missing_some_old_branches_gets_them_on_upgrade(empty_engine: Engine) -> None:
    """A database migrated before the later branches existed (no 0008, 0009, 0010) gets
    them applied on the way to the single head."""
    for head in PRE_LINEAR_HEADS[:5]:
        upgrade(empty_engine, head)
    assert "tracking_spool_positions" not in _user_tables(empty_engine)

    upgrade(empty_engine)
    assert current_revision(empty_engine) == script_heads()[0]
    assert "tracking_spool_positions" in _user_tables(empty_engine)
    assert _schema_diff(empty_engine) == []
