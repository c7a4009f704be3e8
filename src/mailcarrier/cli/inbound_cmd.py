"""``mailcarrier inbound``: run the SMTP server of the bounce domain until interrupted."""

from __future__ import annotations

import logging
import signal
import threading

import typer
from rich.console import Console

from mailcarrier.config import load_settings
from mailcarrier.inbound.smtp_server import InboundServer
from mailcarrier.storage.engine import make_engine


def inbound_command(
    host: str | None = typer.Option(None, "--host", help="Overrides MAILCARRIER_INBOUND_HOST."),
    port: int | None = typer.Option(None, "--port", help="Overrides MAILCARRIER_INBOUND_PORT."),
    database_url: str | None = typer.Option(None, "--database-url",
                                            help="Overrides MAILCARRIER_DATABASE_URL."),
    processors: int = typer.Option(0, "--processors", min=0,
                                   help="Process in this many separate processes (0: a thread of the "
                                   "server). Use 1 or more on multi-core machines."),
) -> None:
    """Receive bounces, complaints and auto-replies over SMTP (VERP and configured addresses only).

    Each email is stored raw before it is acknowledged, then matched and acted on in the
    background. Stops cleanly on Ctrl-C or SIGTERM.
    """
    overrides: dict[str, object] = {}
    for name, value in (("inbound_host", host), ("inbound_port", port), ("database_url", database_url)):
        if value is not None:
            overrides[name] = value
    settings = load_settings(**overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    engine = make_engine(settings)
    server = InboundServer.from_settings(engine, settings, processors=processors)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    tls = " with STARTTLS" if settings.inbound.tls_cert else ""
    Console().print(f"mailcarrier inbound listening on {server.host}:{server.port}{tls} "
                    f"for {settings.inbound.bounce_domain}")
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        engine.dispose()
