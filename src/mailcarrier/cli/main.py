"""Entry point of the ``mailcarrier`` command: one Typer app, sub-commands imported on use.

The web app, SQLAlchemy, the services and the delivery engine cost about two seconds of
imports; a command that needs none of them (``--help``, ``--version``, ``classify``,
``bounce parse``) should not pay for them. So each sub-command's module is imported only
when that sub-command runs, and the top-level help is printed from :data:`COMMANDS` below
instead of importing every module for its docstring (``tests/cli/test_startup.py`` checks
that the table still says what the commands say). ``bench/cli_start.py`` measures it.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from mailcarrier import __version__
from mailcarrier.cli.exit_codes import describe_all

__all__ = ["COMMANDS", "LazyCommand", "app", "load_command", "main"]


@dataclass(frozen=True, slots=True)
class LazyCommand:
    """A sub-command known by name and help line, its module imported when it runs."""

    #: What the user types: ``mailcarrier NAME ...``.
    name: str
    #: Module under ``mailcarrier.cli``.
    module: str
    #: A ``typer.Typer`` (a command group) or a command function in that module.
    attribute: str
    #: The first line of the command's help, shown by ``mailcarrier --help``.
    help: str
    #: The heading it is listed under in ``mailcarrier --help``.
    panel: str


_START = "Start here"
_SEND = "Sending"
_RETURN = "Bounces and the return path"
_SENDER = "Sender reputation"
_RUN = "Servers and operations"

COMMANDS: tuple[LazyCommand, ...] = (
    LazyCommand("demo", "demo_cmd", "demo_command",
                "Send a sample mailing through the local sandbox MX and print its response figures "
                "(offline).", _START),
    LazyCommand("classify", "classify_cmd", "classify_command",
                "Say why a server refused a message: reason, category 1/2/3/4/9, hard/soft, retry, rule.",
                _START),
    LazyCommand("accounts", "accounts_cmd", "app", "Accounts (one per customer).", _SEND),
    LazyCommand("audiences", "audiences_cmd", "app", "Audiences (lists of contacts).", _SEND),
    LazyCommand("contacts", "contacts_cmd", "app",
                "Contacts: import, segments and export, status, history, reactivation, suspected "
                "filtering.", _SEND),
    LazyCommand("mailings", "mailings_cmd", "app",
                "Mailings: create, check, send, test-send, automate (activate, trigger), pause, "
                "resume, cancel, figures.", _SEND),
    LazyCommand("content", "mailings_check_cmd", "app", "Pre-send content and consent checks.", _SEND),
    LazyCommand("report", "report_cmd", "app", "Reports: a mailing's response page, the bounce report.",
                _SEND),
    LazyCommand("evidence", "evidence_cmd", "evidence_command",
                "Every attempt with timestamp, return-path, IPs, MX, TLS, reply, queue id and dialogue.",
                _SEND),
    LazyCommand("bounce", "bounce_cmd", "app", "Read bounce emails, complaints and auto-replies.", _RETURN),
    LazyCommand("bounces", "bounces_cmd", "app",
                "The return path: import, list and reprocess bounces, complaints and auto-replies.",
                _RETURN),
    LazyCommand("rules", "rules_cmd", "app",
                "Classification rules: validate a rule file, list the shipped rules.", _RETURN),
    LazyCommand("domains", "domains_cmd", "app",
                "Sender hygiene of sending domains: SPF, DKIM, DMARC, FCrDNS, MX, blocklists.", _SENDER),
    LazyCommand("dkim", "dkim_cmd", "app", "DKIM keys of the sending domains.", _SENDER),
    LazyCommand("pools", "pools_cmd", "app",
                "Sending IPs and pools (shared, trusted, dedicated): eligibility, warm-up, reputation "
                "events, throttling log.", _SENDER),
    LazyCommand("db", "db_cmd", "app", "Database schema management.", _RUN),
    LazyCommand("config", "config_cmd", "app", "The effective configuration.", _RUN),
    LazyCommand("serve", "serve_cmd", "serve_command", "Run the API server until interrupted.", _RUN),
    LazyCommand("worker", "worker_cmd", "worker_command",
                "Deliver queued messages: claim, render, sign, send, record; retries follow the schedule.",
                _RUN),
    LazyCommand("inbound", "inbound_cmd", "inbound_command",
                "Receive bounces, complaints and auto-replies over SMTP (VERP and configured addresses "
                "only).", _RUN),
    LazyCommand("webhooks", "webhooks_cmd", "app", "Webhooks: the sender loop.", _RUN),
    LazyCommand("sandbox", "sandbox_cmd", "sandbox_command",
                "Run the sandbox MX until interrupted; route mail to it with "
                "MAILCARRIER_STATIC_ROUTES='*=HOST:PORT'.", _RUN),
)


def load_command(entry: LazyCommand) -> TyperCommand | TyperGroup:
    """Import ``entry``'s module and build its Click command, as ``add_typer`` would have."""
    target = getattr(importlib.import_module(f"mailcarrier.cli.{entry.module}"), entry.attribute)
    if isinstance(target, typer.Typer):
        return typer.main.get_group(target)
    single = typer.Typer(add_completion=False)
    single.command(entry.name)(target)
    command = typer.main.get_command(single)
    assert isinstance(command, TyperCommand)
    return command


def _placeholder(entry: LazyCommand) -> TyperCommand:
    command = TyperCommand(entry.name, help=entry.help, rich_help_panel=entry.panel)
    command.__dict__["lazy_entry"] = entry
    return command


class LazyGroup(TyperGroup):
    """The top-level group: knows every sub-command, imports one only to run it.

    ``commands`` starts with placeholders (name, help line, help panel), so listing,
    "did you mean" suggestions and the help need no import; the first ``get_command`` for
    a name outside of help replaces its placeholder with the real command.
    """

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._listing = False
        for entry in COMMANDS:
            self.commands.setdefault(entry.name, _placeholder(entry))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = self.commands.get(cmd_name)
        entry = getattr(command, "lazy_entry", None)
        if entry is None or self._listing:
            return command
        real = load_command(entry)
        self.commands[cmd_name] = real
        return real

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"mailcarrier {__version__}")
        raise typer.Exit()


app = typer.Typer(
    name="mailcarrier",
    cls=LazyGroup,
    help="Self-hosted email campaign delivery and deliverability engine.\n\n"
         "Commands that take --account read MAILCARRIER_ACCOUNT when it is not given; settings "
         "come from MAILCARRIER_* variables, a .env file or a --config file (`mailcarrier config "
         "show` prints them).",
    epilog=describe_all(),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Print the version and exit."),
          config: str | None = typer.Option(None, "--config", metavar="FILE", help=(
              "TOML config file, one table per section ([inbound] port = 2526); MAILCARRIER_* "
              "variables override it. Same as MAILCARRIER_CONFIG=FILE."))) -> None:
    """Self-hosted email campaign delivery and deliverability engine."""
    if config is not None:
        # the settings are loaded by each command (and by the processes `serve` starts): they
        # all read the file from this variable
        os.environ["MAILCARRIER_CONFIG"] = config


def main() -> None:
    """Console-script entry point: a domain error a command lets escape ends it with its
    kind's exit status (``cli/error_kinds.py``)."""
    from mailcarrier.cli.error_kinds import run  # noqa: PLC0415 (kept out of the start-up imports)

    run(app)


if __name__ == "__main__":
    main()
