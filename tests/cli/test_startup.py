"""The command line starts without the heavy half of the package.

``mailcarrier --help`` and ``mailcarrier classify`` must answer at once (issue 19): they
may not import the web app, SQLAlchemy, Alembic or the services. Checked on the set of
loaded modules in a fresh interpreter, not on a timing (bench/cli_start.py times it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailcarrier import __version__
from mailcarrier.cli import main as cli_main
from mailcarrier.cli.exit_codes import ExitCode

SRC = Path(cli_main.__file__).resolve().parents[2]
HEAVY = ("fastapi", "starlette", "sqlalchemy", "alembic", "uvicorn", "httpx", "jinja2", "aiosmtplib",
         "aiosmtpd", "dns", "mailcarrier.services", "mailcarrier.storage", "mailcarrier.api",
         "mailcarrier.delivery", "mailcarrier.config")


def _loaded_after(code: str) -> set[str]:
    """Top-level and mailcarrier.* module names loaded by ``code`` in a fresh interpreter."""
    script = (f"import sys, json\n{code}\n"
              "print(json.dumps(sorted(sys.modules)))")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          check=True, timeout=60)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_importing_the_cli_loads_no_web_app_or_database() -> None:
    assert _heavy(_loaded_after("import mailcarrier.cli.main")) == []


def test_help_and_classify_run_without_the_web_app_or_database() -> None:
    runs = ("from mailcarrier.cli.main import app\n"
            "for argv in (['--help'], ['--version'], ['classify', '550 5.1.1 User unknown']):\n"
            "    try:\n"
            "        app(argv, prog_name='mailcarrier')\n"
            "    except SystemExit as stop:\n"
            "        assert stop.code in (0, None), (argv, stop.code)")
    assert _heavy(_loaded_after(runs)) == []


def test_a_database_command_still_loads_what_it_needs() -> None:
    """The check above can fail: a command that needs the database does import SQLAlchemy."""
    runs = ("from mailcarrier.cli.main import app\n"
            "try:\n"
            "    app(['db', 'current', '--help'], prog_name='mailcarrier')\n"
            "except SystemExit:\n"
            "    pass")
    assert "sqlalchemy" in _loaded_after(runs)


@pytest.mark.parametrize("entry", cli_main.COMMANDS, ids=lambda e: e.name)
def test_help_table_matches_the_real_command(entry: cli_main.LazyCommand) -> None:
    """The top-level help lists COMMANDS without importing them: they must not drift apart."""
    real = cli_main.load_command(entry)
    first_line = (real.help or "").strip().split("\n\n")[0].replace("\n", " ")
    assert first_line == entry.help


def test_every_command_module_is_reachable() -> None:
    """A new ``*_cmd`` module is listed in COMMANDS, or used by a listed one (a sub-group)."""
    folder = Path(cli_main.__file__).parent
    modules = {p.stem for p in folder.glob("*_cmd.py")}
    listed = {entry.module for entry in cli_main.COMMANDS}
    assert listed <= modules
    sources = "\n".join((folder / f"{name}.py").read_text(encoding="utf-8") for name in listed)
    orphans = [m for m in modules - listed if f"mailcarrier.cli.{m}" not in sources
               and not re.search(rf"from mailcarrier\.cli import [^\n]*\b{m}\b", sources)]
    assert orphans == []


def test_version_and_help_list_commands_and_exit_codes() -> None:
    runner = CliRunner()
    version = runner.invoke(cli_main.app, ["--version"])
    assert version.exit_code == 0 and version.stdout.strip() == f"mailcarrier {__version__}"
    shown = runner.invoke(cli_main.app, ["--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    for entry in cli_main.COMMANDS:
        assert entry.name in shown.stdout
    for code in ExitCode:
        assert f"{int(code)}  " in shown.stdout
    typo = runner.invoke(cli_main.app, ["mailngs"])
    assert typo.exit_code == ExitCode.USAGE and "mailings" in typo.output
