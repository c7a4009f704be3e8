"""``mailcarrier mailings``: create, send, pause, resume, cancel, list and show mailings."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import Engine

from mailcarrier.cli.error_kinds import exit_code_for
from mailcarrier.cli.exit_codes import ExitCode, epilog
from mailcarrier.cli.mailings_check_cmd import check_command
from mailcarrier.cli.options import (
    DB_OPTION,
    TableFormat,
    account_option,
    cli_settings,
    format_option,
    next_step,
    to_json,
)
from mailcarrier.domain.errors import InvalidInputError, MailcarrierError, NotFoundError
from mailcarrier.domain.vocabulary import Category
from mailcarrier.services import automation
from mailcarrier.services import mailings as service
from mailcarrier.services.contact_import import normalise_address
from mailcarrier.services.figures import MailingFigures, mailing_figures
from mailcarrier.services.hygiene import DomainNotSendableError
from mailcarrier.services.pools.sender_checks import sender_hygiene_gate
from mailcarrier.services.test_sends import send_test
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage import contacts as contact_repo
from mailcarrier.storage.engine import make_engine

app = typer.Typer(help="Mailings: create, check, send, test-send, automate (activate, trigger), pause, "
                       "resume, cancel, figures.", no_args_is_help=True)
ACCOUNT_OPTION = account_option()
ERR = Console(stderr=True)
_CATEGORY_NAMES = {1: "1 spam/block", 2: "2 invalid address", 3: "3 temporary", 4: "4 technical",
                   9: "9 unknown"}


def _engine(database_url: str | None) -> Engine:
    return make_engine(cli_settings(database_url))


def _fail(exc: Exception) -> typer.Exit:
    ERR.print(f"[red]error:[/red] {exc}")
    return typer.Exit(exit_code_for(exc))


def figures_table(summary: service.MailingSummary, figures: MailingFigures) -> Table:
    """The response figures of a mailing as a Rich table (also used by ``mailcarrier demo``)."""
    table = Table(title=f"mailing {summary.id} {summary.name!r} ({summary.kind}, {summary.state})",
                  show_header=True)
    table.add_column("figure")
    table.add_column("recipients", justify="right")
    rows = [
        ("audience (all recipients)", figures.recipients),
        ("suppressed (not mailed: error, opted out, pending)", figures.suppressed),
        ("sent (at least one attempt)", figures.sent),
        ("delivered", figures.delivered - figures.outcome_unknown),
        ("delivered, outcome unknown (no reply after the final '.')", figures.outcome_unknown),
        ("bounced hard", figures.bounced_hard),
        ("bounced soft", figures.bounced_soft),
    ]
    for label, value in rows:
        table.add_row(label, str(value))
    for category, count in sorted(figures.bounced_by_category.items()):
        name = _CATEGORY_NAMES.get(category, str(Category(category).value))
        table.add_row(f"  bounced, category {name}", str(count))
    for reason, count in sorted(figures.bounced_by_reason.items()):
        table.add_row(f"  bounced, reason {reason}", str(count))
    table.add_row("in progress (retry scheduled)", str(figures.in_progress))
    table.add_row("queued (not tried yet)", str(figures.queued))
    table.add_row("failed or cancelled", str(figures.failed))
    if figures.resent_after_crash:
        table.add_row("resent after a worker crash (may have arrived twice)", str(figures.resent_after_crash))
    return table


@app.command("create")
def create_command(
    subject: str = typer.Option(..., "--subject", help="Subject (Jinja2: {{ first_name }} ...)."),
    from_address: str = typer.Option(..., "--from", help="Sender address; its domain signs DKIM."),
    html: Path | None = typer.Option(None, "--html", exists=True, dir_okay=False, help="HTML body file."),
    text: Path | None = typer.Option(None, "--text", exists=True, dir_okay=False, help="Text body file."),
    audience: str | None = typer.Option(None, "--audience", help="Audience name (default: all contacts)."),
    name: str = typer.Option("", "--name", help="Internal name."),
    from_name: str = typer.Option("", "--from-name", help="Display name of the sender."),
    kind: str = typer.Option("regular", "--kind", help=(
        "regular or automated (then `mailings activate ID --trigger ...`); a test goes to named "
        "addresses with `mailings test-send`.")),
    status: list[str] = typer.Option([], "--status", help="Segment: contact status (repeatable)."),
    field: list[str] = typer.Option([], "--field", help="Segment: custom field NAME=VALUE (repeatable)."),
    account: str = ACCOUNT_OPTION,
    database_url: str | None = DB_OPTION,
) -> None:
    """Create a draft mailing; its templates are checked against a sample contact."""
    engine = _engine(database_url)
    try:
        fields = {}
        for entry in field:
            key, eq, value = entry.partition("=")
            if not eq or not key:
                raise InvalidInputError(f"--field {entry!r} is not NAME=VALUE")
            fields[key] = value
        segment = service.Segment(tuple(status), fields) if status or fields else None
        with engine.connect() as conn:
            owner = account_repo.account_by_slug(conn, account)
            audience_id = account_repo.audience_by_name(conn, owner.id, audience).id if audience else None
        mailing_id = service.create_mailing(engine, service.MailingDraft(
            account_id=owner.id, from_address=from_address, subject=subject,
            html=html.read_text(encoding="utf-8") if html else "",
            text=text.read_text(encoding="utf-8") if text else "", name=name, from_name=from_name,
            kind=kind, audience_id=audience_id, segment=segment), datetime.now(UTC))
    except (MailcarrierError, ValueError, LookupError) as exc:
        raise _fail(exc) from exc
    finally:
        engine.dispose()
    hint = next_step("mailings", "send", str(mailing_id), account=account, database_url=database_url)
    Console().print(f"created mailing {mailing_id} (draft); send it with: {hint}", highlight=False,
                    soft_wrap=True)


def _change(action: str, mailing_id: int, account: str, database_url: str | None) -> None:
    engine = _engine(database_url)
    operations = {"send": service.send_mailing, "pause": service.pause_mailing,
                  "resume": service.resume_mailing, "cancel": service.cancel_mailing}
    try:
        with engine.connect() as conn:
            owner = account_repo.account_by_slug(conn, account)
        if action == "send":  # marketing mail from a pool failing sender hygiene is refused
            settings = cli_settings(database_url)
            gate = sender_hygiene_gate(settings)
            summary = service.send_mailing(engine, owner.id, mailing_id, datetime.now(UTC), sender_check=gate)
        else:
            summary = operations[action](engine, owner.id, mailing_id, datetime.now(UTC))
    except DomainNotSendableError as exc:  # refused by policy, not failed: exit 5
        ERR.print(f"[red]refused:[/red] {escape(str(exc))}")
        raise typer.Exit(exit_code_for(exc)) from exc
    except (MailcarrierError, ValueError, LookupError) as exc:
        raise _fail(exc) from exc
    finally:
        engine.dispose()
    out = Console()
    out.print(f"mailing {summary.id}: {summary.state} ({summary.recipients_total} recipients, "
              f"{summary.suppressed_total} suppressed)")
    if action in ("send", "resume"):  # nothing goes out without a worker
        worker = next_step("worker", "--once", database_url=database_url)
        follow = next_step("mailings", "show", str(summary.id), account=account, database_url=database_url)
        out.print(f"deliver with: {worker} (or a running `mailcarrier worker`); follow it with: {follow}",
                  highlight=False, soft_wrap=True, markup=False)


@app.command("send", epilog=epilog(ExitCode.REFUSED))
def send_command(mailing_id: int, account: str = ACCOUNT_OPTION,
                 database_url: str | None = DB_OPTION) -> None:
    """Enqueue one delivery per active contact and start sending (run `mailcarrier worker`).

    Marketing mail of an account on a pool is refused (exit 5) while its From domain fails the
    sender hygiene checks; the refusal lists each failed check and its fix.
    """
    _change("send", mailing_id, account, database_url)


@app.command("pause")
def pause_command(mailing_id: int, account: str = ACCOUNT_OPTION,
                 database_url: str | None = DB_OPTION) -> None:
    """Stop claiming new deliveries of the mailing."""
    _change("pause", mailing_id, account, database_url)


@app.command("resume")
def resume_command(mailing_id: int, account: str = ACCOUNT_OPTION,
                 database_url: str | None = DB_OPTION) -> None:
    """Resume a paused mailing."""
    _change("resume", mailing_id, account, database_url)


@app.command("cancel")
def cancel_command(mailing_id: int, account: str = ACCOUNT_OPTION,
                 database_url: str | None = DB_OPTION) -> None:
    """Cancel the mailing; recipients not reached yet become failed (cancelled)."""
    _change("cancel", mailing_id, account, database_url)


@app.command("list")
def list_command(account: str = ACCOUNT_OPTION, output: TableFormat = format_option(TableFormat.TABLE),
                 database_url: str | None = DB_OPTION) -> None:
    """List the account's mailings."""
    engine = _engine(database_url)
    try:
        with engine.connect() as conn:
            owner = account_repo.account_by_slug(conn, account)
        rows = service.list_mailings(engine, owner.id)
    except (MailcarrierError, LookupError) as exc:
        raise _fail(exc) from exc
    finally:
        engine.dispose()
    if output is TableFormat.JSON:
        typer.echo(to_json(rows))
        return
    table = Table("id", "name", "kind", "state", "subject", "recipients", "suppressed", "created (UTC)")
    for row in rows:
        table.add_row(str(row.id), row.name, row.kind, row.state, row.subject, str(row.recipients_total),
                      str(row.suppressed_total), row.created_at.isoformat(timespec="seconds"))
    Console().print(table)


@app.command("show")
def show_command(mailing_id: int, account: str = ACCOUNT_OPTION,
                 output: TableFormat = format_option(TableFormat.TABLE),
                 database_url: str | None = DB_OPTION) -> None:
    """The mailing's response figures: sent, delivered, bounced by category, in progress, suppressed."""
    engine = _engine(database_url)
    try:
        with engine.connect() as conn:
            owner = account_repo.account_by_slug(conn, account)
        summary = service.get_mailing(engine, owner.id, mailing_id)
        figures = mailing_figures(engine, owner.id, mailing_id)
    except (MailcarrierError, LookupError) as exc:
        raise _fail(exc) from exc
    finally:
        engine.dispose()
    if output is TableFormat.JSON:
        typer.echo(to_json({"mailing": summary, "figures": figures.headline(), "sent": figures.sent}))
        return
    Console().print(figures_table(summary, figures))


# The content engineer's pre-send check, offered under the mailings group as well.
app.command("check", epilog=epilog(ExitCode.CHECK_FAILED))(check_command)


@app.command("test-send")
def test_send_command(
    mailing_id: int,
    to: list[str] = typer.Option(..., "--to", help="A test address (repeatable, at most 20)."),
    account: str = ACCOUNT_OPTION,
    database_url: str | None = DB_OPTION,
) -> None:
    """Send the mailing's content as a separate test mailing to the named addresses only.

    Like the API's test-send: the addresses get '[TEST] ...' and nothing else; no contact's
    status changes, whatever the test's outcome.
    """
    engine = _engine(database_url)
    try:
        with engine.connect() as conn:
            owner = account_repo.account_by_slug(conn, account)
        summary = send_test(engine, owner.id, mailing_id, to, datetime.now(UTC))
    except (MailcarrierError, ValueError, LookupError) as exc:
        raise _fail(exc) from exc
    finally:
        engine.dispose()
    Console().print(f"test mailing {summary.id}: {summary.state} ({summary.recipients_total} "
                    "recipients)", highlight=False)


@app.command("activate")
def activate_command(
    mailing_id: int,
    trigger: str = typer.Option(..., "--trigger", help=(
        "audience_join: a welcome to each contact joining the mailing's audience from now on; "
        "api: sent per contact by `mailings trigger` or POST /api/v1/mailings/ID/trigger.")),
    account: str = ACCOUNT_OPTION,
    database_url: str | None = DB_OPTION,
) -> None:
    """Start an automated draft (created with --kind automated) with its trigger."""
    engine = _engine(database_url)
    try:
        with engine.connect() as conn:
            owner = account_repo.account_by_slug(conn, account)
        settings = cli_settings(database_url)
        summary = automation.activate(engine, owner.id, mailing_id, trigger, datetime.now(UTC),
                                      sender_check=sender_hygiene_gate(settings))
    except (MailcarrierError, ValueError, LookupError) as exc:
        raise _fail(exc) from exc
    finally:
        engine.dispose()
    Console().print(f"automated mailing {summary.id}: active ({summary.trigger})", highlight=False)


@app.command("trigger")
def trigger_command(
    mailing_id: int,
    contact: str = typer.Option(..., "--contact", help="The contact's address."),
    account: str = ACCOUNT_OPTION,
    database_url: str | None = DB_OPTION,
) -> None:
    """Send an active automated mailing to one contact now."""
    engine = _engine(database_url)
    try:
        email = normalise_address(contact)
        with engine.connect() as conn:
            owner = account_repo.account_by_slug(conn, account)
            contact_id = contact_repo.contact_id_by_email(conn, owner.id, email)
        if contact_id is None:
            raise NotFoundError(f"no contact {email} in account {account}")
        delivery_id = automation.trigger_for_contact(engine, owner.id, mailing_id, contact_id,
                                                     datetime.now(UTC))
    except (MailcarrierError, ValueError, LookupError) as exc:
        raise _fail(exc) from exc
    finally:
        engine.dispose()
    Console().print(f"automated mailing {mailing_id} queued for {email} (delivery {delivery_id})",
                    highlight=False)
