"""``mailcarrier webhooks run``: turn new history into webhook events and deliver them, forever."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import OperationalError

from mailcarrier.cli.options import cli_settings
from mailcarrier.services import webhooks
from mailcarrier.services.policies import webhook_target_policy
from mailcarrier.services.webhook_http import webhook_client
from mailcarrier.storage.engine import make_engine

app = typer.Typer(help="Webhooks: the sender loop.", no_args_is_help=True)
ERR = Console(stderr=True)


@app.command("run")
def run_command(interval: float = typer.Option(2.0, min=0.1, help="Seconds between rounds."),
                once: bool = typer.Option(False, "--once", help="Send what is due now, then exit."),
                database_url: str | None = typer.Option(None, "--database-url",
                                                        help="Overrides the database URL.")) -> None:
    """Pump the activity history into the outbox and POST due events; safe to restart any time."""
    settings = cli_settings(database_url)
    engine = make_engine(settings)
    try:
        with webhook_client(webhook_target_policy(settings), timeout=10) as client:
            while True:
                now = datetime.now(UTC)
                try:
                    queued = webhooks.pump_activities(engine, now)
                    stats = webhooks.send_due(engine, client, now, on_sent=_say_sent)
                except OperationalError as exc:  # busy or unreachable past the retries: next round
                    if once:
                        raise
                    why = escape(str(exc).splitlines()[0])[:300]
                    ERR.print(f"[yellow]round failed, next in {interval:g} s:[/yellow] {why}")
                    time.sleep(interval)
                    continue
                if once or queued or stats.delivered or stats.retried or stats.dead:
                    ERR.print(f"queued {queued}, delivered {stats.delivered}, retried {stats.retried}, "
                              f"dead {stats.dead}" + ("" if stats.delivered or stats.retried or stats.dead
                                                      else " (nothing was due)"), highlight=False)
                if once:
                    return
                time.sleep(interval)
    except KeyboardInterrupt:
        return
    finally:
        engine.dispose()


def _say_sent(sent: webhooks.SentEvent) -> None:
    """One line per POST: which event went where, and what came back."""
    answer = f"HTTP {sent.status}" if sent.status is not None else (sent.error or "no answer")
    if sent.outcome == "retry" and sent.next_attempt_at is not None:
        result = f"[yellow]retry at {sent.next_attempt_at:%H:%M:%S} UTC[/yellow] ({answer})"
    elif sent.outcome == "dead":
        result = f"[red]given up[/red] ({answer})"
    else:
        result = f"[green]delivered[/green] ({answer})"
    ERR.print(f"{sent.event_type} {sent.event_id} -> {escape(sent.url)}: {result}", highlight=False,
              soft_wrap=True)
