"""``mailcarrier contacts``: import from CSV, list and export segments by bounce data, show
status and history, reactivate, and decide on contacts held as suspected B2B filtering."""

from __future__ import annotations

import csv
import getpass
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import Engine, select

from mailcarrier.cli.error_kinds import exit_code_for
from mailcarrier.cli.exit_codes import ExitCode, epilog
from mailcarrier.cli.options import DB_OPTION, account_option, cli_settings, next_step
from mailcarrier.domain.contact_status import Transition
from mailcarrier.domain.errors import MailcarrierError, NotFoundError
from mailcarrier.services import account_views as views
from mailcarrier.services import contacts as service
from mailcarrier.services.contact_import import import_csv, normalise_address
from mailcarrier.services.policies import status_policy
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage import contacts as contact_repo
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.tables import contacts

app = typer.Typer(help="Contacts: import, segments and export, status, history, reactivation, "
                       "suspected filtering.", no_args_is_help=True)
ACCOUNT_OPTION = account_option()
ERR = Console(stderr=True)


def _fail(exc: Exception) -> typer.Exit:
    ERR.print(f"[red]error:[/red] {exc}")
    return typer.Exit(exit_code_for(exc))


@app.command("import", epilog=epilog(ExitCode.PARTIAL))
def import_command(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
    audience: str = typer.Option(..., "--audience", help="Audience name (created if missing)."),
    account: str = ACCOUNT_OPTION,
    database_url: str | None = DB_OPTION,
    show_bad: int = typer.Option(50, help="How many bad rows to list."),
) -> None:
    """Import contacts from a CSV with an 'email' column; other columns become fields."""
    engine = make_engine(cli_settings(database_url))
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
    hint = next_step("mailings", "create", "--audience", audience, "--from", "ADDRESS",
                     "--subject", "SUBJECT", "--html", "FILE.html", account=account,
                     database_url=database_url)
    out.print(f"mail them with: {hint}", highlight=False, soft_wrap=True, markup=False)
    if report.bad_count:
        raise typer.Exit(ExitCode.PARTIAL)


@app.command("show")
def show_command(address: str, account: str = ACCOUNT_OPTION,
                 limit: int = typer.Option(50, help="History entries to show."),
                 database_url: str | None = DB_OPTION) -> None:
    """Show a contact's status, bounce fields and activity history."""
    engine = make_engine(cli_settings(database_url))
    try:
        email = normalise_address(address)
        with engine.connect() as conn:
            owner = account_repo.account_by_slug(conn, account)
            row = conn.execute(select(contacts).where(contacts.c.account_id == owner.id,
                                                      contacts.c.email == email)).one_or_none()
            if row is None:
                raise NotFoundError(f"no contact {email} in account {account}")
            entries = contact_repo.activity_history(conn, owner.id, row.id,
                                                    contact_repo.ActivityFilter(limit=limit))
    except (MailcarrierError, ValueError, LookupError) as exc:
        raise _fail(exc) from exc
    finally:
        engine.dispose()
    out = Console()
    invalid = " (email invalid)" if row.email_invalid else ""
    if row.suspected_filtering:
        invalid += (" (held: suspected B2B filtering; `contacts confirm-invalid` or "
                    "`contacts release`)")
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
    _decide(address, reason, account, who, database_url, service.reactivate)


def _day(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), time(0), tzinfo=UTC)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date YYYY-MM-DD", param_hint=option) from None


@app.command("list")
def list_command(
    account: str = ACCOUNT_OPTION,
    status: str | None = typer.Option(None, help="active, error, opted_out or pending."),
    category: int | None = typer.Option(None, "--category", min=1, max=9,
                                        help="Latest bounce category (1, 2, 3, 4, 9)."),
    reason: str | None = typer.Option(None, "--reason", help="Latest bounce reason, e.g. userunknown."),
    since: str | None = typer.Option(None, "--since", help="Latest bounce on or after this day (UTC)."),
    until: str | None = typer.Option(None, "--until", help="Latest bounce on or before this day (UTC)."),
    invalid: bool | None = typer.Option(None, "--invalid/--valid", help="Email invalid or not."),
    suspected: bool | None = typer.Option(None, "--suspected/--not-suspected",
                                          help="Held as suspected B2B filtering or not."),
    audience: str | None = typer.Option(None, "--audience", help="Members of this audience only."),
    export: Path | None = typer.Option(None, "--csv", help="Write the whole segment as CSV to this "
                                                           "file ('-': standard output)."),
    limit: int = typer.Option(100, min=1, help="Rows shown (the CSV export has them all)."),
    database_url: str | None = DB_OPTION,
) -> None:
    """List or export contacts by status and bounce data (seed 001's filters)."""
    until_day = _day(until, "--until")
    segment = views.ContactSegment(
        status=status, bounce_category=category, bounce_reason=reason,
        bounced_since=_day(since, "--since"),
        bounced_until=until_day.replace(hour=23, minute=59, second=59, microsecond=999999)
        if until_day else None, email_invalid=invalid, suspected_filtering=suspected)
    engine = make_engine(cli_settings(database_url))
    try:
        with engine.connect() as conn:
            owner = account_repo.account_by_slug(conn, account)
            if audience is not None:
                segment = views.ContactSegment(**{**{f: getattr(segment, f) for f in
                                                     views.ContactSegment.__dataclass_fields__},
                                                  "audience_id": account_repo.audience_by_name(
                                                      conn, owner.id, audience).id})
        if export is not None:
            count = _export(engine, owner.id, segment, export)
            ERR.print(f"exported {count} contacts")
            return
        rows = views.list_contacts(engine, owner.id, after_id=0, limit=limit, segment=segment)
    except (MailcarrierError, ValueError, OSError) as exc:
        raise _fail(exc) from exc
    finally:
        engine.dispose()
    table = Table("email", "status", "flags", "last bounce (UTC)", "cat", "reason", "diagnostic")
    for c in rows[:limit]:
        flags = ", ".join(f for f, on in (("invalid", c.email_invalid),
                                          ("suspected filtering", c.suspected_filtering)) if on)
        table.add_row(c.email, c.status, flags,
                      c.last_bounce_at.isoformat(timespec="seconds") if c.last_bounce_at else "",
                      str(c.last_bounce_category or ""), c.last_bounce_reason or "",
                      (c.last_bounce_diagnostic or "")[:80])
    Console().print(table)
    if len(rows) > limit:
        ERR.print(f"(first {limit} shown; --limit or --csv for more)")


def _export(engine: Engine, account_id: int, segment: views.ContactSegment, target: Path) -> int:
    count = -1  # the header row
    handle = sys.stdout if str(target) == "-" else target.open("w", newline="", encoding="utf-8")
    try:
        writer = csv.writer(handle)
        for row in views.export_rows(views.iter_contacts(engine, account_id, segment)):
            writer.writerow(row)
            count += 1
    finally:
        if handle is not sys.stdout:
            handle.close()
    return count


def _decide_filtering(address: str, reason: str, account: str, who: str, database_url: str | None,
                      *, confirm: bool) -> None:
    _decide(address, reason, account, who, database_url,
            service.confirm_filtering if confirm else service.release_filtering)


def _decide(address: str, reason: str, account: str, who: str, database_url: str | None,
            act: Callable[..., Transition]) -> None:
    """A user's decision about one contact (reactivate, confirm or release), recorded with who and why."""
    settings = cli_settings(database_url)
    engine = make_engine(settings)
    try:
        email = normalise_address(address)
        with engine.connect() as conn:
            owner = account_repo.account_by_slug(conn, account)
            contact_id = contact_repo.contact_id_by_email(conn, owner.id, email)
        if contact_id is None:
            raise NotFoundError(f"no contact {email} in account {account}")
        transition = act(engine, status_policy(settings), owner.id, contact_id,
                         who=who or getpass.getuser(), why=reason, now=datetime.now(UTC))
    except (MailcarrierError, ValueError, LookupError) as exc:
        raise _fail(exc) from exc
    finally:
        engine.dispose()
    after = transition.after
    Console().print(f"{email}: {transition.before.status.value} -> {after.status.value}"
                    + (" (email invalid)" if after.email_invalid else ""))


@app.command("confirm-invalid")
def confirm_invalid_command(address: str, reason: str = typer.Option(..., "--reason", help="Why."),
                            account: str = ACCOUNT_OPTION,
                            who: str = typer.Option("", help="Who (default: the OS user)."),
                            database_url: str | None = DB_OPTION) -> None:
    """A contact held as suspected filtering really is invalid: error + email invalid."""
    _decide_filtering(address, reason, account, who, database_url, confirm=True)


@app.command("release")
def release_command(address: str, reason: str = typer.Option(..., "--reason", help="Why."),
                    account: str = ACCOUNT_OPTION,
                    who: str = typer.Option("", help="Who (default: the OS user)."),
                    database_url: str | None = DB_OPTION) -> None:
    """A contact held as suspected filtering is a real address: active, counters reset."""
    _decide_filtering(address, reason, account, who, database_url, confirm=False)
