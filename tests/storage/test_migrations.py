"""The migrations produce exactly the schema declared in ``tables.py`` on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, select

from mailcarrier.storage import schema, tables
from mailcarrier.storage.migrate import upgrade


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
