"""report mailing / report bounces / evidence / webhooks run, end to end on a SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from mailcarrier.cli import evidence_cmd, report_cmd, webhooks_cmd
from mailcarrier.cli.exit_codes import ExitCode
from mailcarrier.services import webhooks
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.migrate import upgrade
from tests.services.report_world import RECIPIENTS, T0, build
from tests.services.test_webhooks import LOCAL, Receiver

app = typer.Typer()
app.add_typer(report_cmd.app, name="report")
app.command("evidence")(evidence_cmd.evidence_command)
app.add_typer(webhooks_cmd.app, name="webhooks")


def _world(tmp_path: Path) -> tuple[list[str], int]:
    url = f"sqlite:///{tmp_path / 'mc.db'}"
    engine = make_engine(url)
    upgrade(engine)
    world = build(engine)
    engine.dispose()
    return ["--database-url", url, "--account", "one"], world.mailing_id


def test_report_mailing_prints_reconciled_buckets(tmp_path: Path) -> None:
    opts, mailing_id = _world(tmp_path)
    result = CliRunner().invoke(app, ["report", "mailing", str(mailing_id), *opts])
    assert result.exit_code == 0, result.output
    total_line = next(line for line in result.output.splitlines() if "total" in line)
    assert "bounced_hard" in result.output and str(len(RECIPIENTS)) in total_line
    assert "alert" in result.output and "mailboxfull" in result.output
    missing = CliRunner().invoke(app, ["report", "mailing", "999", *opts])
    assert missing.exit_code == ExitCode.NOT_FOUND and "no mailing 999" in missing.output


def test_report_bounces(tmp_path: Path) -> None:
    opts, _ = _world(tmp_path)
    result = CliRunner().invoke(app, ["report", "bounces", "--until", "2026-05-04", "--days", "7", *opts])
    assert result.exit_code == 0, result.output
    assert "corp.example" in result.output and "Google" in result.output


def test_evidence_text_json_pdf(tmp_path: Path) -> None:
    opts, mailing_id = _world(tmp_path)
    text = CliRunner().invoke(app, ["evidence", "bob@example.com", *opts])
    assert text.exit_code == 0 and "4AbC123" in text.output and "198.51.100.7" in text.output
    as_json = CliRunner().invoke(app, ["evidence", "bob@example.com", "--format", "json",
                                       "--mailing", str(mailing_id), *opts])
    assert json.loads(as_json.output)["email"] == "bob@example.com"
    pdf = tmp_path / "e.pdf"
    made = CliRunner().invoke(app, ["evidence", "bob@example.com", "--format", "pdf", "-o", str(pdf), *opts])
    assert made.exit_code == 0 and pdf.read_bytes().startswith(b"%PDF-")
    unknown = CliRunner().invoke(app, ["evidence", "nobody@example.com", *opts])
    assert unknown.exit_code == ExitCode.NOT_FOUND and "no contact" in unknown.output


def test_webhooks_run_once(tmp_path: Path) -> None:
    opts, _ = _world(tmp_path)
    result = CliRunner().invoke(app, ["webhooks", "run", "--once", opts[0], opts[1]])
    assert result.exit_code == 0, result.output


def test_webhooks_run_once_says_what_it_sent(tmp_path: Path) -> None:
    opts, _ = _world(tmp_path)
    engine = make_engine(opts[1])
    receiver = Receiver()
    try:
        with engine.connect() as conn:
            account_id = account_repo.account_by_slug(conn, "one").id
        webhooks.create_endpoint(engine, account_id, receiver.url, ["delivered", "opened"], T0, policy=LOCAL)
        with engine.begin() as conn:
            webhooks.enqueue_event(conn, account_id, "delivered", {"n": 1}, T0)
            webhooks.enqueue_event(conn, account_id, "opened", {"n": 2}, T0)
        receiver.statuses = [204, 500]
        env = {"MAILCARRIER_WEBHOOK_INTERNAL_HOSTS": "127.0.0.1"}
        result = CliRunner().invoke(app, ["webhooks", "run", "--once", opts[0], opts[1]], env=env)
        again = CliRunner().invoke(app, ["webhooks", "run", "--once", opts[0], opts[1]], env=env)
    finally:
        receiver.close()
        engine.dispose()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("delivered ") and f"-> {receiver.url}: delivered (HTTP 204)" in line
               for line in lines), result.output
    assert any(line.startswith("opened ") and "retry at" in line and "(HTTP 500)" in line
               for line in lines), result.output
    assert "delivered 1, retried 1, dead 0" in result.output
    assert again.exit_code == 0 and "(nothing was due)" in again.output  # the retry is not due yet


def test_reports_as_json(tmp_path: Path) -> None:
    opts, mailing_id = _world(tmp_path)
    page = CliRunner().invoke(app, ["report", "mailing", str(mailing_id), "--format", "json", *opts])
    assert page.exit_code == 0, page.output
    doc = json.loads(page.stdout)
    assert doc["reconciles"] is True and sum(doc["page"]["buckets"].values()) == len(RECIPIENTS)
    bounces = CliRunner().invoke(app, ["report", "bounces", "-f", "json", "--until", "2026-05-31", *opts])
    assert bounces.exit_code == 0, bounces.output
    report = json.loads(bounces.stdout)
    assert report["until"] == "2026-05-31" and isinstance(report["by_reason"], list)
