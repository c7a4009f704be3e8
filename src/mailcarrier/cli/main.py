"""Entry point of the ``mailcarrier`` command: one Typer app, sub-commands per module."""

from __future__ import annotations

import typer

from mailcarrier.cli import (
    accounts_cmd,
    audiences_cmd,
    bounce_cmd,
    bounces_cmd,
    classify_cmd,
    contacts_cmd,
    db_cmd,
    demo_cmd,
    dkim_cmd,
    domains_cmd,
    evidence_cmd,
    inbound_cmd,
    mailings_check_cmd,
    mailings_cmd,
    pools_cmd,
    report_cmd,
    rules_cmd,
    sandbox_cmd,
    serve_cmd,
    webhooks_cmd,
    worker_cmd,
)

app = typer.Typer(
    name="mailcarrier",
    help="Self-hosted email campaign delivery and deliverability engine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.command("classify")(classify_cmd.classify_command)
app.add_typer(rules_cmd.app, name="rules")
app.add_typer(bounce_cmd.app, name="bounce")
app.add_typer(bounces_cmd.app, name="bounces")
app.command("inbound")(inbound_cmd.inbound_command)
app.add_typer(domains_cmd.app, name="domains")
app.add_typer(db_cmd.app, name="db")
app.add_typer(accounts_cmd.app, name="accounts")
app.add_typer(audiences_cmd.app, name="audiences")
app.add_typer(contacts_cmd.app, name="contacts")
app.add_typer(pools_cmd.app, name="pools")
app.add_typer(mailings_check_cmd.app, name="content")
app.command("serve")(serve_cmd.serve_command)
app.command("worker")(worker_cmd.worker_command)
app.add_typer(mailings_cmd.app, name="mailings")
app.command("sandbox")(sandbox_cmd.sandbox_command)
app.command("demo")(demo_cmd.demo_command)
app.add_typer(dkim_cmd.app, name="dkim")
app.add_typer(report_cmd.app, name="report")
app.command("evidence")(evidence_cmd.evidence_command)
app.add_typer(webhooks_cmd.app, name="webhooks")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
