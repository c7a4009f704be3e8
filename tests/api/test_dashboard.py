"""The dashboard in a real headless Chromium, on data from a real mailing sent through the sandbox MX.

Each page's figures are compared with the REST API's for the same account, a bounce is
followed to its evidence page, and a screenshot of every page is saved under the test's
tmp dir (pytest keeps the last runs' tmp dirs as artefacts).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn

from mailcarrier.api.app import create_app
from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.api_keys import create_api_key
from mailcarrier.storage.engine import make_engine
from tests.api.dashboard_forms import login
from tests.delivery.world import T0, make_world, settings_for, start_mailing

CHROMIUM = os.environ.get("MAILCARRIER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ADDRESSES = [*(f"user{i}@example.com" for i in range(6)), "friend1@gmail.com",
             "unknown1@gmail.com", "unknown2@outlook.com", "full1@example.org", "grey1@example.net"]
NOW = T0 + timedelta(days=3)


@dataclass
class Live:
    base: str
    key: str
    other_key: str
    mailing_id: int
    other_mailing_id: int
    shots: Path

    def api(self, path: str, **params: object) -> httpx.Response:
        return httpx.get(f"{self.base}{path}", params=params,  # type: ignore[arg-type]
                         headers={"Authorization": f"Bearer {self.key}"}, timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A mailing delivered through the sandbox MX, then the app served by uvicorn on loopback."""
    tmp = tmp_path_factory.mktemp("dashboard")
    engine = make_engine(f"sqlite:///{tmp / 'db.sqlite'}")
    world = make_world(engine, ADDRESSES)
    mailing_id = start_mailing(world)
    with Sandbox() as sandbox:
        settings = settings_for(tmp, sandbox.port)
        asyncio.run(run_worker(settings, engine, until_idle=True, clock=SimulatedClock(T0)))
    with engine.begin() as conn:
        _, key = create_api_key(conn, world.account_id, "dashboard", ["reports:read", "mailings:read",
                                                                      "evidence:read", "contacts:read"], T0)
        other = account_repo.create_account(conn, "other", "Other", T0)
        _, other_key = create_api_key(conn, other.id, "other", ["*"], T0)
    other_world_mailing = _other_mailing(engine, other.id)
    app = create_app(settings, engine, clock=lambda: NOW)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield Live(f"http://127.0.0.1:{port}", key, other_key, mailing_id, other_world_mailing,
                   tmp / "screenshots")
    finally:
        server.should_exit = True
        thread.join(10)
        engine.dispose()


def _other_mailing(engine: object, account_id: int) -> int:
    from mailcarrier.storage.tables import mailings  # noqa: PLC0415 - local helper import
    with engine.begin() as conn:  # type: ignore[attr-defined]
        key = conn.execute(mailings.insert().values(
            account_id=account_id, name="Theirs", from_address="x@other.example", subject="s",
            sending_domain="other.example", created_at=T0)).inserted_primary_key
    return int(key[0])


def test_dashboard_requires_login_and_isolates_accounts(live: Live) -> None:
    with httpx.Client(base_url=live.base, timeout=30) as http:
        r = http.get("/dashboard/")
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
        r = login(http, "mc_000000000000_nope")
        assert r.status_code == 401 and "unknown" in r.text
        r = login(http, live.other_key)
        assert r.status_code == 303
        r = http.get(f"/dashboard/mailings/{live.mailing_id}")
        assert r.status_code == 404
        r = http.get("/dashboard/evidence", params={"email": "unknown1@gmail.com"})
        assert r.status_code == 404
        r = http.get("/dashboard/mailings/999999999999999999999")
        assert r.status_code in (404, 422)
        r = http.get(f"/dashboard/mailings/{live.other_mailing_id}")
        assert r.status_code == 200 and "Theirs" in r.text
        r = http.get("/dashboard/bounces?days=0")
        assert r.status_code == 422


@pytest.mark.slow
def test_dashboard_in_chromium_matches_api_and_links_bounce_to_evidence(live: Live) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not installed at {CHROMIUM} (apt install chromium, or set MAILCARRIER_CHROMIUM)")
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only when a browser exists

    live.shots.mkdir(parents=True, exist_ok=True)
    page_json = live.api(f"/api/v1/reports/mailings/{live.mailing_id}").json()
    bounce_json = live.api("/api/v1/reports/bounces", since=str(T0.date()), until=str(NOW.date())).json()
    assert page_json["buckets"]["bounced_hard"] >= 2 and page_json["buckets"]["delivered"] >= 6
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{live.base}/dashboard/")
            assert page.url.endswith("/dashboard/login")
            page.screenshot(path=str(live.shots / "login.png"))
            page.fill("input[name=key]", live.key)
            page.click("button[type=submit]")
            page.wait_for_url(f"{live.base}/dashboard/")
            page.screenshot(path=str(live.shots / "mailings.png"), full_page=True)
            page.click(f"a[href='/dashboard/mailings/{live.mailing_id}']")
            page.wait_for_url(f"**/dashboard/mailings/{live.mailing_id}")
            page.screenshot(path=str(live.shots / "response_page.png"), full_page=True)
            shown = {el.get_attribute("data-figure"): el.inner_text().strip()
                     for el in page.query_selector_all("#figures [data-figure]")}
            for bucket, count in page_json["buckets"].items():
                assert shown[bucket] == str(count), bucket
            assert shown["recipients"] == str(page_json["recipients"])
            assert shown["attempted"] == str(page_json["attempted"])
            assert page_json["hard_bounce_level"] in shown["hard_bounce_level"]
            assert page.locator("svg[aria-label^='Delivery funnel']").count() == 1

            page.goto(f"{live.base}/dashboard/bounces?days=4&until={NOW.date()}")
            page.screenshot(path=str(live.shots / "bounce_report.png"), full_page=True)
            assert page.inner_text("[data-figure=total]") == str(bounce_json["total"])
            for category, count in bounce_json["by_category"].items():
                assert page.inner_text(f"[data-category='{category}']") == str(count)

            page.goto(f"{live.base}/dashboard/mailings/{live.mailing_id}")
            link = page.locator("a.evidence-link[aria-label='Evidence for unknown1@gmail.com']")
            link.click()
            page.wait_for_url("**/dashboard/evidence?**")
            page.screenshot(path=str(live.shots / "evidence.png"), full_page=True)
            evidence_json = live.api("/api/v1/evidence", email="unknown1@gmail.com",
                                     mailing_id=live.mailing_id).json()
            attempt = evidence_json["deliveries"][0]["attempts"][0]
            assert page.inner_text("td[data-fact=remote_ip]") == attempt["remote_ip"]
            assert page.inner_text("td[data-fact=mx_host]") == (attempt["mx_host"] or "")
            assert "refused" in page.inner_text("ul.guidance")
            with page.expect_download() as download:
                page.click("text=PDF")
            assert download.value.path().read_bytes().startswith(b"%PDF-")
        finally:
            browser.close()
    assert sorted(p.name for p in live.shots.iterdir()) == [
        "bounce_report.png", "evidence.png", "login.png", "mailings.png", "response_page.png"]
