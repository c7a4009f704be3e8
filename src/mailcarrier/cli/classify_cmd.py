"""``mailcarrier classify``: explain one SMTP reply."""

from __future__ import annotations

import json
from enum import StrEnum

import typer
from rich.console import Console
from rich.table import Table

from mailcarrier.cli.exit_codes import ExitCode
from mailcarrier.domain.classify import Classification, Evidence, classify_internal, classify_reply, explain
from mailcarrier.domain.errors import ParseError
from mailcarrier.domain.smtp_reply import SMTPReply, SMTPStage, parse_reply
from mailcarrier.domain.vocabulary import INTERNAL_CODES


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def classification_json(reply: SMTPReply | None, result: Classification) -> dict[str, object]:
    """The JSON document ``classify --format json`` prints (stable keys)."""
    return {
        "reason": result.reason.value,
        "category": int(result.category),
        "category_name": result.category.label,
        "bounce_type": result.bounce_type.value if result.bounce_type else None,
        "address_invalid": result.address_invalid,
        # Sisimai's "hardbounce", kept for scripts written against earlier versions:
        # the same as address_invalid (the address itself is bad), not the bounce type.
        "hard_bounce": result.hard_bounce,
        "permanent": result.permanent,
        "retry": result.retry,
        "rule": result.rule,
        "scope": result.scope.value,
        "reply_code": reply.code if reply else None,
        "enhanced_status": str(reply.enhanced) if reply and reply.enhanced else None,
        "stage": reply.stage.value if reply else None,
        "internal_code": result.internal_code,
        "outcome_unknown": result.outcome_unknown,
    }


def classify_command(
    reply: str = typer.Argument(..., help="The reply as the server sent it, e.g. '550 5.1.1 User unknown', "
                                "or one of our internal codes (146, 147, 160, ...)."),
    stage: SMTPStage = typer.Option(SMTPStage.UNKNOWN, "--stage", "-s",
                                    help="The SMTP command the reply answered."),
    output: OutputFormat = typer.Option(OutputFormat.TEXT, "--format", "-f", help="text or json."),
    explain_flag: bool = typer.Option(False, "--explain",
                                      help="Print the evidence read, in precedence order, "
                                           "and the rule that decided."),
) -> None:
    """Say why a server refused a message: reason, category 1/2/3/4/9, hard/soft, retry, rule."""
    text = reply.strip()
    parsed: SMTPReply | None = None
    if text.isdigit() and int(text) in INTERNAL_CODES:
        result = classify_internal(int(text))
    else:
        try:
            parsed = parse_reply(text, stage)
        except ParseError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(ExitCode.USAGE) from None
        result = classify_reply(parsed)
    if explain_flag and parsed is not None:
        for name, said in explain(Evidence.of_reply(parsed)):
            typer.echo(f"{name:>26}: {said}")
        return
    doc = classification_json(parsed, result)
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(doc))
        return
    table = Table(show_header=False, box=None)
    for key, value in doc.items():
        if value is not None:
            table.add_row(f"[bold]{key}[/bold]", str(value))
    Console().print(table)
