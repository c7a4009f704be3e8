"""``mailcarrier domains check``: is a sending domain fit to send marketing mail?"""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from mailcarrier.cli.error_kinds import exit_code_for
from mailcarrier.cli.exit_codes import ExitCode, epilog
from mailcarrier.cli.options import (
    NAMESERVER_OPTION,
    TableFormat,
    cli_settings,
    format_option,
    nameserver_flag,
    next_step,
)
from mailcarrier.config import Settings
from mailcarrier.domain.dns_checks import Check, CheckStatus
from mailcarrier.domain.errors import ConflictError, MailcarrierError
from mailcarrier.services.hygiene import DnsHygiene, DomainCheckRequest, failures, resolver_for
from mailcarrier.services.pools import membership, sender_checks
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.engine import make_engine

app = typer.Typer(help="Sender hygiene of sending domains: SPF, DKIM, DMARC, FCrDNS, MX, blocklists.",
                  no_args_is_help=True)

_STYLE = {CheckStatus.PASS: "green", CheckStatus.WARN: "yellow", CheckStatus.FAIL: "red",
          CheckStatus.ERROR: "yellow"}


def _account_pool(settings: Settings, slug: str) -> tuple[tuple[str, ...], list[Check]]:
    """The enabled IPs of the account's pool and their open DNSBL listings; exit 1 if unknown."""
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            account_id = account_repo.account_by_slug(conn, slug).id
            pool = membership.current_pool(conn, account_id)
            if pool is None:
                hint = next_step("pools", "assign", slug, "POOL", database_url=settings.storage.database_url)
                raise ConflictError(f"account {slug} is on no pool; assign one with: {hint}")
            addresses = tuple(ip.address for ip in membership.pool_ips(conn, pool.id) if ip.enabled)
            return addresses, sender_checks.open_dnsbl_listings(conn, addresses)
    except MailcarrierError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(exit_code_for(exc)) from exc
    finally:
        engine.dispose()


@app.command("check", epilog=epilog(ExitCode.CHECK_FAILED))
def check(
    domain: str = typer.Argument(..., help="The From domain to check."),
    ips: list[str] = typer.Option([], "--ip", help="Sending IP of the account's pool (repeatable)."),
    account: str | None = typer.Option(None, "--account", help=(
        "Check for the IPs of this account's pool (added to --ip), and its open DNSBL listings.")),
    database_url: str | None = typer.Option(None, "--database-url",
                                            help="Overrides MAILCARRIER_DATABASE_URL."),
    selector: str | None = typer.Option(None, "--selector", help=(
        "DKIM selector (default: the dkim_selector setting, the one keys are generated, "
        "published and signed with).")),
    bounce_domain: str | None = typer.Option(None, help="Envelope/bounce domain (default: setting)."),
    inbound_host: str | None = typer.Option(None, help="Our inbound MX host (default: hostname setting)."),
    dnsbl: list[str] = typer.Option([], "--dnsbl", help="Blocklist zone to query (repeatable)."),
    nameserver: str | None = NAMESERVER_OPTION,
    timeout: float = typer.Option(5.0, min=0.1, help="Seconds per DNS query."),
    output: TableFormat = format_option(TableFormat.TABLE),
    as_json: bool = typer.Option(False, "--json", hidden=True,
                                      help="Same as --format json (kept for old scripts)."),
) -> None:
    """Run every hygiene check; exit 3 when any fails (marketing mail would be refused)."""
    settings = cli_settings(database_url)
    pool_ips, listings = _account_pool(settings, account) if account else ((), [])
    request = DomainCheckRequest(
        domain=domain.strip().rstrip(".").lower(),
        sending_ips=tuple(dict.fromkeys([*ips, *pool_ips])),
        dkim_selector=selector or settings.delivery.dkim_selector,
        bounce_domain=bounce_domain or settings.inbound.bounce_domain,
        inbound_host=inbound_host or settings.delivery.hostname,
        dnsbl_zones=tuple(dnsbl),
    )
    hygiene = DnsHygiene(resolver_for(nameserver_flag(nameserver)), lifetime=timeout)
    checks = (*hygiene.check_domain(request), *listings)
    if as_json or output is TableFormat.JSON:
        typer.echo(json.dumps([
            {"check": c.name, "status": c.status.value, "detail": c.detail, "fix": c.fix} for c in checks
        ], indent=2))
    else:
        table = Table("check", "status", "detail", "fix")
        for c in checks:
            table.add_row(c.name, f"[{_STYLE[c.status]}]{c.status.value}[/]", c.detail, c.fix)
        Console().print(table)
    if failures(checks):
        raise typer.Exit(ExitCode.CHECK_FAILED)
