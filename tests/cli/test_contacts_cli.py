"""accounts / audiences / contacts commands end to end on a SQLite file."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from mailcarrier.cli import accounts_cmd, audiences_cmd, contacts_cmd, db_cmd
from mailcarrier.cli.exit_codes import ExitCode

app = typer.Typer()
app.add_typer(db_cmd.app, name="db")
app.add_typer(accounts_cmd.app, name="accounts")
app.add_typer(audiences_cmd.app, name="audiences")
app.add_typer(contacts_cmd.app, name="contacts")


def test_full_flow(tmp_path: Path) -> None:
    url = ["--database-url", f"sqlite:///{tmp_path / 'mc.db'}"]
    run = CliRunner().invoke
    assert run(app, ["db", "upgrade", *url]).exit_code == 0
    assert run(app, ["accounts", "create", "acme", "--name", "Acme", *url]).exit_code == 0
    dup = run(app, ["accounts", "create", "acme", *url])
    assert dup.exit_code == ExitCode.CONFLICT and "already exists" in dup.output
    assert "acme" in run(app, ["accounts", "list", *url]).output
    assert run(app, ["audiences", "create", "news", "--account", "acme", *url]).exit_code == 0
    assert "news" in run(app, ["audiences", "list", "--account", "acme", *url]).output
    csv_file = tmp_path / "c.csv"
    csv_file.write_text("email,first_name\nann@example.com,Ann\nbroken,\n", encoding="utf-8")
    imported = run(app, ["contacts", "import", str(csv_file), "--audience", "news",
                         "--account", "acme", *url])
    assert imported.exit_code == 4, imported.output
    assert "imported 1" in imported.output and "line 3" in imported.output
    shown = run(app, ["contacts", "show", "ANN@example.com", "--account", "acme", *url])
    assert shown.exit_code == 0 and "ann@example.com" in shown.output and "active" in shown.output
    react = run(app, ["contacts", "reactivate", "ann@example.com", "--reason", "checked",
                      "--who", "alice", "--account", "acme", *url])
    assert react.exit_code == 0, react.output
    history = run(app, ["contacts", "show", "ann@example.com", "--account", "acme", *url])
    assert "reactivate" in history.output and "alice" in history.output
    missing = run(app, ["contacts", "show", "zed@example.com", "--account", "acme", *url])
    assert missing.exit_code == ExitCode.NOT_FOUND and "no contact" in missing.output
    other = run(app, ["contacts", "show", "ann@example.com", "--account", "nobody", *url])
    assert other.exit_code == ExitCode.NOT_FOUND
