"""``mailcarrier worker``: run the delivery worker (several may run at once on PostgreSQL)."""

from __future__ import annotations

import asyncio
import multiprocessing
import signal

import typer
from rich.console import Console

from mailcarrier.cli.exit_codes import ExitCode
from mailcarrier.config import load_settings
from mailcarrier.delivery.source_routing import routing_for
from mailcarrier.delivery.worker import Clock, SimulatedClock, SystemClock, run_worker
from mailcarrier.domain.errors import MailcarrierError
from mailcarrier.services.tracking import make_link_hook
from mailcarrier.storage.engine import is_sqlite, make_engine


def worker_command(
    once: bool = typer.Option(False, "--once", help=(
        "Deliver what is open now, waiting for its scheduled retries, and exit once no delivery "
        "of a sending mailing is open.")),
    until_idle: bool = typer.Option(False, "--until-idle", hidden=True,
                                    help="Former name of --once, still accepted."),
    concurrency: int | None = typer.Option(None, "--concurrency", min=1,
                                           help="Messages in flight at once (default: setting)."),
    simulate_time: bool = typer.Option(False, "--simulate-time", help=(
        "Jump over waits for scheduled retries instead of sleeping (tests, demos; one worker only).")),
    worker_id: str | None = typer.Option(None, "--worker-id", help="Name in claims (default host:pid:rand)."),
    processes: int = typer.Option(1, "--processes", min=1, help=(
        "Worker processes to run (rendering, signing and SMTP are CPU-bound: one per core).")),
    tracking: bool = typer.Option(True, "--tracking/--no-tracking", help=(
        "Rewrite links and add the open pixel (served by `mailcarrier serve` at public_url).")),
    database_url: str | None = typer.Option(None, "--database-url",
                                            help="Overrides MAILCARRIER_DATABASE_URL."),
) -> None:
    """Deliver queued messages: claim, render, sign, send, record; retries follow the schedule.

    Workers share the queue: on PostgreSQL with FOR UPDATE SKIP LOCKED (any number, any
    host); on SQLite their claims and records take turns on the single write lock (BEGIN
    IMMEDIATE), which is enough for a few processes on one machine. SIGTERM/SIGINT finish
    the current batch.
    """
    until_idle = once or until_idle
    if processes > 1:
        if simulate_time:
            raise typer.BadParameter("--simulate-time needs a single process (one clock)")
        context = multiprocessing.get_context("spawn")
        children = [context.Process(target=_child, args=(until_idle, concurrency, database_url,
                                                         f"{worker_id}-{n}" if worker_id else None,
                                                         tracking))
                    for n in range(processes)]
        for child in children:
            child.start()

        def forward(_signum: int, _frame: object) -> None:  # each child finishes its batch
            for child in children:
                child.terminate()

        signal.signal(signal.SIGTERM, forward)
        for child in children:
            child.join()
        if any(child.exitcode for child in children):
            raise typer.Exit(ExitCode.FAILED)
        return
    _run(until_idle, concurrency, database_url, worker_id, simulate_time, tracking)


def _child(until_idle: bool, concurrency: int | None, database_url: str | None,
           worker_id: str | None, tracking: bool) -> None:
    _run(until_idle, concurrency, database_url, worker_id, False, tracking)


def _run(until_idle: bool, concurrency: int | None, database_url: str | None, worker_id: str | None,
         simulate_time: bool, tracking: bool) -> None:
    settings = load_settings(**({"database_url": database_url} if database_url else {}))
    engine = make_engine(settings)
    console = Console(stderr=True)
    if is_sqlite(engine):
        console.print("[dim]SQLite: workers take turns on the single write lock[/dim]")
    clock: Clock = SimulatedClock() if simulate_time else SystemClock()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        hook = make_link_hook(engine, settings) if tracking else None
        stats = await run_worker(settings, engine, until_idle=until_idle, clock=clock,
                                 concurrency=concurrency, worker_id=worker_id, stop=stop,
                                 source_routing=routing_for(engine, settings), link_hook=hook)
        Console().print(
            f"worker done: {stats.claimed} claimed, {stats.attempts} attempts, {stats.delivered} delivered, "
            f"{stats.deferred} deferred, {stats.bounced} bounced, {stats.outcome_unknown} outcome unknown, "
            f"{stats.recovered} recovered after a crash, {stats.connections_opened} connections")

    try:
        asyncio.run(main())
    except MailcarrierError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(ExitCode.FAILED) from exc
    finally:
        engine.dispose()
