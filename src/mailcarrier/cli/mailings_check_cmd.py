"""``mailcarrier content check ID``: score a mailing before it is sent.

Renders a sample, runs SpamAssassin (a spamd at ``--spamd``), checks links against URI
blocklists, the unsubscribe link, postal address, image-to-text ratio and the audience's
consent sources. The same command is meant to appear as ``mailcarrier mailings check``
once the mailings command group registers :func:`check_command`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.table import Table

from mailcarrier.cli.error_kinds import exit_code_for
from mailcarrier.cli.exit_codes import ExitCode, epilog
from mailcarrier.cli.options import (
    DB_OPTION,
    NAMESERVER_OPTION,
    TableFormat,
    account_option,
    cli_settings,
    format_option,
    nameserver_flag,
    parsed_flag,
)
from mailcarrier.config_values import parse_host_port
from mailcarrier.domain.dns_checks import CheckStatus
from mailcarrier.domain.errors import MailcarrierError
from mailcarrier.services.content_check import DEFAULT_URI_ZONES, SpamdClient, check_mailing
from mailcarrier.services.hygiene import resolver_for
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.engine import make_engine, write_transaction

app = typer.Typer(help="Pre-send content and consent checks.", no_args_is_help=True)

_STYLE = {CheckStatus.PASS: "green", CheckStatus.WARN: "yellow", CheckStatus.FAIL: "red",
          CheckStatus.ERROR: "yellow"}


@app.command("check", epilog=epilog(ExitCode.CHECK_FAILED))
def check_command(
    mailing_id: int = typer.Argument(..., help="The mailing to check."),
    account: str = account_option(..., "Account slug owning the mailing."),
    spamd: str = typer.Option("127.0.0.1:783", help="spamd HOST[:PORT]."),
    uribl: list[str] = typer.Option(list(DEFAULT_URI_ZONES), "--uribl",
                                    help="URI blocklist zone (repeatable)."),
    nameserver: str | None = NAMESERVER_OPTION,
    timeout: float = typer.Option(30.0, min=0.1, help="Seconds for spamd and each DNS query."),
    output: TableFormat = format_option(TableFormat.TABLE),
    as_json: bool = typer.Option(False, "--json", hidden=True,
                                      help="Same as --format json (kept for old scripts)."),
    database_url: str | None = DB_OPTION,
) -> None:
    """Run every content and consent check; exit 3 when one fails or cannot run."""
    settings = cli_settings(database_url)
    resolver = resolver_for(nameserver_flag(nameserver))
    resolver.lifetime = timeout
    spamd_at = parsed_flag("--spamd", spamd, lambda text: parse_host_port(text, 783))
    engine = make_engine(settings)
    try:
        with write_transaction(engine) as conn:
            account_id = account_repo.account_by_slug(conn, account).id
            report = check_mailing(conn, account_id, mailing_id, datetime.now(UTC),
                                   spamd=SpamdClient(spamd_at.host, spamd_at.port, timeout),
                                   public_url=settings.api.public_url,
                                   bounce_domain=settings.inbound.bounce_domain,
                                   resolver=resolver, uri_zones=uribl)
    except (MailcarrierError, ValueError) as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(exit_code_for(exc)) from exc
    finally:
        engine.dispose()
    if as_json or output is TableFormat.JSON:
        typer.echo(json.dumps({
            "mailing": mailing_id,
            "spamassassin": None if report.spam is None else {
                "score": report.spam.score, "threshold": report.spam.threshold,
                "rules": [{"name": r.name, "points": r.points, "description": r.description}
                          for r in report.spam.rules]},
            "checks": [{"check": c.name, "status": c.status.value, "detail": c.detail, "fix": c.fix}
                       for c in report.checks],
            "consent_sources": [{"source": s, "kind": k, "contacts": n}
                                for s, k, n in report.consent_sources],
        }, indent=2))
    else:
        console = Console()
        table = Table("check", "status", "detail", "fix")
        for c in report.checks:
            table.add_row(c.name, f"[{_STYLE[c.status]}]{c.status.value}[/]", c.detail, c.fix)
        console.print(table)
        if report.spam is not None and report.spam.rules:
            rules = Table("points", "SpamAssassin rule", "description")
            for r in sorted(report.spam.rules, key=lambda rule: -rule.points):
                rules.add_row(f"{r.points:+.1f}", r.name, r.description)
            console.print(rules)
    if not report.ok:
        raise typer.Exit(ExitCode.CHECK_FAILED)
