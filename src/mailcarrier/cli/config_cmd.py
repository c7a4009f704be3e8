"""``mailcarrier config show``: the effective configuration, by section, secrets masked."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from mailcarrier.cli.options import TableFormat, format_option
from mailcarrier.config import load_settings
from mailcarrier.config_view import settings_tree

app = typer.Typer(help="The effective configuration.", no_args_is_help=True)


@app.callback()
def _config() -> None:
    """The effective configuration."""


@app.command("show")
def show_command(output: TableFormat = format_option(TableFormat.TABLE)) -> None:
    """Every setting with its effective value (environment, .env file or default), by section;
    the master secret, retired tracking secrets, the IMAP password and the database password
    are masked."""
    tree = settings_tree(load_settings())
    if output is TableFormat.JSON:
        typer.echo(json.dumps({section: {name: {"value": shown.value, "set": shown.set}
                                         for name, shown in values.items()}
                               for section, values in tree.items()}, indent=2))
        return
    console = Console()
    for section, values in tree.items():
        table = Table(title=section, title_justify="left", show_header=True)
        table.add_column("setting (MAILCARRIER_...)")
        table.add_column("value")
        table.add_column("from")
        for name, shown in values.items():
            table.add_row(name.upper(), shown.value, "set" if shown.set else "default")
        console.print(table, soft_wrap=True)
