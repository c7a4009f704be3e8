"""One vocabulary across the commands: exit statuses, --format, --account, --once."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from mailcarrier.cli import main as cli_main
from mailcarrier.cli.exit_codes import ExitCode, describe_all, epilog
from mailcarrier.cli.options import next_step

CLI_DIR = Path(cli_main.__file__).parent
runner = CliRunner()


def _help(*argv: str) -> str:
    shown = runner.invoke(cli_main.app, [*argv, "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    return shown.stdout


def test_exit_statuses_are_distinct_and_each_is_described() -> None:
    values = [int(code) for code in ExitCode]
    assert len(set(values)) == len(values)
    assert ExitCode.USAGE == 2  # what Click itself returns for a bad command line
    text = describe_all()
    for code in ExitCode:
        assert re.search(rf"^{int(code)}  \S", text, re.MULTILINE), code
    assert epilog(ExitCode.PARTIAL).startswith("Exit status: 4 ")


def test_commands_exit_only_through_the_shared_statuses() -> None:
    """A literal ``typer.Exit(2)`` is how 2 came to mean both "refused" and "partial import"."""
    offenders = [f"{path.name}: {line.strip()}" for path in sorted(CLI_DIR.glob("*.py"))
                 for line in path.read_text(encoding="utf-8").splitlines()
                 if re.search(r"\bExit\(\s*\d", line)]
    assert offenders == []


def test_commands_with_rarer_statuses_say_so_in_their_help() -> None:
    expected = {("contacts", "import"): ExitCode.PARTIAL, ("bounces", "import"): ExitCode.PARTIAL,
                ("bounce", "parse"): ExitCode.PARTIAL, ("pools", "apply"): ExitCode.REFUSED,
                ("domains", "check"): ExitCode.CHECK_FAILED, ("mailings", "check"): ExitCode.CHECK_FAILED,
                ("pools", "dnsbl-check"): ExitCode.CHECK_FAILED, ("mailings", "send"): ExitCode.REFUSED,
                ("report", "mailing"): ExitCode.INCONSISTENT}
    for argv, code in expected.items():
        assert f"Exit status: {int(code)} " in _help(*argv), argv


def test_format_account_and_once_are_spelled_alike() -> None:
    for argv in (("domains", "check"), ("mailings", "check"), ("pools", "evaluate"), ("evidence",),
                 ("mailings", "list"), ("mailings", "show"), ("report", "mailing"), ("report", "bounces"),
                 ("bounces", "list"), ("bounce", "parse"), ("classify",)):
        assert "--format" in _help(*argv), argv
    assert "--json" not in _help("domains", "check")  # the old flag is hidden, still accepted
    for argv in (("mailings", "create"), ("mailings", "send"), ("contacts", "import"), ("report", "bounces"),
                 ("audiences", "list"), ("evidence",), ("mailings", "check")):
        assert "MAILCARRIER_ACCOUNT" in _help(*argv), argv
    assert "--once" in _help("worker") and "--until-idle" not in _help("worker")
    assert "--once" in _help("webhooks", "run")


def test_next_step_quotes_and_masks() -> None:
    assert next_step("mailings", "send", "3", account="my shop") == \
        "mailcarrier mailings send 3 --account 'my shop'"
    assert next_step("db", "upgrade", database_url="postgresql+psycopg://mc:s3cret@db:5432/mc") == \
        "mailcarrier db upgrade --database-url 'postgresql+psycopg://mc:***@db:5432/mc'"
    assert next_step("db", "upgrade", database_url="sqlite:///x.db") == \
        "mailcarrier db upgrade --database-url sqlite:///x.db"
