"""``mailcarrier audiences``: create and list an account's audiences (lists)."""

from __future__ import annotations

from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.table import Table

from mailcarrier.cli.error_kinds import exit_code_for
from mailcarrier.cli.options import DB_OPTION, account_option, cli_settings
from mailcarrier.domain.errors import MailcarrierError
from mailcarrier.storage import accounts as repo
from mailcarrier.storage.engine import make_engine, write_transaction

app = typer.Typer(help="Audiences (lists of contacts).", no_args_is_help=True)
ACCOUNT_OPTION = account_option()


@app.command("create")
def create_command(name: str, account: str = ACCOUNT_OPTION,
                   description: str = typer.Option("", help="What the list is for."),
                   database_url: str | None = DB_OPTION) -> None:
    """Create an audience NAME in the account."""
    engine = make_engine(cli_settings(database_url))
    try:
        with write_transaction(engine) as conn:
            owner = repo.account_by_slug(conn, account)
            audience = repo.create_audience(conn, owner.id, name, datetime.now(UTC), description)
    except (MailcarrierError, ValueError, LookupError) as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(exit_code_for(exc)) from exc
    finally:
        engine.dispose()
    Console().print(f"created audience {audience.name!r} (id {audience.id}) in {account}")


@app.command("list")
def list_command(account: str = ACCOUNT_OPTION, database_url: str | None = DB_OPTION) -> None:
    """List the account's audiences."""
    engine = make_engine(cli_settings(database_url))
    try:
        with engine.connect() as conn:
            audiences = repo.list_audiences(conn, repo.account_by_slug(conn, account).id)
    except LookupError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(exit_code_for(exc)) from exc
    finally:
        engine.dispose()
    table = Table("id", "name", "description", "created (UTC)")
    for audience in audiences:
        table.add_row(str(audience.id), audience.name, audience.description,
                      audience.created_at.isoformat())
    Console().print(table)
