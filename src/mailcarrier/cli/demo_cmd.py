"""``mailcarrier demo``: the whole sending day in one offline command, on SQLite.

Starts the sandbox MX (many recipient domains with realistic behaviour) and the inbound
bounce receiver in-process, imports the sample audience shipped with the package, creates
and sends a mailing, runs the delivery worker until every recipient is final (the 30-hour
retry schedule compressed by a simulated clock), waits for the asynchronous bounces, and
prints the mailing's response figures.
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
from sqlalchemy import Engine, select

from mailcarrier.cli.mailings_cmd import figures_table
from mailcarrier.cli.sandbox_cmd import behaviour_table
from mailcarrier.config import Settings, load_settings
from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.worker import SimulatedClock, WorkerStats, run_worker
from mailcarrier.domain.contact_status import ContactEvent, EventKind
from mailcarrier.inbound.smtp_server import InboundServer
from mailcarrier.services import contacts as contact_service
from mailcarrier.services import mailings as mailing_service
from mailcarrier.services.contact_import import import_csv
from mailcarrier.services.policies import status_policy
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage import contacts as contact_repo
from mailcarrier.storage.engine import make_engine, write_transaction
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.tables import attempts

SAMPLES = resources.files("mailcarrier") / "samples"
OPTED_OUT_EARLIER = "hedy.lamarr39@gmx.net"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_demo(data_dir: Path, console: Console) -> mailing_service.MailingFigures:
    """Run the demo in ``data_dir`` (a fresh SQLite database there) and return the figures."""
    now = datetime.now(UTC)
    with Sandbox(stall_seconds=3.0, dsn_delay=3.0) as sandbox:
        settings = load_settings(
            data_dir=data_dir, database_url=f"sqlite:///{(data_dir / 'mailcarrier.db').resolve()}",
            static_routes=f"*=127.0.0.1:{sandbox.port}", smtp_timeout=1.0, inbound_host="127.0.0.1",
            inbound_port=_free_port(), bounce_domain="bounces.shop.example",
        )
        sandbox.handler.dsn_target = (settings.inbound_host, settings.inbound_port)
        engine = make_engine(settings)
        try:
            upgrade(engine)
            console.print(f"[bold]1.[/bold] sandbox MX on 127.0.0.1:{sandbox.port}; every recipient domain "
                          f"routes there (static routes); database {settings.resolved_database_url()}")
            console.print(behaviour_table())
            mailing_id, account_id = _prepare(settings, engine, console, now)
            with InboundServer.from_settings(engine, settings) as inbound:
                console.print(f"[bold]4.[/bold] worker: claim, render, DKIM-sign, send, classify, record "
                              "(the retry schedule runs on a simulated clock); inbound bounces on port "
                              f"{inbound.port}")
                started = time.monotonic()
                clock = SimulatedClock()
                stats = asyncio.run(run_worker(settings, engine, until_idle=True, clock=clock))
                _print_stats(console, stats, time.monotonic() - started, clock.now() - now)
                expected = len(sandbox.handler.asynchronous_bounces)
                deadline = time.monotonic() + 15
                while len(sandbox.handler.dsns_sent) + len(sandbox.handler.dsn_errors) < expected \
                        and time.monotonic() < deadline:
                    time.sleep(0.1)
                inbound.wait_idle(10)
                console.print(f"[bold]5.[/bold] {len(sandbox.handler.dsns_sent)} asynchronous bounce(s) "
                              "(250 first, DSN later) received by inbound and applied")
            summary = mailing_service.get_mailing(engine, account_id, mailing_id)
            figures = mailing_service.mailing_figures(engine, account_id, mailing_id)
            console.print(figures_table(summary, figures))
            _print_evidence(console, engine)
        finally:
            engine.dispose()
    console.print(f"data kept in {data_dir}; look around with "
                  f"MAILCARRIER_DATA_DIR={data_dir} mailcarrier mailings show {mailing_id} --account demo")
    return figures


def _prepare(settings: Settings, engine: Engine, console: Console, now: datetime) -> tuple[int, int]:
    with write_transaction(engine) as conn:
        try:
            account = account_repo.account_by_slug(conn, "demo")
        except LookupError:
            account = account_repo.create_account(conn, "demo", "Demo shop", now)
    with resources.as_file(SAMPLES / "audience.csv") as csv_path:
        report = import_csv(engine, account.id, "newsletter", csv_path, now)
    with engine.connect() as conn:
        audience = account_repo.audience_by_name(conn, account.id, "newsletter")
        opted = contact_repo.contact_id_by_email(conn, account.id, OPTED_OUT_EARLIER)
    if opted is not None:  # one contact unsubscribed last month: counted as suppressed, never mailed
        contact_service.apply_event(engine, status_policy(settings), contact_service.ContactEventRecord(
            account.id, opted, ContactEvent(EventKind.UNSUBSCRIBE, now), cause="demo: unsubscribed earlier"),
            now)
    console.print(f"[bold]2.[/bold] imported {report.rows_imported} contacts into audience 'newsletter' "
                  f"(one of them opted out earlier)")
    html = (SAMPLES / "newsletter.html").read_text(encoding="utf-8")
    text = (SAMPLES / "newsletter.txt").read_text(encoding="utf-8")
    mailing_id = mailing_service.create_mailing(engine, mailing_service.MailingDraft(
        account_id=account.id, from_address="news@shop.example", from_name="Shop Example",
        subject="{{ first_name }}, spring is here", html=html, text=text, name="Spring newsletter",
        audience_id=audience.id), now)
    summary = mailing_service.send_mailing(engine, account.id, mailing_id, now)
    console.print(f"[bold]3.[/bold] mailing {mailing_id} sent: {summary.recipients_total} recipients, "
                  f"{summary.suppressed_total} suppressed; DKIM key for shop.example in "
                  f"{settings.data_dir / 'dkim' / 'shop.example'}")
    return mailing_id, account.id


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
