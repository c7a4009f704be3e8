"""``mailcarrier accounts``: create and list accounts (ESP customers) and issue their API keys.

The REST API and the dashboard only accept hashed API keys; ``accounts keys create`` is how an
operator hands one to a customer. The clear key is printed once and never stored.
"""

from __future__ import annotations

from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.table import Table

from mailcarrier.cli.error_kinds import exit_code_for
from mailcarrier.cli.options import cli_settings, next_step
from mailcarrier.domain.errors import InvalidInputError, MailcarrierError
from mailcarrier.domain.scopes import Scope
from mailcarrier.services import policies
from mailcarrier.services.policies import ACCOUNT_THRESHOLDS
from mailcarrier.storage import accounts as repo
from mailcarrier.storage import api_keys as keys_repo
from mailcarrier.storage.engine import make_engine, write_transaction

app = typer.Typer(help="Accounts (one per customer).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of an account (for the REST API and the dashboard).",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")
DB_OPTION = typer.Option(None, "--database-url", help="Overrides MAILCARRIER_DATABASE_URL.")
SCOPE_OPTION = typer.Option(
    [Scope.ALL], "--scope", case_sensitive=True,
    help="A scope such as contacts:read, mailings:write or reports:read (repeatable); "
         "'*' grants every scope (quote it in a shell), 'RESOURCE:*' every action on one resource.")


@app.command("create")
def create_command(slug: str, name: str = typer.Option("", help="Display name."),
                   database_url: str | None = DB_OPTION) -> None:
    """Create an account identified by SLUG."""
    engine = make_engine(cli_settings(database_url))
    try:
        with write_transaction(engine) as conn:
            account = repo.create_account(conn, slug, name, datetime.now(UTC))
    except (MailcarrierError, ValueError) as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(exit_code_for(exc)) from exc
    finally:
        engine.dispose()
    hint = next_step("contacts", "import", "FILE.csv", "--audience", "NAME", account=account.slug,
                     database_url=database_url)
    Console().print(f"created account {account.slug} (id {account.id}); add contacts with: {hint}",
                    highlight=False, soft_wrap=True)


@app.command("list")
def list_command(database_url: str | None = DB_OPTION) -> None:
    """List accounts."""
    engine = make_engine(cli_settings(database_url))
    try:
        with engine.connect() as conn:
            accounts = repo.list_accounts(conn)
    finally:
        engine.dispose()
    table = Table("id", "slug", "name", "created (UTC)")
    for account in accounts:
        table.add_row(str(account.id), account.slug, account.name, account.created_at.isoformat())
    Console().print(table)


def _fail(exc: Exception) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {exc}")
    return typer.Exit(exit_code_for(exc))


@keys_app.command("create")
def keys_create_command(account: str, name: str = typer.Option(..., "--name", help="What the key is for."),
                        scope: list[Scope] = SCOPE_OPTION,
                        database_url: str | None = DB_OPTION) -> None:
    """Issue an API key for ACCOUNT (slug) and print it once."""
    engine = make_engine(cli_settings(database_url))
    try:
        with write_transaction(engine) as conn:
            owner = repo.account_by_slug(conn, account)
            key, plain = keys_repo.create_api_key(conn, owner.id, name, scope, datetime.now(UTC))
    except (MailcarrierError, ValueError) as exc:
        raise _fail(exc) from exc
    finally:
        engine.dispose()
    console = Console()
    console.print(f"API key {key.prefix} for account {owner.slug}, scopes {', '.join(sorted(key.scopes))}")
    console.print("It is shown only now; store it safely:", style="bold")
    # Printed bare, without Rich markup or wrapping, so it can be copied or captured by a script.
    print(plain)


@keys_app.command("list")
def keys_list_command(account: str, database_url: str | None = DB_OPTION) -> None:
    """List ACCOUNT's API keys (prefix, scopes, last use; never the secret)."""
    engine = make_engine(cli_settings(database_url))
    try:
        with engine.connect() as conn:
            owner = repo.account_by_slug(conn, account)
            found = keys_repo.list_api_keys(conn, owner.id)
    except MailcarrierError as exc:
        raise _fail(exc) from exc
    finally:
        engine.dispose()
    table = Table("prefix", "name", "scopes", "created (UTC)", "last used", "revoked")
    for key in found:
        table.add_row(key.prefix, key.name, " ".join(sorted(key.scopes)), key.created_at.isoformat(),
                      key.last_used_at.isoformat() if key.last_used_at else "-",
                      key.revoked_at.isoformat() if key.revoked_at else "-")
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke_command(account: str, prefix: str, database_url: str | None = DB_OPTION) -> None:
    """Revoke ACCOUNT's key PREFIX; the API refuses it once its few seconds of cache have passed."""
    engine = make_engine(cli_settings(database_url))
    try:
        with write_transaction(engine) as conn:
            owner = repo.account_by_slug(conn, account)
            keys_repo.revoke_api_key(conn, owner.id, prefix, datetime.now(UTC))
    except MailcarrierError as exc:
        raise _fail(exc) from exc
    finally:
        engine.dispose()
    Console().print(f"revoked API key {prefix} of account {owner.slug}")


@app.command("policy")
def policy_command(
    slug: str,
    contact_policy: str | None = typer.Option(None, "--contact-policy", help=(
        "marketo (default; seed 001: category 2 invalid at once, category 1 counted until it "
        "repeats) or emma (seed 003: every hard bounce moves the contact to error).")),
    threshold: list[str] = typer.Option([], "--threshold", help=(
        "NAME=VALUE, the account's own value of a setting (repeatable; NAME= removes it), e.g. "
        "max_bounce_rate=0.11. Names: " + ", ".join(ACCOUNT_THRESHOLDS))),
    database_url: str | None = DB_OPTION,
) -> None:
    """Show or change an account's contact policy preset and thresholds."""
    engine = make_engine(cli_settings(database_url))
    try:
        preset = policies.contact_policy(contact_policy).value if contact_policy else None
        with write_transaction(engine) as conn:
            account = repo.account_by_slug(conn, slug)
            current = repo.account_policies(conn, [account.id])[account.id].thresholds
            thresholds = None
            if threshold:
                changes: dict[str, object] = {}
                for item in threshold:
                    name, sep, value = item.partition("=")
                    if not sep:
                        raise InvalidInputError(f"--threshold {item!r}: use NAME=VALUE")
                    changes[name.strip()] = value.strip() or None
                thresholds = policies.validate_thresholds({**current, **changes})
            own = repo.set_account_policy(conn, account.id, contact_policy=preset, thresholds=thresholds)
    except (MailcarrierError, ValueError) as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(exit_code_for(exc)) from exc
    finally:
        engine.dispose()
    out = Console()
    out.print(f"{slug}: contact policy {own.contact_policy}", highlight=False)
    for name in ACCOUNT_THRESHOLDS:
        if name in own.thresholds:
            out.print(f"  {name} = {own.thresholds[name]} (account)", highlight=False)
