"""``mailcarrier rules``: check and list classification rule files."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from mailcarrier.cli.exit_codes import ExitCode, epilog
from mailcarrier.domain.errors import RuleFileError
from mailcarrier.domain.rules_engine import default_rules, validate_rule_file

app = typer.Typer(help="Classification rules: validate a rule file, list the shipped rules.",
                  no_args_is_help=True)


@app.command("validate", epilog=epilog(ExitCode.CHECK_FAILED))
def validate(paths: list[Path] = typer.Argument(..., exists=True, dir_okay=False, readable=True)) -> None:
    """Compile rule files; print the first error of each bad file (and exit 3)."""
    failed = False
    for path in paths:
        try:
            count = validate_rule_file(path)
        except RuleFileError as exc:
            typer.echo(f"{path}: {exc}", err=True)
            failed = True
        else:
            typer.echo(f"{path}: {count} rules OK")
    if failed:
        raise typer.Exit(ExitCode.CHECK_FAILED)


@app.command("list")
def list_rules() -> None:
    """Print the shipped rules in evaluation order."""
    table = Table("#", "id", "reason", "retry", "scope")
    for index, rule in enumerate(default_rules().rules, 1):
        table.add_row(str(index), rule.id, rule.reason.value,
                      "" if rule.retry is None else str(rule.retry).lower(),
                      rule.scope.value if rule.scope else "")
    Console().print(table)
