"""Issue 18's commands end to end on a SQLite file: the account's contact policy and
thresholds, segments by bounce data with CSV export, decisions on suspected filtering,
automated mailings (activate, trigger) and test sends to named addresses."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import typer
from sqlalchemy import create_engine, select, update
from typer.testing import CliRunner

from mailcarrier.cli import accounts_cmd, contacts_cmd, db_cmd, mailings_cmd
from mailcarrier.cli.exit_codes import ExitCode
from mailcarrier.storage.tables import contacts, deliveries, mailings

app = typer.Typer()
app.add_typer(db_cmd.app, name="db")
app.add_typer(accounts_cmd.app, name="accounts")
app.add_typer(contacts_cmd.app, name="contacts")
app.add_typer(mailings_cmd.app, name="mailings")


def test_policy_segments_filtering_automation_and_test_sends(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'mc.db'}"
    url, acme = ["--database-url", db], ["--account", "acme"]
    run = CliRunner(env={"COLUMNS": "200"}).invoke  # Rich tables keep addresses on one line
    assert run(app, ["db", "upgrade", *url]).exit_code == 0
    assert run(app, ["accounts", "create", "acme", *url]).exit_code == 0
    # the account's contact policy and thresholds
    changed = run(app, ["accounts", "policy", "acme", "--contact-policy", "emma",
                        "--threshold", "max_bounce_rate=0.11", *url])
    assert changed.exit_code == 0 and "contact policy emma" in changed.output
    assert "max_bounce_rate = 0.11" in changed.output
    bad = run(app, ["accounts", "policy", "acme", "--contact-policy", "strict", *url])
    assert bad.exit_code == ExitCode.INVALID_INPUT and "marketo, emma" in bad.output
    # contacts with bounce data
    source = tmp_path / "c.csv"
    source.write_text("email,first_name\nann@example.com,Ann\nbob@corp.example,Bob\n"
                      "cy@corp.example,Cy\n", encoding="utf-8")
    assert run(app, ["contacts", "import", str(source), "--audience", "news", *acme, *url]).exit_code == 0
    engine = create_engine(db)
    when = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(update(contacts).where(contacts.c.email == "bob@corp.example").values(
            last_bounce_category=1, last_bounce_reason="filtered", last_bounce_at=when,
            suspected_filtering=True))
        conn.execute(update(contacts).where(contacts.c.email == "cy@corp.example").values(
            last_bounce_category=2, last_bounce_reason="userunknown", last_bounce_at=when,
            status="error", email_invalid=True))
    listed = run(app, ["contacts", "list", "--suspected", *acme, *url])
    assert listed.exit_code == 0 and "bob@corp.example" in listed.output
    assert "cy@corp.example" not in listed.output
    exported = run(app, ["contacts", "list", "--category", "2", "--since", "2026-03-01",
                         "--until", "2026-03-02", "--csv", "-", *acme, *url])
    assert exported.exit_code == 0, exported.output
    rows = list(csv.reader(io.StringIO(exported.stdout)))
    assert rows[0][:3] == ["email", "status", "email_invalid"] and [r[0] for r in rows[1:]] == ["cy@corp.example"]
    none = run(app, ["contacts", "list", "--category", "2", "--since", "2026-03-03", "--csv", "-", *acme, *url])
    assert len(list(csv.reader(io.StringIO(none.stdout)))) == 1  # the header alone
    assert run(app, ["contacts", "list", "--since", "March", *acme, *url]).exit_code == 2
    # decisions on the hold
    refused = run(app, ["contacts", "release", "ann@example.com", "--reason", "x", *acme, *url])
    assert refused.exit_code == ExitCode.CONFLICT and "not held" in refused.output
    released = run(app, ["contacts", "release", "bob@corp.example", "--reason", "IT whitelisted us",
                         "--who", "alice", *acme, *url])
    assert released.exit_code == 0 and "active -> active" in released.output
    with engine.connect() as conn:
        assert not conn.execute(select(contacts.c.suspected_filtering).where(
            contacts.c.email == "bob@corp.example")).scalar_one()
    # an automated mailing, activated with a trigger and sent to one contact
    body = tmp_path / "b.txt"
    body.write_text("Hello {{ first_name }}\n", encoding="utf-8")
    made = run(app, ["mailings", "create", "--subject", "Welcome", "--from", "news@shop.example",
                     "--text", str(body), "--kind", "automated", "--audience", "news", *acme, *url])
    assert made.exit_code == 0, made.output
    with engine.connect() as conn:
        welcome = conn.execute(select(mailings.c.id)).scalar_one()
    active = run(app, ["mailings", "activate", str(welcome), "--trigger", "api", *acme, *url])
    assert active.exit_code == 0 and "active (api)" in active.output
    sent = run(app, ["mailings", "trigger", str(welcome), "--contact", "ann@example.com", *acme, *url])
    assert sent.exit_code == 0 and "queued for ann@example.com" in sent.output
    twice = run(app, ["mailings", "trigger", str(welcome), "--contact", "ann@example.com", *acme, *url])
    assert twice.exit_code == ExitCode.CONFLICT and "already had" in twice.output
    # a test goes only to the addresses named, never to the audience
    regular = run(app, ["mailings", "create", "--subject", "News", "--from", "news@shop.example",
                        "--text", str(body), "--audience", "news", *acme, *url])
    assert regular.exit_code == 0
    test = run(app, ["mailings", "test-send", "2", "--to", "qa@example.net", *acme, *url])
    assert test.exit_code == 0 and "1 recipients" in test.output, test.output
    with engine.connect() as conn:
        kinds = dict(conn.execute(select(mailings.c.id, mailings.c.kind)).all())
        test_id = next(i for i, k in kinds.items() if k == "test")
        assert conn.execute(select(deliveries.c.email).where(
            deliveries.c.mailing_id == test_id)).scalars().all() == ["qa@example.net"]
    engine.dispose()
