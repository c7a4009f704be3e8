"""``mailcarrier db upgrade`` / ``db current`` against a real SQLite file."""

from __future__ import annotations

from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from typer.testing import CliRunner

from mailcarrier.cli import db_cmd
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.migrate import MIGRATIONS_DIR


def test_upgrade_creates_schema_and_reports_revision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'mc.db'}"
    runner = CliRunner()
    before = runner.invoke(db_cmd.app, ["current", "--database-url", url])
    assert before.exit_code == 0, before.output
    assert "none" in before.output
    result = runner.invoke(db_cmd.app, ["upgrade", "--database-url", url])
    assert result.exit_code == 0, result.output
    # the history's single head is the revision reported
    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    heads = scripts.get_heads()
    assert len(heads) == 1 and f"revision {heads[0]}" in result.output
    # one line per revision applied, each once, with its title
    applied = [line.split()[1].rstrip(":") for line in result.output.splitlines()
               if line.startswith("  applied ")]
    assert sorted(applied) == sorted(r.revision for r in scripts.walk_revisions())
    assert "  applied 0001_base: base schema" in result.output
    engine = make_engine(url)
    assert {"contacts", "deliveries", "attempts"} <= set(inspect(engine).get_table_names())
    engine.dispose()
    again = runner.invoke(db_cmd.app, ["upgrade", "--database-url", url])
    assert again.exit_code == 0, again.output
    assert "  applied " not in again.output and "already up to date" in again.output
