"""``mailcarrier rules``: check and list classification rule files."""

from __future__ import annotations

import tomllib
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from mailcarrier.cli.bounce_cmd import iter_inputs
from mailcarrier.cli.exit_codes import ExitCode, epilog
from mailcarrier.domain.bounce import parse_bounce
from mailcarrier.domain.errors import ParseError, RuleFileError
from mailcarrier.domain.evidence import Evidence
from mailcarrier.domain.rule_files import validate_rules_text
from mailcarrier.domain.rule_support import suspects, tally
from mailcarrier.domain.rules_engine import default_rules
from mailcarrier.domain.smtp_reply import SMTPStage, parse_reply

app = typer.Typer(help="Classification rules: validate a rule file, list the shipped rules.",
                  no_args_is_help=True)


@app.command("validate", epilog=epilog(ExitCode.CHECK_FAILED))
def validate(paths: list[Path] = typer.Argument(..., exists=True, dir_okay=False, readable=True)) -> None:
    """Compile rule files of any layout ([[rule]], reasons.toml, a provider file); exit 3 on an error."""
    failed = False
    for path in paths:
        try:
            kind, count = validate_rules_text(path.read_text(encoding="utf-8"), str(path))
        except (RuleFileError, UnicodeDecodeError) as exc:
            typer.echo(f"{path}: {exc}", err=True)
            failed = True
        else:
            typer.echo(f"{path}: {kind} layout, {count} rules OK")
    if failed:
        raise typer.Exit(ExitCode.CHECK_FAILED)


@app.command("list", epilog=epilog(ExitCode.CHECK_FAILED))
def list_rules(
    support: bool = typer.Option(False, "--support", help="Count, per rule, the corpus emails and test "
                                 "replies it decides (needs --corpus and/or --replies)."),
    corpus: list[Path] = typer.Option([], "--corpus", help="Bounce emails: .eml, mbox or directories."),
    replies: Path | None = typer.Option(None, "--replies", exists=True, dir_okay=False,
                                        help="Test replies: TOML [[reply]] tables with stage and reply."),
    check: bool = typer.Option(False, "--check", help="With --support: exit 3 when a text rule decides "
                               "exactly one corpus email and no test reply."),
) -> None:
    """Print the shipped rules in evaluation order, or the evidence behind each (--support)."""
    if not support:
        table = Table("#", "id", "reason", "retry", "scope")
        for index, rule in enumerate(default_rules().rules, 1):
            table.add_row(str(index), rule.id, rule.reason.value,
                          "" if rule.retry is None else str(rule.retry).lower(),
                          rule.scope.value if rule.scope else "")
        Console().print(table)
        return
    rows = tally(_corpus_evidence(corpus), _reply_evidence(replies) if replies else [])
    table = Table("rule", "corpus emails", "test replies", "wording", "examples")
    for row in rows:
        if row.corpus_files or row.test_cases:
            table.add_row(row.rule, str(row.corpus_files), str(row.test_cases), row.wording[:50],
                          ", ".join(row.examples))
    Console(width=max(Console().width, 160)).print(table)
    lonely = suspects(rows)
    used = sum(1 for r in rows if r.corpus_files or r.test_cases)
    typer.echo(f"{used} rules decided something; {sum(1 for r in rows if r.wording)} text rules; "
               f"{len(lonely)} decide a single corpus email and nothing else")
    for row in lonely:
        typer.echo(f"  {row.rule}: {row.wording!r} only {row.examples[0]}")
    if check and lonely:
        raise typer.Exit(ExitCode.CHECK_FAILED)


def _corpus_evidence(paths: list[Path]) -> list[tuple[str, Evidence]]:
    found: list[tuple[str, Evidence]] = []
    for label, raw in iter_inputs(paths):
        if isinstance(raw, str):
            continue
        try:
            report = parse_bounce(raw)
        except ParseError:
            continue
        for record in report.records if report else ():
            if record.evidence is not None:
                found.append((label, record.evidence))
    return found


def _reply_evidence(path: Path) -> list[Evidence]:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
        entries = doc.get("reply", [])
        evidence = []
        for entry in entries:
            stage = SMTPStage(entry.get("stage", "unknown"))
            text = str(entry["reply"])
            action, host = str(entry.get("action", "")), str(entry.get("remote_host", ""))
            evidence.append(Evidence.of_reply(parse_reply(text, stage), action=action, remote_host=host)
                            if text[:3].isdigit() else
                            Evidence(text, None, stage, "smtp", action, remote_host=host))
    except (tomllib.TOMLDecodeError, KeyError, ValueError, ParseError) as exc:
        typer.echo(f"{path}: not a replies file ([[reply]] tables with stage and reply): {exc}", err=True)
        raise typer.Exit(ExitCode.USAGE) from None
    return evidence
