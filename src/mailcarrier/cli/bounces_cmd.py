"""``mailcarrier bounces``: import bounce emails into the return path, list and reprocess them."""

from __future__ import annotations

import imaplib
import json
import sys
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from mailcarrier.cli.error_kinds import exit_code_for
from mailcarrier.cli.exit_codes import ExitCode, epilog
from mailcarrier.cli.options import cli_settings
from mailcarrier.config import Settings
from mailcarrier.domain.errors import MailcarrierError
from mailcarrier.inbound.imap_poller import ImapSettings, poll_imap
from mailcarrier.inbound.mailbox_import import ImportProblem, iter_emails
from mailcarrier.services.inbound import (
    BatchSummary,
    InboundContext,
    IncomingEmail,
    accept_unverified,
    list_inbound,
    process_all,
    release_for_reprocess,
    store_incoming,
)
from mailcarrier.storage import inbound_messages as store
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.inbound_tables import INBOUND_KINDS, INBOUND_STATES

app = typer.Typer(help="The return path: import, list and reprocess bounces, complaints and "
                  "auto-replies.", no_args_is_help=True)
DB_OPTION = typer.Option(None, "--database-url", help="Overrides MAILCARRIER_DATABASE_URL.")
_STORE_BATCH = 500


def _now() -> datetime:
    return datetime.now(UTC)


def _settings(database_url: str | None) -> Settings:
    return cli_settings(database_url)


def _print_summary(summary: BatchSummary) -> None:
    states = ", ".join(f"{k} {v}" for k, v in sorted(summary.states.items())) or "nothing"
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(summary.kinds.items()))
    Console().print(f"processed {summary.claimed}: {states}" + (f" ({kinds})" if kinds else "")
                    + f"; {summary.bounced_deliveries} deliveries bounced, "
                    f"{summary.contact_events} contact events")


@app.command("import", epilog=epilog(ExitCode.PARTIAL))
def import_command(
    paths: list[Path] = typer.Argument(None, help="Email files (.eml), mbox files, maildir folders or "
                                       "directories (walked recursively)."),
    imap: bool = typer.Option(False, "--imap", help="Fetch from the IMAP mailbox in the settings "
                              "(MAILCARRIER_IMAP_*); messages are flagged, never deleted unless "
                              "MAILCARRIER_IMAP_DELETE is set."),
    process: bool = typer.Option(True, "--process/--store-only",
                                 help="Process right away, or only store (a running inbound server "
                                 "or `bounces reprocess` picks them up)."),
    every: float = typer.Option(0.0, "--every", min=0.0,
                                help="With --imap: poll again every this many seconds until "
                                "interrupted (0: poll once)."),
    database_url: str | None = DB_OPTION,
) -> None:
    """Store emails raw in the return path, then match and act on them.

    Exit 4 when a path could not be read (the readable ones are still imported).
    """
    settings = _settings(database_url)
    if not paths and not imap:
        raise typer.BadParameter("give PATH... or --imap")
    if every and (paths or not imap):
        raise typer.BadParameter("--every repeats an IMAP poll: use it with --imap and no PATH")
    if every:
        _poll_forever(settings, every, process)
        return
    engine = make_engine(settings)
    problems = 0
    stored = 0
    try:
        if imap:
            result = poll_imap(engine, ImapSettings.from_settings(settings), _now)
            stored += result.stored
            Console().print(f"IMAP: stored {result.stored}, deleted {result.deleted}")
        batch: list[IncomingEmail] = []
        for item in iter_emails(list(paths or []), max_bytes=settings.inbound.max_bytes):
            if isinstance(item, ImportProblem):
                problems += 1
                Console(stderr=True).print(f"[red]cannot read[/red] {item.path}: {item.error}")
                continue
            batch.append(item)
            if len(batch) >= _STORE_BATCH:
                store_incoming(engine, batch, _now())
                stored, batch = stored + len(batch), []
        store_incoming(engine, batch, _now())
        stored += len(batch)
        Console().print(f"stored {stored} emails")
        if process:
            _print_summary(process_all(engine, InboundContext.from_settings(settings), _now()))
    except (MailcarrierError, OSError, imaplib.IMAP4.error) as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(exit_code_for(exc)) from exc
    finally:
        engine.dispose()
    if problems:
        raise typer.Exit(ExitCode.PARTIAL)


def _poll_forever(settings: Settings, every: float, process: bool) -> None:
    """Poll the IMAP mailbox every ``every`` seconds; a failed poll is reported and retried."""
    engine = make_engine(settings)
    config = ImapSettings.from_settings(settings)
    context = InboundContext.from_settings(settings)
    try:
        while True:
            try:
                result = poll_imap(engine, config, _now)
                Console().print(f"IMAP: stored {result.stored}, deleted {result.deleted}")
                if process and result.stored:
                    _print_summary(process_all(engine, context, _now()))
            except (MailcarrierError, OSError, imaplib.IMAP4.error) as exc:
                Console(stderr=True).print(f"[red]IMAP poll failed:[/red] {exc}; retrying")
            time.sleep(every)
    except KeyboardInterrupt:
        pass
    finally:
        engine.dispose()


class ListFormat(StrEnum):
    TABLE = "table"
    JSONL = "jsonl"


@app.command("list")
def list_command(
    unmatched: bool = typer.Option(False, "--unmatched", help="Only emails no delivery matched."),
    failed: bool = typer.Option(False, "--failed", help="Only emails that could not be read."),
    unverified: bool = typer.Option(False, "--unverified", help=(
        "Only bounces matched by recipient address alone: shown for review, never applied.")),
    state: list[str] = typer.Option([], "--state", help=f"Filter by state: {', '.join(INBOUND_STATES)}."),
    kind: str | None = typer.Option(None, "--kind", help=f"Filter by kind: {', '.join(INBOUND_KINDS)}."),
    limit: int = typer.Option(100, "--limit", min=1),
    output: ListFormat = typer.Option(ListFormat.TABLE, "--format", "-f"),
    database_url: str | None = DB_OPTION,
) -> None:
    """List stored inbound emails, newest first."""
    states = [*state, *(["unmatched"] if unmatched else []), *(["failed"] if failed else []),
              *(["unverified"] if unverified else [])]
    unknown = [s for s in states if s not in INBOUND_STATES]
    if unknown or (kind is not None and kind not in INBOUND_KINDS):
        raise typer.BadParameter(f"unknown state or kind: {', '.join(unknown) or kind}")
    engine = make_engine(_settings(database_url))
    try:
        rows = list_inbound(engine, states=states, kind=kind, limit=limit)
    finally:
        engine.dispose()
    if output is ListFormat.JSONL:
        for row in rows:
            typer.echo(json.dumps(_row_json(row), ensure_ascii=False))
        return
    table = Table("id", "received (UTC)", "source", "from host", "state", "kind", "match", "deliveries",
                  "note")
    for row in rows:
        host = f"{row.peer_ip} ({row.helo})" if row.peer_ip and row.helo else (row.peer_ip or "")
        shown = row.matched_delivery_ids[:10]
        table.add_row(str(row.id), row.received_at.strftime("%Y-%m-%d %H:%M:%S"), row.source, host[:60],
                      row.state, row.kind or "", row.match_method or "",
                      ",".join(str(i) for i in shown)
                      + (f" (+{len(row.matched_delivery_ids) - len(shown)})"
                         if len(row.matched_delivery_ids) > len(shown) else ""),
                      (row.error or (f"duplicate of {row.duplicate_of}" if row.duplicate_of else ""))[:80])
    Console().print(table)


def _row_json(row: store.InboundRow) -> dict[str, object]:
    return {"id": row.id, "received_at": row.received_at.isoformat(), "source": row.source,
            "origin": row.origin, "peer_ip": row.peer_ip, "helo": row.helo,
            "envelope_from": row.envelope_from,
            "envelope_to": list(row.envelope_to), "size": row.size, "state": row.state, "kind": row.kind,
            "match_method": row.match_method, "matched_delivery_ids": list(row.matched_delivery_ids),
            "account_id": row.account_id, "duplicate_of": row.duplicate_of, "error": row.error}


@app.command("reprocess")
def reprocess_command(
    failed: bool = typer.Option(False, "--failed", help="Emails that could not be read."),
    unmatched: bool = typer.Option(False, "--unmatched", help="Emails no delivery matched."),
    everything: bool = typer.Option(False, "--all", help="Every stored email (nothing is counted twice)."),
    ids: list[int] = typer.Option([], "--id", help="Only these stored emails."),
    database_url: str | None = DB_OPTION,
) -> None:
    """Read stored emails again (after a parser fix, or once their deliveries exist)."""
    if everything:
        states = list(INBOUND_STATES)
    else:
        states = [*(["failed"] if failed else []), *(["unmatched"] if unmatched else [])]
    if not states and not ids:
        raise typer.BadParameter("choose --failed, --unmatched, --all or --id")
    settings = _settings(database_url)
    engine = make_engine(settings)
    try:
        released = release_for_reprocess(engine, states, ids)
        Console().print(f"{released} emails queued again")
        _print_summary(process_all(engine, InboundContext.from_settings(settings), _now()))
    finally:
        engine.dispose()


@app.command("accept")
def accept_command(
    ids: list[int] = typer.Argument(..., help="Stored email ids in state unverified "
                                              "(see `bounces list --unverified`)."),
    database_url: str | None = DB_OPTION,
) -> None:
    """Apply unverified bounces after review (matched by recipient address alone; nothing proves them)."""
    settings = _settings(database_url)
    engine = make_engine(settings)
    try:
        accepted = accept_unverified(engine, ids)
        Console().print(f"{accepted} of {len(ids)} emails accepted")
        if accepted:
            _print_summary(process_all(engine, InboundContext.from_settings(settings), _now()))
    finally:
        engine.dispose()
    if accepted < len(ids):
        Console(stderr=True).print("[yellow]the others are not stored emails in state unverified[/yellow]")
        raise typer.Exit(ExitCode.PARTIAL)


@app.command("show")
def show_command(message_id: int = typer.Argument(..., help="Stored email id (see `bounces list`)."),
                 database_url: str | None = DB_OPTION) -> None:
    """Write one stored email's raw bytes to standard output."""
    engine = make_engine(_settings(database_url))
    try:
        with engine.connect() as conn:
            raw = store.raw_message(conn, message_id)
    finally:
        engine.dispose()
    if raw is None:
        Console(stderr=True).print(f"[red]no stored email {message_id}[/red]")
        raise typer.Exit(ExitCode.NOT_FOUND)
    sys.stdout.buffer.write(raw)
    sys.stdout.flush()
