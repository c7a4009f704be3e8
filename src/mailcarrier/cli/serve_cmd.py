"""``mailcarrier serve``: the HTTP API, tracking and subscription endpoints (uvicorn).

The serving processes only append tracking hits to the spool; a separate writer process
(started here, one for all ``--workers``) classifies them and writes them to the database.
Measured on the click benchmark, doing that work in a thread of the serving process cost a
p99 of 130-200 ms (GIL contention and the garbage collections its allocations triggered);
in its own process it costs the endpoints nothing but a ``write(2)`` per hit.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import threading
from multiprocessing.connection import Connection

import typer
import uvicorn
from fastapi import FastAPI

from mailcarrier.api.asgi import app_from_env
from mailcarrier.cli.exit_codes import ExitCode
from mailcarrier.cli.options import public_url_warning
from mailcarrier.config import load_settings
from mailcarrier.services.policies import status_policy
from mailcarrier.services.report_rollups import fold_periodically
from mailcarrier.services.tracking.writer import HitWriter
from mailcarrier.storage.engine import make_engine

__all__ = ["WriterSupervisor", "run_hit_writer", "serve_command", "serving_app"]

_log = logging.getLogger("mailcarrier.serve")


def serving_app() -> FastAPI:
    """The app each server process runs, with start-up objects frozen out of the collector.

    Everything built so far (modules, routes, settings, keys) lives as long as the process;
    without ``gc.freeze`` the first full collection under load scans all ~150k of those
    objects and stops the event loop for 80-140 ms (measured), which is the p99 on its own.
    """
    app = app_from_env()
    gc.collect()
    gc.freeze()
    return app


def run_hit_writer(parent_pid: int, ready: Connection) -> None:
    """Body of the writer process: drain the spool until SIGTERM or the server dies.

    Runs at a lower priority (``tracking_writer_nice``): on a busy machine the endpoints'
    latency matters now, the writer only has to catch up within seconds. Ignores SIGINT (a
    Ctrl-C reaches the whole process group; the server stops first and then sends SIGTERM,
    so nothing spooled is left behind). A signal, not a ``multiprocessing.Event``: a writer
    killed while waiting on such an event leaves it unusable and the server's shutdown hangs.
    ``ready`` gets one message once SIGTERM is handled.
    If the server is killed, the writer notices its parent is gone, writes what is spooled
    and exits; the next ``mailcarrier serve`` picks up anything left.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    local_stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: local_stop.set())
    ready.send_bytes(b"ready")  # from now on SIGTERM means "drain, then exit"
    ready.close()
    settings = load_settings()
    os.nice(settings.tracking.writer_nice)
    engine = make_engine(settings)
    writer = HitWriter(engine, settings, status_policy(settings))

    def watch() -> None:
        while not local_stop.wait(0.2):
            if os.getppid() != parent_pid:
                local_stop.set()

    threading.Thread(target=watch, name="mailcarrier-writer-watch", daemon=True).start()
    # The bounce reports only read; folding their rollups is a write, so it lives here.
    threading.Thread(target=fold_periodically, args=(engine, local_stop),
                     name="mailcarrier-rollup-fold", daemon=True).start()
    try:
        writer.run(local_stop)
    finally:
        engine.dispose()


class WriterSupervisor:
    """Keeps one hit-writer process running while the server runs, and stops it last.

    A writer that dies (killed, out of memory, a bug) is replaced within a second: the hits
    meanwhile wait in the spool, so none is lost, but without a writer none would be stored
    until the next restart of the server.
    """

    def __init__(self, check_interval: float = 1.0, startup_timeout: float = 60.0) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._startup_timeout = startup_timeout
        self._ready: Connection
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._interval = check_interval
        self.process = self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="mailcarrier-writer-supervisor",
                                         daemon=True)
        self._watcher.start()

    def stop(self) -> int | None:
        """Tell the writer to drain the spool and exit; wait for it; its exit code."""
        with self._lock:
            self._stopping.set()
        # A SIGTERM before the writer has installed its handler (it imports for a second or
        # two) would kill it undrained: wait for its word (or its end: EOF) first.
        self._ready.poll(self._startup_timeout)
        self.process.terminate()  # SIGTERM: drain, then exit
        self.process.join()
        return self.process.exitcode

    def _spawn(self) -> multiprocessing.process.BaseProcess:
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(target=run_hit_writer, args=(os.getpid(), sender),
                                        name="mailcarrier-hit-writer")
        process.start()
        sender.close()
        self._ready = receiver
        return process

    def _watch(self) -> None:
        while not self._stopping.wait(self._interval):
            with self._lock:
                if self._stopping.is_set() or self.process.is_alive():
                    continue
                _log.error("the tracking hit writer exited with %s; starting another",
                           self.process.exitcode)
                self.process = self._spawn()


def serve_command(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8025, help="TCP port to listen on."),
    workers: int = typer.Option(1, min=1, help="Worker processes (each with its own event loop)."),
    database_url: str | None = typer.Option(None, "--database-url",
                                            help="Overrides MAILCARRIER_DATABASE_URL."),
    access_log: bool = typer.Option(False, help="Log every request (costs throughput)."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Run the API server until interrupted."""
    if database_url:
        # Workers are separate processes that configure themselves from the environment.
        os.environ["MAILCARRIER_DATABASE_URL"] = database_url
    os.environ["MAILCARRIER_TRACKING_WRITER"] = "external"
    settings = load_settings()  # a configuration error shows here, before any process starts
    warning = public_url_warning(settings.api.public_url)
    if warning:
        typer.echo(warning, err=True)
    writer = WriterSupervisor()
    # uvicorn restores the handlers it found and re-raises SIGINT/SIGTERM after its graceful
    # shutdown; with the default handlers that would kill this process before the writer has
    # drained the spool. These only note the signal: the shutdown below then runs.
    received: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda sig, _frame: received.append(sig))
    try:
        uvicorn.run("mailcarrier.cli.serve_cmd:serving_app", factory=True, host=host, port=port,
                    workers=workers, access_log=access_log, log_level=log_level,
                    # Forwarded headers are the app's business (api/proxies.py, trusted_proxies):
                    # uvicorn's own handling believes them from loopback.
                    proxy_headers=False, server_header=False)
    finally:
        # The servers have closed their spool segments: the writer drains them and exits.
        code = writer.stop()
        if code != 0:
            typer.echo(f"the tracking hit writer ended with exit code {code}", err=True)
            raise typer.Exit(ExitCode.FAILED)
