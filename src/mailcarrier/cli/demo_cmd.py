"""``mailcarrier demo``: the whole sending day in one offline command, on SQLite.

Starts the sandbox MX (many recipient domains with realistic behaviour) and the inbound
bounce receiver in-process, imports the sample audience shipped with the package (plus ten
staff of a company whose mail gateway fakes "user unknown" for bulk mail, seeds 002/004),
activates an automated welcome mailing for new subscribers, creates and sends a mailing,
lets two new subscribers join, runs the delivery worker until every recipient is final (the
30-hour retry schedule compressed by a simulated clock), waits for the asynchronous bounces,
and prints the mailing's response figures, the contacts held as suspected filtering and the
welcome's own figures.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Connection, Engine, select

from mailcarrier.cli.mailings_cmd import figures_table
from mailcarrier.cli.sandbox_cmd import behaviour_table
from mailcarrier.config import Settings, load_settings
from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.worker import (
    WorkerStats,
    retry_policy,
    run_worker,
    simulated_clock_ending_now,
)
from mailcarrier.domain.contact_status import ContactEvent, EventKind
from mailcarrier.inbound.smtp_server import InboundServer
from mailcarrier.services import account_views as views
from mailcarrier.services import automation, reports
from mailcarrier.services import contacts as contact_service
from mailcarrier.services import mailings as mailing_service
from mailcarrier.services.contact_import import import_csv
from mailcarrier.services.figures import MailingFigures, mailing_figures
from mailcarrier.services.policies import status_policy
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage import contacts as contact_repo
from mailcarrier.storage.engine import make_engine, write_transaction
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.tables import attempts, audience_members

SAMPLES = resources.files("mailcarrier") / "samples"
OPTED_OUT_EARLIER = "hedy.lamarr39@gmx.net"
#: A company whose gateway refuses bulk mail to real mailboxes with a fake 550 5.1.1 (the
#: sandbox plays it for domains named gateway*): six staff refused, four let through.
GATEWAY_STAFF = [*(f"{name}@gateway.acme.example" for name in
                   ("ada", "grace", "alan", "barbara", "edsger", "frances")),
                 *(f"vip.{name}@gateway.acme.example" for name in ("ken", "dennis", "linus", "guido"))]
NEW_SUBSCRIBERS = ["margaret.hamilton@example.org", "katherine.johnson@example.com"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_demo(data_dir: Path, console: Console) -> MailingFigures:
    """Run the demo in ``data_dir`` (a fresh SQLite database there) and return the figures."""
    now = datetime.now(UTC)
    # The stall outlasts the timeout by 2 s: on a loaded machine a normal reply that comes
    # late must not read as a timeout (a 1 s timeout made 147s of ordinary 250s under load).
    with Sandbox(stall_seconds=4.0, dsn_delay=3.0) as sandbox:
        settings = load_settings(
            data_dir=data_dir, database_url=f"sqlite:///{(data_dir / 'mailcarrier.db').resolve()}",
            static_routes=f"*=127.0.0.1:{sandbox.port}", smtp_timeout=2.0, inbound_host="127.0.0.1",
            inbound_port=_free_port(), bounce_domain="bounces.shop.example",
        )
        sandbox.handler.dsn_target = (settings.inbound.host, settings.inbound.port)
        engine = make_engine(settings)
        try:
            upgrade(engine)
            console.print(f"[bold]1.[/bold] sandbox MX on 127.0.0.1:{sandbox.port}; every recipient domain "
                          f"routes there (static routes); database {settings.resolved_database_url()}")
            console.print(behaviour_table())
            mailing_id, account_id, welcome_id = _prepare(settings, engine, console, now)
            with InboundServer.from_settings(engine, settings) as inbound:
                console.print(f"[bold]4.[/bold] worker: claim, render, DKIM-sign, send, classify, record "
                              "(the retry schedule runs on a simulated clock); inbound bounces on port "
                              f"{inbound.port}")
                started = time.monotonic()
                clock = simulated_clock_ending_now(engine, retry_policy(settings))
                begun = clock.now()
                stats = asyncio.run(run_worker(settings, engine, until_idle=True, clock=clock))
                _print_stats(console, stats, time.monotonic() - started, clock.now() - begun)
                expected = len(sandbox.handler.asynchronous_bounces)
                deadline = time.monotonic() + 15
                while len(sandbox.handler.dsns_sent) + len(sandbox.handler.dsn_errors) < expected \
                        and time.monotonic() < deadline:
                    time.sleep(0.1)
                inbound.wait_idle(10)
                console.print(f"[bold]5.[/bold] {len(sandbox.handler.dsns_sent)} asynchronous bounce(s) "
                              "(250 first, DSN later) received by inbound and applied")
            summary = mailing_service.get_mailing(engine, account_id, mailing_id)
            figures = mailing_figures(engine, account_id, mailing_id)
            console.print(figures_table(summary, figures))
            _print_filtering(console, engine, account_id, mailing_id)
            _print_welcome(console, engine, account_id, welcome_id)
            _print_evidence(console, engine)
        finally:
            engine.dispose()
    console.print(f"data kept in {data_dir}; look around with "
                  f"MAILCARRIER_DATA_DIR={data_dir} mailcarrier mailings show {mailing_id} --account demo")
    return figures


def _prepare(settings: Settings, engine: Engine, console: Console,
             now: datetime) -> tuple[int, int, int]:
    with write_transaction(engine) as conn:
        try:
            account = account_repo.account_by_slug(conn, "demo")
        except LookupError:
            account = account_repo.create_account(conn, "demo", "Demo shop", now)
    with resources.as_file(SAMPLES / "audience.csv") as csv_path:
        report = import_csv(engine, account.id, "newsletter", csv_path, now)
    with write_transaction(engine) as conn:
        audience = account_repo.audience_by_name(conn, account.id, "newsletter")
        opted = contact_repo.contact_id_by_email(conn, account.id, OPTED_OUT_EARLIER)
        for address in GATEWAY_STAFF:
            if contact_repo.contact_id_by_email(conn, account.id, address) is None:
                _add_member(conn, account.id, audience.id, address, now)
    if opted is not None:  # one contact unsubscribed last month: counted as suppressed, never mailed
        contact_service.apply_event(engine, status_policy(settings), contact_service.ContactEventRecord(
            account.id, opted, ContactEvent(EventKind.UNSUBSCRIBE, now), cause="demo: unsubscribed earlier"),
            now)
    console.print(f"[bold]2.[/bold] imported {report.rows_imported} contacts into audience 'newsletter' "
                  f"(one of them opted out earlier), plus {len(GATEWAY_STAFF)} staff of "
                  "gateway.acme.example, whose mail gateway fakes 'user unknown' for bulk mail")
    html = (SAMPLES / "newsletter.html").read_text(encoding="utf-8")
    text = (SAMPLES / "newsletter.txt").read_text(encoding="utf-8")
    welcome_id = mailing_service.create_mailing(engine, mailing_service.MailingDraft(
        account_id=account.id, from_address="news@shop.example", from_name="Shop Example",
        subject="Welcome, {{ first_name }}", html=html, text=text, name="Welcome new subscribers",
        kind="automated", audience_id=audience.id), now)
    automation.activate(engine, account.id, welcome_id, "audience_join", now)
    mailing_id = mailing_service.create_mailing(engine, mailing_service.MailingDraft(
        account_id=account.id, from_address="news@shop.example", from_name="Shop Example",
        subject="{{ first_name }}, spring is here", html=html, text=text, name="Spring newsletter",
        audience_id=audience.id), now)
    summary = mailing_service.send_mailing(engine, account.id, mailing_id, now)
    console.print(f"[bold]3.[/bold] mailing {mailing_id} sent: {summary.recipients_total} recipients, "
                  f"{summary.suppressed_total} suppressed; DKIM key for shop.example in "
                  f"{settings.storage.data_dir / 'dkim' / 'shop.example'}; automated mailing {welcome_id} "
                  "'Welcome new subscribers' active for contacts joining the audience")
    joined = datetime.now(UTC)
    with write_transaction(engine) as conn:
        for address in NEW_SUBSCRIBERS:
            if contact_repo.contact_id_by_email(conn, account.id, address) is None:
                _add_member(conn, account.id, audience.id, address, joined)
    console.print(f"   {len(NEW_SUBSCRIBERS)} new subscribers joined 'newsletter' after the send: "
                  "the worker sends them the welcome")
    return mailing_id, account.id, welcome_id


def _add_member(conn: Connection, account_id: int, audience_id: int, address: str,
                when: datetime) -> None:
    first = address.partition("@")[0].rpartition(".")[2].title()
    cid = contact_repo.add_contact(conn, account_id, address, when, first_name=first,
                                   consent_source="signup_form")
    conn.execute(audience_members.insert().values(audience_id=audience_id, contact_id=cid, added_at=when))


def _print_filtering(console: Console, engine: Engine, account_id: int, mailing_id: int) -> None:
    held = views.list_contacts(engine, account_id, after_id=0, limit=50,
                               segment=views.ContactSegment(suspected_filtering=True))
    page = reports.response_page(engine, account_id, mailing_id)
    table = Table("held as suspected filtering", "status", "last refusal", title=(
        f"{page.suspected_filtering} refusal(s) judged suspected B2B filtering: contacts held, not "
        "invalidated (confirm or release: mailcarrier contacts confirm-invalid|release)"))
    for contact in held[:50]:
        table.add_row(contact.email, contact.status + (" (invalid)" if contact.email_invalid else ""),
                      (contact.last_bounce_diagnostic or "")[:70])
    console.print(table)


def _print_welcome(console: Console, engine: Engine, account_id: int, welcome_id: int) -> None:
    for listed in reports.list_mailings(engine, account_id, "automated"):
        if listed.id == welcome_id:
            console.print(f"automated mailing {listed.id} '{listed.name}': {listed.recipients} "
                          f"recipient(s), {listed.delivered} delivered, {listed.bounced} bounced, "
                          f"{listed.in_progress} in progress (sent on audience join)", highlight=False)


def _print_stats(console: Console, stats: WorkerStats, seconds: float, simulated: object) -> None:
    console.print(f"   {stats.attempts} attempts over {stats.connections_opened} SMTP connections in "
                  f"{seconds:.1f} s of real time ({simulated} of simulated time): "
                  f"{stats.delivered} delivered, "
                  f"{stats.deferred} deferred and retried, {stats.bounced} bounced, "
                  f"{stats.outcome_unknown} outcome unknown")


def _print_evidence(console: Console, engine: Engine) -> None:
    with engine.connect() as conn:
        row = conn.execute(select(attempts).where(attempts.c.outcome == "delivered").limit(1)).first()
    if row is None:
        return
    table = Table("evidence of one delivered attempt", "")
    for label, value in (("started / ended", f"{row.started_at:%H:%M:%S.%f} / {row.ended_at:%H:%M:%S.%f}"),
                         ("return path (VERP)", row.return_path), ("sending IP", row.local_ip),
                         ("receiving IP / MX", f"{row.remote_ip} / {row.mx_host}"),
                         ("reply", f"{row.reply_code} {row.enhanced_status or ''} {row.reply_text}"),
                         ("receiving queue id", row.queue_id)):
        table.add_row(label, str(value))
    console.print(table)
    console.print("[dim]" + (row.dialogue or "").replace("[", r"\[") + "[/dim]")


def demo_command(
    data_dir: Path | None = typer.Option(None, "--data-dir", help=(
        "Where to keep the demo database and keys (default: a new temporary directory).")),
) -> None:
    """Send a sample mailing through the local sandbox MX and print its response figures (offline)."""
    target = data_dir or Path(tempfile.mkdtemp(prefix="mailcarrier-demo-"))
    target.mkdir(parents=True, exist_ok=True)
    run_demo(target, Console())
