"""Pre-send content checks against a real spamd on loopback and a loopback DNS server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine

from mailcarrier.domain.dns_checks import Check, CheckStatus
from mailcarrier.domain.errors import NotFoundError
from mailcarrier.services.content_check import SpamdClient, SpamdError, check_mailing, render_sample
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage import contacts as contact_repo
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.tables import audience_members, mailings
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

from .local_dns import local_dns

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
URL, BOUNCES = "https://mc.test", "bounces.mc.test"
ZONE = {
    ("spammy-pills.test.dbl.test", "A"): ["127.0.1.2"],
    ("refused.test.dbl.test", "A"): ["127.255.255.254"],
}
CLEAN_HTML = """<html><body><p>Hello {{ first_name }},</p>
<p>Our spring catalogue is out. This season we restocked the walking boots you asked about,
added three new rain jackets in recycled fabric and extended the repair service to every shop.
Read the details and opening hours on <a href="https://shop.example.org/spring">our site</a>.</p>
<img src="https://shop.example.org/boots.jpg" alt="boots">
<p>Acme Outdoor, 12 Harbour Street, Portsmouth PO1 2AB, United Kingdom.
<a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>"""
CLEAN_TEXT = ("Hello {{ first_name }}, our spring catalogue is out: https://shop.example.org/spring\n"
              "Acme Outdoor, 12 Harbour Street, Portsmouth\nUnsubscribe: {{ unsubscribe_url }}\n")
SPAM_HTML = """<html><body><img src="http://spammy-pills.test/a.gif"><img src="http://x.test/b.gif">
<a href="http://spammy-pills.test/buy">BUY VIAGRA NOW</a> <a href="https://refused.test/">free</a>
</body></html>"""
SPAM_TEXT = "100% FREE!!! Cheap Viagra, Cialis, no prescription. Click here to WIN $$$ guaranteed!!!\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def spamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpamdClient]:
    """A real spamd on a free loopback port, network tests off (-L); skipped when not installed."""
    binary = shutil.which("spamd") or ("/usr/sbin/spamd" if Path("/usr/sbin/spamd").exists() else None)
    if binary is None:
        pytest.skip("spamd is not installed (Debian: apt-get install spamassassin spamc)")
    port = _free_port()
    work = tmp_path_factory.mktemp("spamd")
    command = [binary, f"--listen=127.0.0.1:{port}", "--local", "--nouser-config", "--max-children=1",
               f"--pidfile={work / 'spamd.pid'}", "--syslog=stderr"]
    if os.geteuid() == 0:
        command.append("--username=nobody")
    log = (work / "spamd.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"spamd did not start: {(work / 'spamd.log').read_text()[-2000:]}")
                time.sleep(0.3)
        yield SpamdClient("127.0.0.1", port, timeout=60)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture
def db(empty_engine: Engine) -> Iterator[tuple[Engine, int, int]]:  # noqa: F811
    """Account with an audience of two opted-in contacts and one from a purchased list."""
    upgrade(empty_engine)
    with empty_engine.begin() as conn:
        acme = account_repo.create_account(conn, "acme", "Acme", T0).id
        audience = account_repo.create_audience(conn, acme, "news", T0).id
        for email, source in (("ann@example.com", "double_opt_in"), ("bob@example.com", "signup_form"),
                              ("cat@example.com", "purchased")):
            contact = contact_repo.add_contact(conn, acme, email, T0, first_name=email[:3].title(),
                                               consent_source=source)
            conn.execute(audience_members.insert().values(audience_id=audience, contact_id=contact,
                                                          added_at=T0))
    yield empty_engine, acme, audience


def mailing(conn: Connection, account: int, audience: int | None, subject: str, html: str, text: str) -> int:
    key = conn.execute(mailings.insert().values(
        account_id=account, audience_id=audience, from_address="news@shop.example.org", from_name="Acme",
        subject=subject, html_body=html, text_body=text, sending_domain="shop.example.org",
        created_at=T0)).inserted_primary_key
    assert key is not None
    return int(key[0])


def by_name(report_checks: tuple[Check, ...]) -> dict[str, Check]:
    return {c.name: c for c in report_checks}


def test_sample_renders_for_the_first_audience_member(db: tuple[Engine, int, int]) -> None:
    engine, acme, audience = db
    with engine.begin() as conn:
        mid = mailing(conn, acme, audience, "Spring for {{ first_name }}", CLEAN_HTML, CLEAN_TEXT)
        sample = render_sample(conn, acme, mid, T0, public_url=URL, bounce_domain=BOUNCES)
        broken = mailing(conn, acme, audience, "{{ nope.attr }}", "", "")
        with pytest.raises(ValueError, match="does not render"):
            render_sample(conn, acme, broken, T0, public_url=URL, bounce_domain=BOUNCES)
        with pytest.raises(NotFoundError):
            render_sample(conn, acme + 1, mid, T0, public_url=URL, bounce_domain=BOUNCES)
    assert sample.subject == "Spring for Ann"
    assert b"To: ann@example.com" in sample.data and sample.unsubscribe_url in sample.html


def test_clean_mailing_passes_but_purchased_contacts_are_flagged(
    db: tuple[Engine, int, int], spamd: SpamdClient,
) -> None:
    engine, acme, audience = db
    with local_dns(ZONE) as resolver, engine.begin() as conn:
        mid = mailing(conn, acme, audience, "Spring catalogue", CLEAN_HTML, CLEAN_TEXT)
        report = check_mailing(conn, acme, mid, T0, spamd=spamd, public_url=URL, bounce_domain=BOUNCES,
                               resolver=resolver, uri_zones=["dbl.test"])
    checks = by_name(report.checks)
    assert report.spam is not None and not report.spam.is_spam and report.spam.threshold == 5.0
    for name in ("SpamAssassin", "unsubscribe link", "postal address", "image-to-text ratio",
                 "link domain shop.example.org in dbl.test"):
        assert checks[name].status is CheckStatus.PASS, checks[name]
    consent = checks["audience consent"]
    assert consent.status is CheckStatus.FAIL and "purchased: 1" in consent.detail
    assert ("double_opt_in", "opted_in", 1) in report.consent_sources and not report.ok


def test_spammy_mailing_fails_each_check_with_a_fix(db: tuple[Engine, int, int], spamd: SpamdClient) -> None:
    engine, acme, audience = db
    with local_dns(ZONE) as resolver, engine.begin() as conn:
        mid = mailing(conn, acme, audience, "FREE VIAGRA!!! WIN $$$", SPAM_HTML, SPAM_TEXT)
        report = check_mailing(conn, acme, mid, T0, spamd=spamd, public_url=URL, bounce_domain=BOUNCES,
                               resolver=resolver, uri_zones=["dbl.test"])
    checks = by_name(report.checks)
    assert report.spam is not None and report.spam.score > 0
    assert "DRUGS_ERECTILE" in {rule.name for rule in report.spam.rules}
    assert any(r.points > 0 and r.description for r in report.spam.rules)
    spam_detail = checks["SpamAssassin"].detail
    assert f"score {report.spam.score:.1f}" in spam_detail
    assert checks["unsubscribe link"].status is CheckStatus.FAIL
    assert checks["postal address"].status is CheckStatus.FAIL
    assert checks["image-to-text ratio"].status is CheckStatus.FAIL
    listed = checks["link domain spammy-pills.test in dbl.test"]
    assert listed.status is CheckStatus.FAIL and "remove links" in listed.fix
    refused = checks["link domain refused.test in dbl.test"]
    assert refused.status is CheckStatus.ERROR  # 127.255.255.x: not a listing
    assert checks["link domain x.test in dbl.test"].status is CheckStatus.PASS


def test_spamd_down_is_a_check_error_not_a_crash(db: tuple[Engine, int, int]) -> None:
    engine, acme, _ = db
    dead = SpamdClient("127.0.0.1", _free_port(), timeout=2)
    with pytest.raises(SpamdError):
        dead.report(b"Subject: x\r\n\r\nhi\r\n")
    with engine.begin() as conn:
        mid = mailing(conn, acme, None, "Hi", CLEAN_HTML, CLEAN_TEXT)
        report = check_mailing(conn, acme, mid, T0, spamd=dead, public_url=URL, bounce_domain=BOUNCES)
    checks = by_name(report.checks)
    assert checks["SpamAssassin"].status is CheckStatus.ERROR
    assert checks["audience consent"].status is CheckStatus.ERROR
    assert report.spam is None and not report.ok


def test_spamd_spam_score_crosses_threshold_for_gtube(spamd: SpamdClient) -> None:
    gtube = b"Subject: test\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"
    report = spamd.report(gtube)
    assert report.is_spam and report.score >= 1000 and "GTUBE" in {r.name for r in report.rules}


def test_a_non_spamd_server_is_refused(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        def answer() -> None:
            conn, _ = server.accept()
            conn.recv(65536)
            conn.sendall(b"220 not spamd\r\n")
            conn.close()

        thread = threading.Thread(target=answer)
        thread.start()
        with pytest.raises(SpamdError, match="refused"):
            SpamdClient("127.0.0.1", port, timeout=5).report(b"Subject: x\r\n\r\nhi\r\n")
        thread.join()



def test_links_to_a_loopback_or_private_public_url_fail_the_check(db: tuple[Engine, int, int]) -> None:
    engine, acme, audience = db
    with engine.begin() as conn:
        mid = mailing(conn, acme, audience, "Spring catalogue", CLEAN_HTML, CLEAN_TEXT)
        default = check_mailing(conn, acme, mid, T0, spamd=None, public_url="http://127.0.0.1:8025",
                                bounce_domain=BOUNCES, uri_zones=[])
        internal = check_mailing(conn, acme, mid, T0, spamd=None, public_url="https://mc.corp.internal",
                                 bounce_domain=BOUNCES, uri_zones=[])
        public = check_mailing(conn, acme, mid, T0, spamd=None, public_url="https://links.shop-example.com",
                               bounce_domain=BOUNCES, uri_zones=[])
    flagged = by_name(default.checks)["public URL of links"]
    assert flagged.status is CheckStatus.FAIL and "127.0.0.1 is a loopback address" in flagged.detail
    assert "MAILCARRIER_PUBLIC_URL" in flagged.fix
    assert by_name(internal.checks)["public URL of links"].status is CheckStatus.FAIL
    assert by_name(public.checks)["public URL of links"].status is CheckStatus.PASS
