"""``mailcarrier evidence ADDRESS``: delivery evidence for a recipient's IT department."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console

from mailcarrier.cli.error_kinds import exit_code_for
from mailcarrier.cli.exit_codes import ExitCode
from mailcarrier.cli.options import DB_OPTION, TextFormat, account_option, cli_settings, format_option
from mailcarrier.domain.errors import MailcarrierError
from mailcarrier.services import evidence
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.engine import make_engine

ERR = Console(stderr=True)


def evidence_command(
    address: str = typer.Argument(..., help="The recipient's address."),
    mailing: int | None = typer.Option(None, "--mailing", help="Only this mailing."),
    fmt: TextFormat = format_option(TextFormat.TEXT),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write here (PDF: needed on a tty)."),
    account: str = account_option(),
    database_url: str | None = DB_OPTION,
) -> None:
    """Every attempt with timestamp, return-path, IPs, MX, TLS, reply, queue id and dialogue."""
    engine = make_engine(cli_settings(database_url))
    try:
        with engine.connect() as conn:
            owner = account_repo.account_by_slug(conn, account)
        report = evidence.collect_evidence(engine, owner.id, address, datetime.now(UTC), mailing_id=mailing)
    except (MailcarrierError, ValueError, LookupError) as exc:
        ERR.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(exit_code_for(exc)) from exc
    finally:
        engine.dispose()
    if fmt is TextFormat.PDF:
        data = evidence.to_pdf(report)
    elif fmt is TextFormat.JSON:
        data = (json.dumps(evidence.to_json(report), indent=2) + "\n").encode()
    else:
        data = evidence.to_text(report).encode()
    if output is not None:
        output.write_bytes(data)
        ERR.print(f"wrote {output}")
    elif fmt is TextFormat.PDF and sys.stdout.isatty():
        ERR.print("[red]error:[/red] a PDF needs --output FILE (or a pipe)")
        raise typer.Exit(ExitCode.USAGE)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
