"""``mailcarrier worker``: run the delivery worker (several may run at once on PostgreSQL)."""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import threading
from datetime import datetime

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from mailcarrier.cli.error_kinds import exit_code_for
from mailcarrier.cli.exit_codes import ExitCode
from mailcarrier.cli.options import cli_settings, public_url_warning
from mailcarrier.delivery.source_routing import routing_for
from mailcarrier.delivery.worker import (
    Clock,
    SystemClock,
    WorkerStats,
    retry_policy,
    run_worker,
    simulated_clock_ending_now,
)
from mailcarrier.domain.errors import MailcarrierError
from mailcarrier.services.tracking.links import make_link_hook
from mailcarrier.storage.engine import is_sqlite, make_engine
from mailcarrier.storage.outbox import OpenWork, open_work


def worker_command(
    once: bool = typer.Option(False, "--once", help=(
        "Deliver what is open now, waiting for its scheduled retries, and exit once no delivery "
        "of a sending mailing is open.")),
    until_idle: bool = typer.Option(False, "--until-idle", hidden=True,
                                    help="Former name of --once, still accepted."),
    concurrency: int | None = typer.Option(None, "--concurrency", min=1,
                                           help="Messages in flight at once (default: setting)."),
    simulate_time: bool = typer.Option(False, "--simulate-time", help=(
        "Jump over waits for scheduled retries instead of sleeping (tests, demos; one worker "
        "only): the open deliveries are replayed as if due 30 hours ago, so the whole retry "
        "schedule runs in seconds and ends by now; nothing is dated in the future.")),
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
    _run(until_idle, concurrency, database_url, worker_id, simulate_time, tracking, progress=until_idle)


def _child(until_idle: bool, concurrency: int | None, database_url: str | None,
           worker_id: str | None, tracking: bool) -> None:
    # No progress line per child: N of them would overwrite each other on one terminal.
    _run(until_idle, concurrency, database_url, worker_id, False, tracking, progress=False)


def _run(until_idle: bool, concurrency: int | None, database_url: str | None, worker_id: str | None,
         simulate_time: bool, tracking: bool, *, progress: bool) -> None:
    settings = cli_settings(database_url)
    engine = make_engine(settings)
    console = Console(stderr=True)
    warning = public_url_warning(settings.api.public_url)
    if warning:
        typer.echo(warning, err=True)
    if is_sqlite(engine):
        console.print("[dim]SQLite: workers take turns on the single write lock[/dim]")
    clock: Clock = simulated_clock_ending_now(engine, retry_policy(settings)) if simulate_time \
        else SystemClock()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        hook = make_link_hook(engine, settings) if tracking else None
        display = DeliveryProgress(engine, clock, console) if progress else None
        try:
            stats = await run_worker(settings, engine, until_idle=until_idle, clock=clock,
                                     concurrency=concurrency, worker_id=worker_id, stop=stop,
                                     source_routing=routing_for(engine, settings), link_hook=hook,
                                     on_batch=display.batch_done if display else None)
        finally:
            if display is not None:
                display.close()
        Console().print(
            f"worker done: {stats.claimed} claimed, {stats.attempts} attempts, {stats.delivered} delivered, "
            f"{stats.deferred} deferred, {stats.bounced} bounced, {stats.outcome_unknown} outcome unknown, "
            f"{stats.recovered} recovered after a crash, {stats.connections_opened} connections")

    try:
        asyncio.run(main())
    except MailcarrierError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(exit_code_for(exc)) from exc
    finally:
        engine.dispose()


def _finished(stats: WorkerStats) -> int:
    """Deliveries this worker brought to a final state (delivered, bounced or failed)."""
    return stats.delivered + stats.bounced + stats.failed


class DeliveryProgress:
    """A Rich progress line for ``worker --once``: deliveries done, waiting, next retry.

    "Done" counts what this worker finished; "waiting" is every open delivery of a sending
    mailing (other workers' too), read from the database once a second in a thread of its
    own, so the display never holds up sending. Times are the worker's clock (simulated
    with ``--simulate-time``). On a terminal it redraws in place; otherwise (a log, a pipe)
    it prints the last state once at the end.
    """

    def __init__(self, engine: Engine, clock: Clock, console: Console, interval: float = 1.0) -> None:
        self._engine, self._clock, self._interval = engine, clock, interval
        self._done = 0
        self._work = OpenWork(waiting=0, scheduled=0, next_retry=None)
        self._progress = Progress(SpinnerColumn(), TextColumn("deliveries"), BarColumn(),
                                  MofNCompleteColumn(), TextColumn("{task.fields[detail]}"),
                                  TimeElapsedColumn(), console=console, transient=False)
        self._task = self._progress.add_task("deliveries", total=None, detail="counting...")
        self._stop = threading.Event()
        self._progress.start()
        self._refresh_from_database()
        self._poller = threading.Thread(target=self._poll, name="mailcarrier-worker-progress", daemon=True)
        self._poller.start()

    def batch_done(self, stats: WorkerStats) -> None:
        """``run_worker``'s ``on_batch`` hook: update the done count (no database access)."""
        self._done = _finished(stats)
        self._show()

    def close(self) -> None:
        """Read the final counts, draw them and stop redrawing."""
        self._stop.set()
        self._poller.join()
        self._refresh_from_database()
        self._progress.stop()

    def _poll(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._refresh_from_database()
            except SQLAlchemyError:  # busy or briefly unreachable: the display waits for the next poll
                continue

    def _refresh_from_database(self) -> None:
        self._work = open_work(self._engine, self._clock.now())
        self._show()

    def _show(self) -> None:
        work = self._work
        detail = f"done {self._done}, waiting {work.waiting}"
        if work.scheduled:
            upcoming = _when(work.next_retry, self._clock.now())
            detail += f" ({work.scheduled} retries scheduled, next {upcoming})"
        self._progress.update(self._task, completed=self._done, total=self._done + work.waiting,
                              detail=detail)


def _when(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    seconds = max(0, int((moment - now).total_seconds()))
    if seconds >= 3600:
        wait = f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    else:
        wait = f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{moment:%H:%M:%S} UTC, in {wait}"
