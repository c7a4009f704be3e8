"""A marketer's day in a real headless Chromium, against uvicorn on loopback, the delivery
worker and the sandbox MX: log in, create an audience, import a CSV (with bad rows), create a
mailing, preview it, check it, test-send it, send it and watch the response page finish by
itself, open a bounced contact, export the bounced list.

On every page: axe-core (bundled by axe-playwright-python, injected into the page) must find
no serious or critical violation; the page must not scroll sideways at 1366 px; and a
screenshot is saved (under ``$MAILCARRIER_SCREENSHOTS`` when set, e.g. ``docs/screenshots``
for the README, else under the test's tmp dir).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import pytest

from mailcarrier.api.app import create_app
from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.worker import run_worker
from mailcarrier.services.tracking.links import make_link_hook
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.api_keys import create_api_key
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.migrate import upgrade
from tests.api.conftest import T0
from tests.api.live import free_port, serving
from tests.delivery.world import settings_for

CHROMIUM = os.environ.get("MAILCARRIER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
WIDTH = 1366
GOOD = [("ann@example.com", "Ann", "Paris"), ("bob@example.com", "Bob", "Lyon"),
        ("cleo@example.org", "Cleo", "Nice"), ("dan@example.net", "Dan", "Lille"),
        ("unknown1@gmail.com", "Uma", "Paris"), ("unknown2@outlook.com", "Udo", "Lyon")]
CSV_TEXT = "email,first_name,city\n" + "".join(f"{e},{n},{c}\n" for e, n, c in GOOD) + \
    "not an address,Zed,Nowhere\nann@example.com,Ann,Paris\neve@example.com,Eve\n"
BOUNCED = {"unknown1@gmail.com", "unknown2@outlook.com"}


@contextmanager
def nxdomain_server() -> Iterator[int]:
    """A loopback DNS server that answers every query NXDOMAIN (no link domain is listed)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            answer = dns.message.make_response(query)
            answer.set_rcode(dns.rcode.NXDOMAIN)
            sock.sendto(answer.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        sock.close()


class Day:
    """The browser page plus the checks every page gets."""

    def __init__(self, page: Any, axe: Any, shots: Path) -> None:
        self.page, self.axe, self.shots = page, axe, shots
        self.audit: dict[str, dict[str, int]] = {}

    def submit(self, selector: str) -> None:
        """Press a form's button with the keyboard (focus, then Enter) and wait for the answer.

        The keyboard also proves the forms work without a mouse; and unlike a click at the
        button's coordinates it cannot land beside the button if the stylesheet arrives late.
        """
        with self.page.expect_navigation():
            self.page.focus(selector)
            self.page.keyboard.press("Enter")

    def check(self, name: str) -> None:
        """axe (no serious/critical violation), no sideways scrolling at 1366 px, a screenshot."""
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)
        results = self.axe.run(self.page, options={"resultTypes": ["violations"], "iframes": False})
        violations = results.response["violations"]
        self.audit[name] = {}
        for v in violations:
            self.audit[name][f"{v['id']} ({v['impact']})"] = len(v["nodes"])
        bad = [v for v in violations if v["impact"] in ("serious", "critical")]
        assert not bad, f"{name}: {json.dumps([(v['id'], v['impact'], [n['target'] for n in v['nodes']]) for v in bad])}"
        overflow = self.page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= WIDTH, f"{name} is {overflow} px wide at {WIDTH} px"


@pytest.mark.slow
def test_a_marketers_day_in_chromium(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not installed at {CHROMIUM} (apt install chromium, or set MAILCARRIER_CHROMIUM)")
    from axe_playwright_python.sync_playwright import Axe  # noqa: PLC0415 - only with a browser
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    shots = Path(os.environ.get("MAILCARRIER_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    with engine.begin() as conn:
        account = account_repo.create_account(conn, "shop", "Shop", T0)
        _, key = create_api_key(conn, account.id, "Marianne (marketing)", ["*"], T0)
    port = free_port()
    csv_file = tmp_path / "spring.csv"
    csv_file.write_text(CSV_TEXT, encoding="utf-8")
    with Sandbox() as sandbox, nxdomain_server() as dns_port:
        settings = settings_for(tmp_path, sandbox.port, public_url=f"http://127.0.0.1:{port}",
                                hygiene_nameserver=f"127.0.0.1:{dns_port}")
        app = create_app(settings, engine)
        with serving(app, port) as base, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(viewport={"width": WIDTH, "height": 900}, accept_downloads=True)
                day = Day(context.new_page(), Axe(), shots)
                # The checker itself finds what it must: an image without a text alternative.
                day.page.goto('data:text/html,<html lang="en"><title>t</title><body><img src="x.png"></body></html>')
                found = Axe().run(day.page, options={"resultTypes": ["violations"]}).response["violations"]
                assert ("image-alt", "critical") in {(v["id"], v["impact"]) for v in found}
                try:
                    _walk(day, base, key, csv_file, settings, engine)
                except Exception:
                    day.page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
                    raise
            finally:
                browser.close()
        (shots / "axe-summary.json").write_text(json.dumps(day.audit, indent=1, sort_keys=True))
    engine.dispose()


def _walk(day: Day, base: str, key: str, csv_file: Path, settings: Any, engine: Any) -> None:
    page = day.page
    # Log in.
    page.goto(f"{base}/dashboard/")
    assert page.url.endswith("/dashboard/login")
    day.check("01-login")
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/dashboard/")
    day.check("02-mailings")

    # Keyboard: the first Tab reaches the skip link, which moves focus to the content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"

    # Create an audience.
    page.click("nav >> text=Audiences & import")
    page.fill("#create-audience input[name=name]", "Spring customers")
    day.submit("#create-audience button[type=submit]")
    page.wait_for_url("**/dashboard/audiences?created=*")
    assert "Audience created" in page.inner_text("main")

    # Import the CSV (uploaded with a progress bar, then imported in the background).
    page.select_option("#import-form select[name=audience_id]", label="Spring customers")
    page.set_input_files("#import-form input[name=file]", str(csv_file))
    day.check("03-audiences")
    page.click("#import-form button[type=submit]")
    page.wait_for_url("**/dashboard/imports/*")
    page.wait_for_selector("#import-result", timeout=30_000)
    assert page.inner_text("[data-figure=rows_imported]") == str(len(GOOD))
    assert page.inner_text("[data-figure=bad_count]") == "2"
    assert page.inner_text("[data-figure=duplicates_merged]") == "1"
    rejected = page.locator("#rejected tbody tr")
    assert rejected.count() == 2 and "not an address" in rejected.nth(0).inner_text()
    day.check("04-import-result")
    with page.expect_download() as download:
        page.click("#rejected-csv")
    rows = list(csv.reader(io.StringIO(download.value.path().read_text(encoding="utf-8-sig"))))
    assert rows[0] == ["line", "reason", "email", "first_name", "city"] and len(rows) == 3

    # Create the mailing.
    page.click("text=Create a mailing")
    page.wait_for_url("**/dashboard/mailings/new")
    page.fill("input[name=name]", "Spring sale")
    page.select_option("select[name=audience_id]", label=f"Spring customers ({len(GOOD)} contacts)")
    page.fill("input[name=from_address]", "news@shop.example")
    page.fill("input[name=from_name]", "Shop")
    page.fill("input[name=subject]", "Spring sale for {{ first_name }}")
    day.check("05-new-mailing")
    day.submit("#new-mailing button[type=submit]")
    page.wait_for_url("**/dashboard/mailings/*")
    mailing_url = page.url

    # Preview for a chosen contact, the content check, a test send.
    page.select_option("select[name=preview_contact]", label="bob@example.com (Bob)")
    page.click("text=Show preview")
    page.wait_for_url("**preview_contact=*")
    assert page.inner_text("#preview-subject") == "Spring sale for Bob"
    assert "Hello Bob" in page.inner_text("#preview-text")
    assert "Hello Bob" in page.frame_locator("iframe.preview").locator("body").inner_text()
    day.submit("form[action$='/check'] button")
    page.wait_for_selector("#checks")
    statuses = {row.inner_text().split("\t")[0]: row.get_attribute("data-status")
                for row in page.locator("#checks tbody tr").all()}
    assert page.inner_text("#preview-subject") == "Spring sale for Bob"  # the chosen contact stays
    assert statuses["unsubscribe link"] == "pass" and statuses["postal address"] == "pass"
    day.check("06-draft-preview-check")
    page.fill("#test-send textarea[name=addresses]", "marianne@shop.example")
    day.submit("#test-send button[type=submit]")
    page.wait_for_selector("#flash")
    assert "Test sent to marianne@shop.example" in page.inner_text("#flash")

    # Send, and watch the response page update itself while the worker delivers.
    day.submit("#send")
    page.wait_for_url(mailing_url)
    assert page.inner_text("[data-figure=state]") == "sending"
    assert page.inner_text("[data-figure=queued]") == str(len(GOOD))
    page.evaluate("window.__notReloaded = true")
    day.check("07-response-sending")
    worker = threading.Thread(target=lambda: asyncio.run(run_worker(
        settings, engine, until_idle=True, link_hook=make_link_hook(engine, settings))))
    worker.start()
    page.locator("[data-figure=state]", has_text="finished").wait_for(timeout=60_000)
    worker.join(60)
    assert page.evaluate("window.__notReloaded") is True  # updated in place, no reload
    assert page.inner_text("[data-figure=delivered]") == str(len(GOOD) - len(BOUNCED))
    assert page.inner_text("[data-figure=bounced_hard]") == str(len(BOUNCED))
    assert page.locator("#live-actions button").count() == 0  # nothing to pause once finished
    assert page.locator("#live-toggle").is_hidden()
    day.check("08-response-finished")

    # Open a bounced contact.
    page.click("a.contact-link:text('unknown1@gmail.com')")
    page.wait_for_url("**/dashboard/contacts/*")
    assert page.inner_text("[data-figure=status]").startswith("Error")
    assert "2 – invalid address" in page.inner_text("[data-figure=last_category]")
    history = page.inner_text("#history")
    assert "status Active → Error" in history and "550" in history
    assert "unknown1@gmail.com" in page.inner_text("table.attempts") or page.locator("table.attempts").count() == 1
    day.check("09-contact")

    # Export the bounced list.
    page.goto(mailing_url)
    with page.expect_download() as download:
        page.click("#export-bounced")
    rows = list(csv.reader(io.StringIO(download.value.path().read_text(encoding="utf-8-sig"))))
    assert {r[2] for r in rows[1:]} == BOUNCED and all(r[3] == "bounced_hard" for r in rows[1:])

    # The other pages a marketer reads.
    page.goto(f"{base}/dashboard/contacts?status=error")
    assert page.inner_text("[data-figure=total]") == str(len(BOUNCED))
    day.check("10-contacts")
    page.goto(f"{base}/dashboard/bounces?days=30")
    assert page.inner_text("[data-figure=total]") == str(len(BOUNCED))
    day.check("11-bounce-report")
    page.goto(f"{base}/dashboard/evidence?email=unknown1%40gmail.com")
    day.check("12-evidence")
    page.goto(f"{base}/dashboard/")
    day.check("13-mailings-after")
    page.goto(f"{base}/dashboard/pool")
    day.check("14-pool")
