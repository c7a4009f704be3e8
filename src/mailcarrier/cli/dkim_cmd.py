"""``mailcarrier dkim``: the sending domains' DKIM keys (generated on first use otherwise)."""

from __future__ import annotations

import typer
from rich.console import Console

from mailcarrier.cli.exit_codes import ExitCode
from mailcarrier.config import load_settings
from mailcarrier.delivery.dkim_keys import dns_record, generate_key, load_or_create_key
from mailcarrier.domain.errors import ConfigurationError

app = typer.Typer(help="DKIM keys of the sending domains.", no_args_is_help=True)


@app.command("generate")
def generate_command(
    domain: str,
    selector: str | None = typer.Option(None, "--selector", help="Default: the dkim_selector setting."),
    algorithm: str | None = typer.Option(None, "--algorithm", help="rsa (2048 bits) or ed25519."),
    force: bool = typer.Option(False, "--force", help="Replace an existing key (rotate)."),
) -> None:
    """Create DOMAIN's key under data_dir/dkim and print the TXT record to publish."""
    settings = load_settings()
    try:
        key = generate_key(settings.data_dir, domain, selector or settings.dkim_selector,
                           algorithm or settings.dkim_algorithm, overwrite=force)
    except ConfigurationError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(ExitCode.FAILED) from exc
    Console().print(f"{key.selector}._domainkey.{key.domain} IN TXT \"{dns_record(key)}\"", soft_wrap=True)


@app.command("show")
def show_command(
    domain: str,
    selector: str | None = typer.Option(None, "--selector", help="Default: the dkim_selector setting."),
) -> None:
    """Print the TXT record of DOMAIN's key (generating the key if it does not exist yet)."""
    settings = load_settings()
    try:
        key = load_or_create_key(settings.data_dir, domain, selector or settings.dkim_selector,
                                 settings.dkim_algorithm)
    except ConfigurationError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(ExitCode.FAILED) from exc
    Console().print(f"{key.selector}._domainkey.{key.domain} IN TXT \"{dns_record(key)}\"", soft_wrap=True)
