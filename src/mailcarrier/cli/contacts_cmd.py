"""``mailcarrier contacts``: import from CSV, show status and history, reactivate."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import select

from mailcarrier.cli.exit_codes import ExitCode, epilog
from mailcarrier.cli.options import DB_OPTION, account_option
from mailcarrier.config import load_settings
from mailcarrier.domain.errors import MailcarrierError
from mailcarrier.services import contacts as service
from mailcarrier.services.contact_import import import_csv, normalise_address
from mailcarrier.services.policies import status_policy
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage import contacts as contact_repo
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.tables import contacts

app = typer.Typer(help="Contacts: import, status, history, reactivation.", no_args_is_help=True)
ACCOUNT_OPTION = account_option()
ERR = Console(stderr=True)


def _fail(exc: Exception) -> typer.Exit:
    ERR.print(f"[red]error:[/red] {exc}")
    return typer.Exit(ExitCode.FAILED)


@app.command("import", epilog=epilog(ExitCode.PARTIAL))
def import_command(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
    audience: str = typer.Option(..., "--audience", help="Audience name (created if missing)."),
    account: str = ACCOUNT_OPTION,
    database_url: str | None = DB_OPTION,
    show_bad: int = typer.Option(50, help="How many bad rows to list."),
) -> None:
    """Import contacts from a CSV with an 'email' column; other columns become fields."""
    engine = make_engine(load_settings(**({"database_url": database_url} if database_url else {})))
    columns = (TextColumn("importing"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn())
    try:
        with engine.connect() as conn:
            owner = account_repo.account_by_slug(conn, account)
        with Progress(*columns, console=ERR) as progress:
            task = progress.add_task("import", total=file.stat().st_size)
            report = import_csv(engine, owner.id, audience, file, datetime.now(UTC),
                                on_progress=lambda done: progress.update(task, completed=done))
    except (MailcarrierError, ValueError, LookupError, OSError) as exc:
        raise _fail(exc) from exc
    finally:
        engine.dispose()
    out = Console()
    out.print(f"rows read {report.rows_read}, imported {report.rows_imported}, "
              f"duplicates merged {report.duplicates_merged}, rejected {report.bad_count}")
    for bad in report.bad_rows[:show_bad]:
        out.print(f"  line {bad.line}: {bad.reason}", markup=False)
    if report.bad_count:
        raise typer.Exit(ExitCode.PARTIAL)


@app.command("show")
def show_command(address: str, account: str = ACCOUNT_OPTION,
                 limit: int = typer.Option(50, help="History entries to show."),
                 database_url: str | None = DB_OPTION) -> None:
    """Show a contact's status, bounce fields and activity history."""
    engine = make_engine(load_settings(**({"database_url": database_url} if database_url else {})))
    try:
        email = normalise_address(address)
        with engine.connect() as conn:
            owner = account_repo.account_by_slug(conn, account)
            row = conn.execute(select(contacts).where(contacts.c.account_id == owner.id,
                                                      contacts.c.email == email)).one_or_none()
            if row is None:
                raise LookupError(f"no contact {email} in account {account}")
            entries = contact_repo.activity_history(conn, owner.id, row.id,
                                                    contact_repo.ActivityFilter(limit=limit))
    except (MailcarrierError, ValueError, LookupError) as exc:
        raise _fail(exc) from exc
    finally:
        engine.dispose()
    out = Console()
    invalid = " (email invalid)" if row.email_invalid else ""
    out.print(f"[bold]{row.email}[/bold]: {row.status}{invalid}", highlight=False)
    out.print(f"bounces: total {row.total_bounces}, consecutive soft {row.consecutive_soft_bounces}, "
              f"consecutive blocks {row.consecutive_blocks}; last: {row.last_bounce_reason or '-'} "
              f"(category {row.last_bounce_category or '-'}) at {row.last_bounce_at or '-'}",
              markup=False)
    table = Table("when (UTC)", "type", "reason", "cat", "reply", "mailing", "cause / diagnostic")
    for e in entries:
        table.add_row(e.occurred_at.isoformat(), e.type, e.reason or "", str(e.category or ""),
                      " ".join(x for x in (str(e.reply_code or ""), e.enhanced_status or "") if x),
                      str(e.mailing_id or ""), e.cause or e.diagnostic or "")
    out.print(table)


@app.command("reactivate")
def reactivate_command(address: str, reason: str = typer.Option(..., "--reason", help="Why."),
                       account: str = ACCOUNT_OPTION,
                       who: str = typer.Option("", help="Who (default: the OS user)."),
                       database_url: str | None = DB_OPTION) -> None:
    """Restore a contact in error to active, recording who and why."""
    settings = load_settings(**({"database_url": database_url} if database_url else {}))
    engine = make_engine(settings)
    try:
        email = normalise_address(address)
        with engine.connect() as conn:
            owner = account_repo.account_by_slug(conn, account)
            contact_id = contact_repo.contact_id_by_email(conn, owner.id, email)
        if contact_id is None:
            raise LookupError(f"no contact {email} in account {account}")
        transition = service.reactivate(engine, status_policy(settings), owner.id,
                                        contact_id, who=who or getpass.getuser(), why=reason,
                                        now=datetime.now(UTC))
    except (MailcarrierError, ValueError, LookupError) as exc:
        raise _fail(exc) from exc
    finally:
        engine.dispose()
    Console().print(f"{email}: {transition.before.status.value} -> {transition.after.status.value}")
