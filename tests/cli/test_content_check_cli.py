"""``mailcarrier content check ID`` against a real spamd and a loopback DNS server."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mailcarrier.cli.exit_codes import ExitCode
from mailcarrier.cli.main import app
from mailcarrier.services.content_check import SpamdClient
from mailcarrier.storage.contacts import add_contact
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.tables import accounts, audience_members, audiences, mailings
from tests.services.local_dns import local_dns
from tests.services.test_content_check import CLEAN_HTML, CLEAN_TEXT, T0, ZONE, spamd  # noqa: F401

# A public https address: the default (http://127.0.0.1:8025) fails the "public URL of links" check.
RUN = CliRunner(env={"COLUMNS": "300", "MAILCARRIER_PUBLIC_URL": "https://links.shop-example.com"}).invoke


def test_content_check_reports_rules_and_consent(tmp_path: Path, spamd: SpamdClient) -> None:  # noqa: F811
    url = f"sqlite:///{tmp_path / 'mc.db'}"
    assert RUN(app, ["db", "upgrade", "--database-url", url]).exit_code == 0
    assert RUN(app, ["accounts", "create", "acme", "--database-url", url]).exit_code == 0
    assert RUN(app, ["audiences", "create", "news", "--account", "acme", "--database-url", url]).exit_code == 0
    engine = make_engine(url)
    with engine.begin() as conn:
        account_id = conn.execute(accounts.select()).one().id
        audience = conn.execute(audiences.select()).one().id
        contact = add_contact(conn, account_id, "ann@example.com", T0, consent_source="opt_in")
        conn.execute(audience_members.insert().values(audience_id=audience, contact_id=contact, added_at=T0))
        mailing = conn.execute(mailings.insert().values(
            account_id=account_id, audience_id=audience, from_address="news@shop.example.org",
            subject="Spring catalogue", html_body=CLEAN_HTML, text_body=CLEAN_TEXT,
            sending_domain="shop.example.org", created_at=T0).returning(mailings.c.id)).scalar_one()
    engine.dispose()
    with local_dns(ZONE) as resolver:
        args = ["content", "check", str(mailing), "--account", "acme", "--spamd", f"{spamd.host}:{spamd.port}",
                "--uribl", "dbl.test", "--nameserver", f"127.0.0.1:{resolver.port}", "--database-url", url]
        result = RUN(app, [*args, "--format", "json"])
        table = RUN(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["spamassassin"]["threshold"] == 5.0
    assert {c["check"]: c["status"] for c in report["checks"]}["audience consent"] == "pass"
    assert report["consent_sources"] == [{"source": "opt_in", "kind": "opted_in", "contacts": 1}]
    assert table.exit_code == 0 and "SpamAssassin rule" in table.output and "postal address" in table.output
    missing = RUN(app, ["content", "check", "999", "--account", "acme", "--database-url", url])
    assert missing.exit_code == ExitCode.NOT_FOUND and "no mailing #999" in missing.output
    with local_dns(ZONE) as resolver:
        args[-4:-2] = ["--nameserver", f"127.0.0.1:{resolver.port}"]
        local = CliRunner(env={"COLUMNS": "300", "MAILCARRIER_PUBLIC_URL": "http://127.0.0.1:8025"}).invoke(
            app, [*args, "--format", "json"])
    assert local.exit_code == 3, local.output  # a check found a problem
    flagged = {c["check"]: c for c in json.loads(local.output)["checks"]}["public URL of links"]
    assert flagged["status"] == "fail" and "loopback" in flagged["detail"]
