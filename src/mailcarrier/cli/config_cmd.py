"""``mailcarrier config show``: the effective configuration, by section, secrets masked."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mailcarrier.cli.options import TableFormat, format_option
from mailcarrier.config import Origin, load_settings
from mailcarrier.config_view import settings_tree

app = typer.Typer(help="The effective configuration.", no_args_is_help=True)


@app.callback()
def _config() -> None:
    """The effective configuration."""


@app.command("show")
def show_command(output: TableFormat = format_option(TableFormat.TABLE),
                 changed: bool = typer.Option(False, "--changed", help=(
                     "Only the settings not at their default."))) -> None:
    """Every setting by section: its effective value, its variable and where the value came
    from (override, env, .env, file or default). The master secret, retired tracking secrets,
    the IMAP password and the database password are masked."""
    tree = {section: {name: shown for name, shown in leaves.items() if shown.set or not changed}
            for section, leaves in settings_tree(load_settings()).items()}
    tree = {section: leaves for section, leaves in tree.items() if leaves}
    if output is TableFormat.JSON:
        typer.echo(json.dumps({section: {name: {"value": shown.value, "set": shown.set, "env": shown.env,
                                                "from": shown.origin.value, "file": shown.file}
                                         for name, shown in leaves.items()}
                               for section, leaves in tree.items()}, indent=2))
        return
    console = Console()
    for section, leaves in tree.items():
        table = Table(title=escape(f"[{section}]"), title_justify="left", show_header=True)
        for column in ("setting", "variable", "value", "from"):
            table.add_column(column)
        for name, shown in leaves.items():
            origin = f"file ({shown.file})" if shown.origin is Origin.FILE else shown.origin.value
            table.add_row(name, shown.env, shown.value, origin)
        console.print(table, soft_wrap=True)
