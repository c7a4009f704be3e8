"""``mailcarrier report``: the response page of a mailing and the bounce report, as Rich tables."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from mailcarrier.cli.error_kinds import exit_code_for
from mailcarrier.cli.exit_codes import ExitCode, epilog
from mailcarrier.cli.options import (
    DB_OPTION,
    TableFormat,
    account_option,
    cli_settings,
    format_option,
    to_json,
)
from mailcarrier.domain.errors import MailcarrierError
from mailcarrier.services import reports
from mailcarrier.services.report_rollups import refresh_rollups
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.engine import make_engine

app = typer.Typer(help="Reports: a mailing's response page, the bounce report.", no_args_is_help=True)
ACCOUNT_OPTION = account_option()
ERR = Console(stderr=True)
_log = logging.getLogger("mailcarrier.reports")


def _fold(engine: Engine) -> None:
    """Fold the bounce rollups first: a command may write, and it keeps the unfolded tail small.

    The report is exact without it (it adds the tail on the fly), so a busy database only
    skips this step.
    """
    try:
        refresh_rollups(engine)
    except OperationalError as error:
        _log.warning("bounce rollups not folded (the report is exact regardless): %s", error)


def _fail(exc: Exception) -> typer.Exit:
    ERR.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
    return typer.Exit(exit_code_for(exc))


@app.command("mailing", epilog=epilog(ExitCode.INCONSISTENT))
def mailing_command(mailing_id: int, account: str = ACCOUNT_OPTION,
                    output: TableFormat = format_option(TableFormat.TABLE),
                    database_url: str | None = DB_OPTION) -> None:
    """The response page of a mailing: every recipient in one bucket, bounces by category."""
    settings = cli_settings(database_url)
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            owner = account_repo.account_by_slug(conn, account)
        page = reports.response_page(engine, owner.id, mailing_id, reports.report_thresholds(settings))
    except (MailcarrierError, ValueError, LookupError) as exc:
        raise _fail(exc) from exc
    finally:
        engine.dispose()
    if output is TableFormat.JSON:
        typer.echo(to_json({"page": page, "reconciles": page.reconciles}))
        if not page.reconciles:
            raise typer.Exit(ExitCode.INCONSISTENT)
        return
    out = Console()
    out.print(f"[bold]{page.name or 'Mailing'} #{page.mailing_id}[/bold] ({page.kind}, {page.state}): "
              f"{page.subject}", highlight=False)
    table = Table("bucket", "recipients", title="Recipients (each in exactly one bucket)")
    for bucket, n in page.buckets.items():
        table.add_row(bucket, str(n))
    table.add_row("[bold]total[/bold]", f"[bold]{page.recipients}[/bold]")
    out.print(table)
    rate = f"{page.hard_bounce_rate:.2%} ({page.hard_bounce_level})"
    out.print(f"sent (attempted) {page.attempted}; hard-bounce rate {rate}; "
              f"outcome unknown {page.outcome_unknown}; suspected filtering {page.suspected_filtering}; "
              f"next attempt {page.next_attempt_at.isoformat() if page.next_attempt_at else '-'}",
              highlight=False)
    cats = Table("category", "bounced", title="Bounces by category")
    for cat, n in page.bounced_by_category.items():
        cats.add_row(str(cat), str(n))
    out.print(cats)
    top = Table("reason", "cat", "count", "meaning", title="Top reasons")
    for r in page.top_reasons:
        top.add_row(r.reason, str(r.category or ""), str(r.count), r.explanation)
    out.print(top)
    e = page.engagement
    out.print(f"opens: {e.opens_human} people, {e.opens_machine} machines; clicks: {e.clicks_human} "
              f"people, {e.clicks_machine} machines; unsubscribes {e.unsubscribes}; "
              f"complaints {e.complaints}", highlight=False)
    if not page.reconciles:
        raise typer.Exit(ExitCode.INCONSISTENT)


@app.command("bounces")
def bounces_command(account: str = ACCOUNT_OPTION,
                    days: int = typer.Option(30, min=1, max=3660, help="Period length in days."),
                    until: str = typer.Option("", help="Last day (YYYY-MM-DD, UTC); default today."),
                    output: TableFormat = format_option(TableFormat.TABLE),
                    database_url: str | None = DB_OPTION) -> None:
    """The bounce report ("Bounce House") over the last DAYS days."""
    settings = cli_settings(database_url)
    engine = make_engine(settings)
    try:
        last = date.fromisoformat(until) if until else datetime.now(UTC).date()
        with engine.connect() as conn:
            owner = account_repo.account_by_slug(conn, account)
        _fold(engine)
        report = reports.bounce_report(engine, owner.id, since=last - timedelta(days=days - 1),
                                       until=last, thresholds=reports.report_thresholds(settings))
    except (MailcarrierError, ValueError, LookupError) as exc:
        raise _fail(exc) from exc
    finally:
        engine.dispose()
    if output is TableFormat.JSON:
        typer.echo(to_json(report))
        return
    out = Console()
    out.print(f"[bold]Bounces {report.since} to {report.until}[/bold]: {report.total}", highlight=False)
    cats = Table("category", "bounces")
    for cat, n in report.by_category.items():
        cats.add_row(str(cat), str(n))
    out.print(cats)
    reasons = Table("reason", "cat", "count", "meaning", title="By reason")
    for r in report.by_reason:
        reasons.add_row(r.reason, str(r.category), str(r.count), r.explanation)
    out.print(reasons)
    domains = Table("domain", "bounces", "hard", "suspected filtering", title="By receiving domain")
    for d in report.by_domain:
        domains.add_row(d.domain, str(d.bounced), str(d.hard), str(d.suspected_filtering))
    out.print(domains)
    providers = Table("provider / MX", "bounces", "postmaster docs", title="By provider")
    for p in report.by_provider:
        providers.add_row(p["provider"], str(p["bounces"]), p["postmaster"] or "")
    out.print(providers)
    rates = Table("mailing", "attempted", "hard", "rate", "level",
                  title=f"Hard-bounce rate (warn {report.thresholds['warn']:.0%}, "
                        f"alert {report.thresholds['alert']:.0%})")
    for m in report.mailing_rates:
        rates.add_row(f"{m.mailing_id} {m.name}", str(m.attempted), str(m.bounced_hard), f"{m.rate:.2%}",
                      m.level)
    out.print(rates)
    near = Table("contact", "consecutive soft", "threshold", "last reason",
                 title="Near the soft-bounce threshold")
    for contact in report.near_threshold:
        near.add_row(contact.email, str(contact.consecutive_soft_bounces), str(contact.threshold),
                     contact.last_bounce_reason or "")
    out.print(near)
