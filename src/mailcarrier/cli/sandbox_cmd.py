"""``mailcarrier sandbox``: a local MX that plays many recipient domains, for trying things out."""

from __future__ import annotations

import logging
import signal
import threading

import typer
from rich.console import Console
from rich.table import Table

from mailcarrier.config import load_settings
from mailcarrier.delivery.sandbox import Sandbox, dsn_target_problem

BEHAVIOURS = (
    ("unknown*", "550 5.1.1 user unknown, worded like the recipient's provider"),
    ("full*", "452 4.2.2 mailbox full (retried, then a soft bounce)"),
    ("grey*", "451 4.7.1 greylisted on the first try, accepted afterwards"),
    ("throttle*", "421 4.7.0 too many connections (the domain is backed off)"),
    ("slowrcpt*", "no answer to RCPT: timeout before the final '.' (146)"),
    ("slowdata*", "no answer after the final '.': outcome unknown (147)"),
    ("drop*", "connection dropped at RCPT (150)"),
    ("aol*", "250 now, an RFC 3464 bounce later to the VERP return path"),
    ("anything else", "250 accepted, queue id in the reply"),
)


def behaviour_table() -> Table:
    table = Table("recipient local part", "behaviour")
    for pattern, meaning in BEHAVIOURS:
        table.add_row(pattern, meaning)
    return table


def sandbox_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(2525, "--port", help="Port to listen on."),
    stall_seconds: float = typer.Option(30.0, "--stall-seconds", help="How long the slow* behaviours stall."),
    dsn_to: str | None = typer.Option(None, "--dsn-to", help=(
        "host:port receiving asynchronous bounces (default: the inbound_host/inbound_port settings).")),
    dsn_delay: float = typer.Option(5.0, "--dsn-delay", help="Seconds between the 250 and the bounce."),
    quiet: bool = typer.Option(False, "--quiet", help="Log only warnings, not every RCPT and message."),
) -> None:
    """Run the sandbox MX until interrupted; route mail to it with MAILCARRIER_STATIC_ROUTES='*=HOST:PORT'.

    Every RCPT answer, accepted message and late bounce is logged to standard error; a late
    bounce that cannot be delivered (no `mailcarrier inbound` at the bounce target) is a
    warning, and so is a target that does not answer at start-up.
    """
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings()
    if dsn_to:
        dsn_host, _, dsn_port = dsn_to.rpartition(":")
        if not dsn_host or not dsn_port.isdigit():
            raise typer.BadParameter(f"--dsn-to {dsn_to!r} is not host:port")
        target = (dsn_host, int(dsn_port))
    else:
        target = (settings.inbound.host, settings.inbound.port)
    console = Console()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with Sandbox(host, port, stall_seconds=stall_seconds, dsn_target=target, dsn_delay=dsn_delay) as sandbox:
        port = sandbox.port  # the one chosen when --port 0
        console.print(f"sandbox MX on {host}:{port}; bounces go to {target[0]}:{target[1]}")
        console.print(behaviour_table())
        console.print(f"route to it: MAILCARRIER_STATIC_ROUTES='*={host}:{port}'  (Ctrl-C stops)")
        problem = dsn_target_problem(*target)
        if problem is not None:
            Console(stderr=True).print(
                f"[yellow]warning:[/yellow] {problem}: the late bounces of aol* recipients will be lost. "
                f"Start `mailcarrier inbound` there, or give --dsn-to HOST:PORT.", highlight=False)
        done.wait()
        console.print(f"received {len(sandbox.received)} messages, "
                      f"mailed {len(sandbox.handler.dsns_sent)} asynchronous bounces")
