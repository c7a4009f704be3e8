"""``mailcarrier serve``: the HTTP API, tracking and subscription endpoints (uvicorn)."""

from __future__ import annotations

import os

import typer
import uvicorn


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
    uvicorn.run("mailcarrier.api.asgi:app_from_env", factory=True, host=host, port=port,
                workers=workers, access_log=access_log, log_level=log_level,
                proxy_headers=True, server_header=False)
