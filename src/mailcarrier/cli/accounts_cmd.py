"""``mailcarrier accounts``: create and list accounts (ESP customers)."""

from __future__ import annotations

from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.table import Table

from mailcarrier.config import load_settings
from mailcarrier.domain.errors import MailcarrierError
from mailcarrier.storage import accounts as repo
from mailcarrier.storage.engine import make_engine

app = typer.Typer(help="Accounts (one per customer).", no_args_is_help=True)
DB_OPTION = typer.Option(None, "--database-url", help="Overrides MAILCARRIER_DATABASE_URL.")


@app.command("create")
def create_command(slug: str, name: str = typer.Option("", help="Display name."),
                   database_url: str | None = DB_OPTION) -> None:
    """Create an account identified by SLUG."""
    engine = make_engine(load_settings(**({"database_url": database_url} if database_url else {})))
    try:
        with engine.begin() as conn:
            account = repo.create_account(conn, slug, name, datetime.now(UTC))
    except (MailcarrierError, ValueError) as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()
    Console().print(f"created account {account.slug} (id {account.id})")


@app.command("list")
def list_command(database_url: str | None = DB_OPTION) -> None:
    """List accounts."""
    engine = make_engine(load_settings(**({"database_url": database_url} if database_url else {})))
    try:
        with engine.connect() as conn:
            accounts = repo.list_accounts(conn)
    finally:
        engine.dispose()
    table = Table("id", "slug", "name", "created (UTC)")
    for account in accounts:
        table.add_row(str(account.id), account.slug, account.name, account.created_at.isoformat())
    Console().print(table)
