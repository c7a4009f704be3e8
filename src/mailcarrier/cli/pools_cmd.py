"""``mailcarrier pools``: sending-IP pools, eligibility, applications, traps, listings, throttling."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

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
from mailcarrier.domain.errors import InvalidInputError, MailcarrierError
from mailcarrier.domain.pools import Eligibility
from mailcarrier.domain.warmup import load_schedules
from mailcarrier.services.hygiene import DnsHygiene, resolver_for
from mailcarrier.services.policies import pool_policy, warmup_schedule
from mailcarrier.services.pools import eligibility as pool_eligibility
from mailcarrier.services.pools import membership, sender_checks, values
from mailcarrier.services.pools import reputation as pool_reputation
from mailcarrier.services.pools import throttling as pool_throttling
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.engine import make_engine, write_transaction

app = typer.Typer(help="Sending IPs and pools (shared, trusted, dedicated): eligibility, warm-up, "
                       "reputation events, throttling log.", no_args_is_help=True)
DB_OPTION = typer.Option(None, "--database-url", help="Overrides MAILCARRIER_DATABASE_URL.")
DEFAULT_ZONES = ("zen.spamhaus.org", "b.barracudacentral.org", "bl.spamcop.net")
T = TypeVar("T")


def _settings(database_url: str | None) -> Settings:
    return cli_settings(database_url)


@contextmanager
def _connection(settings: Settings) -> Iterator[Connection]:
    """One transaction; a MailcarrierError or ValueError becomes a red line and exit code 1."""
    engine = make_engine(settings)
    try:
        with write_transaction(engine) as conn:
            yield conn
    except (MailcarrierError, ValueError) as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(exit_code_for(exc)) from exc
    finally:
        engine.dispose()


def _run(database_url: str | None, job: Callable[[Connection, Settings], T]) -> T:
    settings = _settings(database_url)
    with _connection(settings) as conn:
        return job(conn, settings)


def _now() -> datetime:
    return datetime.now(UTC)


@app.command("create")
def create_command(name: str, kind: str = typer.Argument(..., help="shared, trusted or dedicated."),
                   description: str = typer.Option("", help="Free text."),
                   database_url: str | None = DB_OPTION) -> None:
    """Create a pool NAME of KIND."""
    pool = _run(database_url, lambda conn, _: membership.create_pool(conn, name, kind, _now(), description))
    Console().print(f"created {pool.kind.value} pool {pool.name} (id {pool.id})")


@app.command("add-ip")
def add_ip_command(pool: str, address: str,
                   hostname: str = typer.Option("", help="The IP's PTR name (for FCrDNS checks)."),
                   schedule: str | None = typer.Option(None, help="Warm-up schedule (default: setting)."),
                   warm: bool = typer.Option(False, "--warm", help="Already warm: skip the ramp."),
                   database_url: str | None = DB_OPTION) -> None:
    """Add source ADDRESS to POOL; a new IP starts its warm-up ramp today."""
    def job(conn: Connection, settings: Settings) -> values.SendingIp:
        chosen = warmup_schedule(settings) if schedule is None else load_schedules().get(schedule)
        if chosen is None:
            raise InvalidInputError(f"unknown schedule {schedule!r}; "
                                    f"choose one of {', '.join(load_schedules())}")
        return membership.add_ip(conn, pool, address, _now(), schedule=chosen, hostname=hostname, warm=warm)
    ip = _run(database_url, job)
    state = "warm" if warm else f"warm-up day 1 of {ip.warmup.schedule}"
    Console().print(f"added {ip.address} to {pool} ({state})")


@app.command("assign")
def assign_command(account: str, pool: str,
                   reason: str = typer.Option("assigned by operator", help="Recorded with the assignment."),
                   database_url: str | None = DB_OPTION) -> None:
    """Put ACCOUNT on POOL (the previous assignment is kept as history)."""
    def job(conn: Connection, _: Settings) -> values.Pool:
        account_id = account_repo.account_by_slug(conn, account).id
        return membership.assign_account(conn, account_id, pool, _now(), reason)
    target = _run(database_url, job)
    Console().print(f"{account} now sends from {target.kind.value} pool {target.name}")


@app.command("list")
def list_command(database_url: str | None = DB_OPTION) -> None:
    """Pools with their IPs (warm-up day, sent today) and accounts."""
    views = _run(database_url, lambda conn, _: membership.list_pools(conn))
    table = Table("pool", "kind", "IPs", "accounts")
    for view in views:
        ips = "\n".join(
            f"{ip.address} {'(disabled) ' if not ip.enabled else ''}"
            f"{ip.warmup.schedule} day {ip.warmup.day}{' held' if ip.warmup.held else ''}"
            for ip in view.ips) or "-"
        table.add_row(view.pool.name, view.pool.kind.value, ips, ", ".join(view.accounts) or "-")
    Console().print(table)


@app.command("evaluate")
def evaluate_command(account: list[str] = typer.Option([], "--account", help="Only these accounts."),
                     enforce: bool = typer.Option(
                         False, "--enforce", help="Move accounts that lost trusted/dedicated to shared."),
                     output: TableFormat = format_option(TableFormat.TABLE),
                     as_json: bool = typer.Option(False, "--json", hidden=True,
                                      help="Same as --format json (kept for old scripts)."),
                     database_url: str | None = DB_OPTION) -> None:
    """Print each account's eligibility (trusted, dedicated recommendation) with its reasons."""
    def job(conn: Connection, settings: Settings) -> list[tuple[str, str | None, Eligibility]]:
        policy, now = pool_policy(settings), _now()
        chosen = [account_repo.account_by_slug(conn, slug) for slug in account] or \
            account_repo.list_accounts(conn)
        out = []
        for acct in chosen:
            pool = membership.current_pool(conn, acct.id)
            verdict = (pool_eligibility.enforce_eligibility(conn, acct.id, policy, now) if enforce
                       else pool_eligibility.evaluate_account(conn, acct.id, policy, now))
            out.append((acct.slug, pool.name if pool else None, verdict))
        return out
    rows = _run(database_url, job)
    if as_json or output is TableFormat.JSON:
        typer.echo(json.dumps([{
            "account": slug, "pool": pool, "belongs_in": v.pool.value, "trusted_eligible": v.trusted_eligible,
            "demoted": v.demoted, "recommend_dedicated": v.recommend_dedicated, "reasons": list(v.reasons),
        } for slug, pool, v in rows], indent=2))
        return
    table = Table("account", "pool now", "belongs in", "trusted", "dedicated", "reasons")
    for slug, pool, v in rows:
        moved = " [red](moved)[/]" if v.demoted and enforce else (" [red](demote)[/]" if v.demoted else "")
        table.add_row(slug, pool or "-", v.pool.value + moved, "yes" if v.trusted_eligible else "no",
                      "recommended" if v.recommend_dedicated else "-", "\n".join(v.reasons))
    Console().print(table)


@app.command("apply", epilog=epilog(ExitCode.REFUSED))
def apply_command(account: str, kind: str = typer.Argument(..., help="trusted or dedicated."),
                  database_url: str | None = DB_OPTION) -> None:
    """Apply for a pool kind: the eligibility engine runs now, an operator approves later."""
    def job(conn: Connection, settings: Settings) -> values.Application:
        acct = account_repo.account_by_slug(conn, account)
        return pool_eligibility.apply_for_pool(conn, acct.id, kind, pool_policy(settings), _now())
    application = _run(database_url, job)
    console = Console()
    if application.state == "pending":
        hint = next_step("pools", "approve", str(application.id), "--who", "NAME", database_url=database_url)
        console.print(f"application #{application.id} for {kind} recorded: eligible, waiting for approval "
                      f"({hint})", highlight=False)
    else:
        console.print(f"application #{application.id} for {kind} [red]refused[/]: not eligible")
    for reason in application.reasons:
        console.print(f"  - {reason}")
    if application.state != "pending":
        raise typer.Exit(ExitCode.REFUSED)


def _decide(application_id: int, approve: bool, who: str, pool: str | None, note: str,
            database_url: str | None) -> values.Application:
    def job(conn: Connection, settings: Settings) -> values.Application:
        return pool_eligibility.decide_application(conn, application_id, approve=approve, who=who, now=_now(),
                                      policy=pool_policy(settings), pool_name=pool, note=note)
    return _run(database_url, job)


@app.command("approve")
def approve_command(application_id: int, who: str = typer.Option(..., "--who", help="Operator name."),
                    pool: str | None = typer.Option(None, help="Target pool (default: first of the kind)."),
                    note: str = typer.Option("", help="Recorded with the decision."),
                    database_url: str | None = DB_OPTION) -> None:
    """Approve a pending application: re-checks eligibility, then moves the account."""
    application = _decide(application_id, True, who, pool, note, database_url)
    Console().print(f"application #{application.id} approved by {who}")


@app.command("refuse")
def refuse_command(application_id: int, who: str = typer.Option(..., "--who", help="Operator name."),
                   note: str = typer.Option("", help="Why (recorded)."),
                   database_url: str | None = DB_OPTION) -> None:
    """Refuse a pending application."""
    application = _decide(application_id, False, who, None, note, database_url)
    Console().print(f"application #{application.id} refused by {who}")


@app.command("applications")
def applications_command(state: str | None = typer.Option(None, help="pending, approved or refused."),
                         database_url: str | None = DB_OPTION) -> None:
    """List pool applications."""
    def job(conn: Connection, _: Settings) -> list[tuple[str, values.Application]]:
        slugs = {a.id: a.slug for a in account_repo.list_accounts(conn)}
        return [(slugs.get(a.account_id, "?"), a) for a in pool_eligibility.list_applications(conn, state)]
    table = Table("#", "account", "kind", "state", "requested (UTC)", "decided by", "reasons")
    for slug, a in _run(database_url, job):
        table.add_row(str(a.id), slug, a.kind.value, a.state, a.requested_at.isoformat(timespec="seconds"),
                      a.decided_by or "-", "\n".join(a.reasons))
    Console().print(table)


def _record_event(kind: str, ip: str | None, account: str | None, blocklist: str, evidence: str,
                  database_url: str | None) -> list[values.ReputationEvent]:
    def job(conn: Connection, _: Settings) -> list[values.ReputationEvent]:
        account_id = account_repo.account_by_slug(conn, account).id if account else None
        event_id = pool_reputation.record_reputation_event(conn, kind, _now(), source="manual", ip_address=ip,
                                               account_id=account_id, blocklist=blocklist, evidence=evidence)
        return [e for e in pool_reputation.reputation_history(conn, ip_address=ip, account_id=account_id)
                if e.id == event_id]
    return _run(database_url, job)


def _print_event_recorded(events: list[values.ReputationEvent]) -> None:
    for event in events:
        Console().print(f"recorded {event.kind.value} #{event.id}"
                        f"{' on ' + event.ip_address if event.ip_address else ''}; accounts on the IP then: "
                        f"{', '.join(event.neighbours) or '-'}")


@app.command("trap")
def trap_command(ip: str | None = typer.Option(None, "--ip", help="The sending IP that hit the trap."),
                 account: str | None = typer.Option(None, "--account", help="The account whose mail hit it."),
                 evidence: str = typer.Option("", help="Where the report came from."),
                 database_url: str | None = DB_OPTION) -> None:
    """Record a spam-trap hit (it keeps the account out of trusted for 12 months)."""
    _print_event_recorded(_record_event("trap", ip, account, "", evidence, database_url))


@app.command("listing")
def listing_command(ip: str = typer.Option(..., "--ip", help="The listed sending IP."),
                    blocklist: str = typer.Option(..., "--list", help="Blocklist name or zone."),
                    account: str | None = typer.Option(None, "--account", help="Account held responsible."),
                    evidence: str = typer.Option("", help="Listing reference."),
                    database_url: str | None = DB_OPTION) -> None:
    """Record a blocklist listing of a sending IP."""
    _print_event_recorded(_record_event("listing", ip, account, blocklist, evidence, database_url))


@app.command("events")
def events_command(ip: str | None = typer.Option(None, "--ip"),
                   account: str | None = typer.Option(None, "--account"),
                   database_url: str | None = DB_OPTION) -> None:
    """Trap hits and listings, with the accounts that shared the IP at the time."""
    def job(conn: Connection, _: Settings) -> list[values.ReputationEvent]:
        account_id = account_repo.account_by_slug(conn, account).id if account else None
        return pool_reputation.reputation_history(conn, ip_address=ip, account_id=account_id)
    table = Table("#", "when (UTC)", "kind", "IP", "list", "source", "caused by", "accounts on the IP",
                  "resolved")
    for e in _run(database_url, job):
        table.add_row(str(e.id), e.occurred_at.isoformat(timespec="seconds"), e.kind.value,
                      e.ip_address or "-", e.blocklist or "-", e.source, e.account or "-",
                      ", ".join(e.neighbours) or "-",
                      e.resolved_at.isoformat(timespec="seconds") if e.resolved_at else "-")
    Console().print(table)


@app.command("dnsbl-check", epilog=epilog(ExitCode.CHECK_FAILED))
def dnsbl_check_command(zone: list[str] = typer.Option(list(DEFAULT_ZONES), "--zone",
                                                       help="Blocklist zone (repeatable)."),
                        nameserver: str | None = NAMESERVER_OPTION,
                        timeout: float = typer.Option(5.0, min=0.1, help="Seconds per query."),
                        every: float = typer.Option(0.0, "--every", min=0.0, help=(
                            "Repeat every this many minutes until interrupted (0: once, e.g. from cron).")),
                        rounds: int = typer.Option(0, "--rounds", min=0, help=(
                            "With --every: stop after this many look-up rounds (0: until interrupted).")),
                        database_url: str | None = DB_OPTION) -> None:
    """Look up every sending IP in the blocklists and record the answers.

    127.255.255.x answers mean the list refused the query: shown as errors, never as
    listings. Run once (cron) or with --every (a round that fails, e.g. the database is
    briefly unreachable, is reported and the schedule goes on; Ctrl-C stops it). Exit 3
    when the last round found a listing.
    """
    hygiene = DnsHygiene(resolver_for(nameserver_flag(nameserver)), lifetime=timeout)
    results: list[values.DnsblResult] = []
    done = 0
    try:
        while True:
            try:
                results = _dnsbl_round(database_url, hygiene, zone)
                _print_dnsbl(results)
            except (typer.Exit, SQLAlchemyError) as exc:
                if every <= 0:
                    raise
                Console(stderr=True).print(f"[yellow]round failed, next in {every:g} min:[/yellow] {exc!r}")
            done += 1
            if every <= 0 or (rounds and done >= rounds):
                break
            time.sleep(every * 60)
    except KeyboardInterrupt:
        return
    if any(r.check.status.value == "fail" for r in results):
        raise typer.Exit(ExitCode.CHECK_FAILED)


def _dnsbl_round(database_url: str | None, hygiene: DnsHygiene, zones: list[str]) -> list[values.DnsblResult]:
    """One round of look-ups (no transaction is open during the DNS queries)."""
    engine = make_engine(_settings(database_url))
    try:
        return sender_checks.dnsbl_check(engine, hygiene, zones, _now())
    except (MailcarrierError, ValueError) as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(exit_code_for(exc)) from exc
    finally:
        engine.dispose()


def _print_dnsbl(results: list[values.DnsblResult]) -> None:
    title = f"DNSBL look-ups {_now().isoformat(timespec='seconds')}"
    table = Table("IP", "zone", "status", "detail", title=title)
    for r in results:
        zone_name = r.check.name.removeprefix("DNSBL ").split(" for ")[0]
        status = {"pass": "[green]clean[/]", "fail": "[red]LISTED[/]", "error": "[yellow]error[/]"}[
            r.check.status.value]
        table.add_row(r.ip_address, zone_name, status + (" (new)" if r.new_listing else ""), r.check.detail)
    Console().print(table)


@app.command("throttle")
def throttle_command(active: bool = typer.Option(False, "--active", help="Only actions in force now."),
                     database_url: str | None = DB_OPTION) -> None:
    """The deferral automation's log: suspensions and slow-downs per IP and provider."""
    now = _now()
    entries = _run(database_url, lambda conn, _: pool_throttling.throttle_log(
        conn, active_at=now if active else None, as_of=now))
    table = Table("IP", "provider", "action", "rule", "started (UTC)", "until", "ended", "trigger")
    for e in entries:
        ended = f"{e.ended_at.isoformat(timespec='seconds')} ({e.end_reason})" if e.ended_at else "-"
        table.add_row(e.ip_address, e.provider, e.kind.value, e.rule,
                      e.started_at.isoformat(timespec="seconds"), e.until.isoformat(timespec="seconds"),
                      ended, e.trigger[:80])
    Console().print(table)
