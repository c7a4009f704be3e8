"""Programmatic Alembic set-up (no ``alembic.ini``), so migrations run from the installed package."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

__all__ = ["MIGRATIONS_DIR", "alembic_config", "current_revision", "downgrade", "script_heads", "upgrade"]

#: Called once per revision applied, with its id and the first line of its docstring.
OnRevision = Callable[[str, str], None]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _scripts_config() -> Config:
    """An Alembic config that locates the packaged scripts (enough to read the history)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def alembic_config(engine: Engine) -> Config:
    """An Alembic config whose environment runs on ``engine``'s connections."""
    config = _scripts_config()
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False)
                           .replace("%", "%%"))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head", on_revision: OnRevision | None = None) -> None:
    """Migrate the database behind ``engine`` to ``revision`` (default: the single head).

    ``"head"`` rather than ``"heads"``: Alembic then refuses a history with two heads
    instead of applying both in an order nobody chose (tests/storage/test_migrations.py
    catches a second head before it ships). ``on_revision`` hears of each revision as it
    has run (``mailcarrier db upgrade`` prints them); all of them commit together at the end.
    """
    config = alembic_config(engine)
    if on_revision is not None:
        def applied(*, step: Any, **_: Any) -> None:
            for revision_id in step.up_revision_ids:
                doc = (step.revision_map.get_revision(revision_id).doc or "").strip()
                on_revision(revision_id, doc.splitlines()[0] if doc else "")
        config.attributes["on_version_apply"] = applied
    command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the database behind ``engine`` down to ``revision`` (``"base"``: no tables)."""
    command.downgrade(alembic_config(engine), revision)


def script_heads() -> tuple[str, ...]:
    """The head revisions of the packaged migration scripts: exactly one in a linear history."""
    return tuple(ScriptDirectory.from_config(_scripts_config()).get_heads())


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None if never migrated.

    A database part-way through the branches that revision 0011 joined holds several:
    they are then comma-separated.
    """
    with engine.connect() as conn:
        heads = MigrationContext.configure(conn).get_current_heads()
    return ",".join(sorted(heads)) or None
