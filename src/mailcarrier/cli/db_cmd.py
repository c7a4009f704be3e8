"""``mailcarrier db``: create or migrate the system of record."""

from __future__ import annotations

import typer
from rich.console import Console

from mailcarrier.cli.options import cli_settings
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
    engine = make_engine(cli_settings(database_url))
    console = Console()
    applied: list[str] = []

    def show(revision_id: str, title: str) -> None:
        applied.append(revision_id)
        console.print(f"  applied {revision_id}" + (f": {title}" if title else ""), soft_wrap=True,
                      highlight=False, markup=False)

    try:
        upgrade(engine, revision, on_revision=show)
        reached = current_revision(engine)
    finally:
        engine.dispose()
    # soft_wrap: the revision name must stay one copyable line
    state = f"{len(applied)} revision(s) applied" if applied else "already up to date"
    console.print(f"[green]database at revision {reached}[/green] ({state}): "
                  f"{engine.url.render_as_string(hide_password=True)}", soft_wrap=True)


@app.command("current")
def current_command(
    database_url: str | None = typer.Option(None, "--database-url",
                                            help="Overrides MAILCARRIER_DATABASE_URL."),
) -> None:
    """Print the revision the database is at ("none" if never migrated)."""
    engine = make_engine(cli_settings(database_url))
    try:
        Console().print(current_revision(engine) or "none")
    finally:
        engine.dispose()
