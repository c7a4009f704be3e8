"""``mailcarrier db``: create or migrate the system of record."""

from __future__ import annotations

import typer
from rich.console import Console

from mailcarrier.config import load_settings
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.migrate import current_revision, upgrade

app = typer.Typer(help="Database schema management.", no_args_is_help=True)


@app.command("upgrade")
def upgrade_command(
    revision: str = typer.Argument("head", help="Target revision (default: the latest)."),
    database_url: str | None = typer.Option(None, "--database-url",
                                            help="Overrides MAILCARRIER_DATABASE_URL."),
) -> None:
    """Apply pending migrations (safe to run repeatedly)."""
    engine = make_engine(load_settings(**({"database_url": database_url} if database_url else {})))
    try:
        upgrade(engine, revision)
        reached = current_revision(engine)
    finally:
        engine.dispose()
    # soft_wrap: the revision name must stay one copyable line
    Console().print(f"[green]database at revision {reached}[/green]: "
                    f"{engine.url.render_as_string(hide_password=True)}", soft_wrap=True)


@app.command("current")
def current_command(
    database_url: str | None = typer.Option(None, "--database-url",
                                            help="Overrides MAILCARRIER_DATABASE_URL."),
) -> None:
    """Print the revision the database is at ("none" if never migrated)."""
    engine = make_engine(load_settings(**({"database_url": database_url} if database_url else {})))
    try:
        Console().print(current_revision(engine) or "none")
    finally:
        engine.dispose()
