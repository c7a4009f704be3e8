"""``mailcarrier dkim``: the sending domains' DKIM keys (generated on first use otherwise)."""

from __future__ import annotations

import typer
from rich.console import Console

from mailcarrier.cli.error_kinds import exit_code_for
from mailcarrier.config import load_settings
from mailcarrier.delivery.dkim_keys import generate_key, signing_keys, zone_record
from mailcarrier.domain.errors import ConfigurationError
from mailcarrier.services.composition import DkimKey

app = typer.Typer(help="DKIM keys of the sending domains.", no_args_is_help=True)


@app.command("generate")
def generate_command(
    domain: str,
    selector: str | None = typer.Option(None, "--selector", help="Default: the dkim_selector setting."),
    algorithm: str | None = typer.Option(None, "--algorithm", help=(
        "rsa (2048 bits), ed25519 (with an RSA key beside it under <selector>-rsa) or ed25519-only.")),
    force: bool = typer.Option(False, "--force", help="Replace an existing key (rotate)."),
) -> None:
    """Create DOMAIN's key(s) under data_dir/dkim and print the TXT records to publish."""
    settings = load_settings()
    try:
        chosen = algorithm or settings.delivery.dkim_algorithm
        name = selector or settings.delivery.dkim_selector
        keys = [generate_key(settings.storage.data_dir, domain, name, chosen, overwrite=force)]
        if chosen == "ed25519":
            keys.append(generate_key(settings.storage.data_dir, domain, f"{name}-rsa", "rsa",
                                     overwrite=force))
    except ConfigurationError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(exit_code_for(exc)) from exc
    _print_records(keys)


def _print_records(keys: list[DkimKey] | tuple[DkimKey, ...]) -> None:
    """Zone-file lines, printed as they are (no wrapping, no markup): paste them into the zone."""
    for key in keys:
        typer.echo(zone_record(key))


@app.command("show")
def show_command(
    domain: str,
    selector: str | None = typer.Option(None, "--selector", help="Default: the dkim_selector setting."),
) -> None:
    """Print the TXT records of DOMAIN's signing keys in zone-file syntax (generating missing keys)."""
    settings = load_settings()
    try:
        keys = signing_keys(settings.storage.data_dir, domain, selector or settings.delivery.dkim_selector,
                            settings.delivery.dkim_algorithm)
    except ConfigurationError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(exit_code_for(exc)) from exc
    _print_records(keys)
