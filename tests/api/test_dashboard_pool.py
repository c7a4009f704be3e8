"""The dashboard's pool page and domain check, served by uvicorn: login, tenant isolation,
figures equal to the pools API, and one pass in a real headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mailcarrier.api.app import create_app
from mailcarrier.config import Settings
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.api_keys import create_api_key
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.migrate import upgrade
from tests.services.local_dns import local_dns
from tests.services.test_hygiene import ZONE

from .conftest import T0
from .dashboard_forms import login
from .live import free_port, serving
from .test_dashboard import CHROMIUM, CHROMIUM_ARGS
from .test_pools_api import BEFORE, build


@dataclass
class Site:
    base: str
    dash_key: str  #: acme, reports:read + pools:read (dashboard login)
    api: dict[str, str]  #: acme's pools:read key as a header
    shots: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("dashboard_pool")
    engine = make_engine(f"sqlite:///{tmp / 'db.sqlite'}")
    upgrade(engine)
    with engine.begin() as conn:
        acme = account_repo.create_account(conn, "acme", "Acme", BEFORE).id
    keys = build(engine, acme)
    with engine.begin() as conn:
        _, dash_key = create_api_key(conn, acme, "dashboard", ["reports:read", "pools:read"], BEFORE)
    with local_dns(ZONE) as resolver:
        settings = Settings.of(data_dir=tmp / "data",
                            secret_key="test-master-secret-0123456789", public_url="http://mc.test",
                            dkim_selector="s1", bounce_domain="bounces.good.test", hostname="mx.mailcarrier.test",
                            hygiene_nameserver=f"127.0.0.1:{resolver.port}")
        app = create_app(settings, engine, clock=lambda: T0)
        with serving(app, free_port()) as base:
            yield Site(base, dash_key, keys.read, tmp / "screenshots")
    engine.dispose()


@contextmanager
def _logged_in(site: Site) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.base, timeout=30) as http:
        assert login(http, site.dash_key).status_code == 303
        yield http


def test_pool_page_needs_login_and_shows_only_this_account(site: Site) -> None:
    with httpx.Client(base_url=site.base, timeout=30) as anonymous:
        r = anonymous.get("/dashboard/pool")
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
    with _logged_in(site) as http:
        page = http.get("/dashboard/pool").text
        assert 'href="/dashboard/pool"' in page  # the nav link
        assert "apartment" in page and "127.0.0.3" in page and "yahoo-tss04" in page
        for leaked in ("127.0.0.9", "house", "victim@shop.test", "fan@yahoo.com", "solo", ">other<"):
            assert leaked not in page, leaked
        assert http.get("/dashboard/pool/domain", params={"domain": "x y"}).status_code == 422


def test_domain_check_page_says_what_to_fix(site: Site) -> None:
    with _logged_in(site) as http:
        page = http.get("/dashboard/pool/domain", params={"domain": "good.test"}).text
    assert "would be refused" in page
    assert "FCrDNS 127.0.0.3" in page and "add an A/AAAA record mta3.mailcarrier.test" in page
    assert "DNSBL bl.test for 127.0.0.2" in page and "request delisting" in page
    assert "SPF good.test for 127.0.0.2" in page


@pytest.mark.slow
def test_pool_page_in_chromium_matches_the_api(site: Site) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not installed at {CHROMIUM} (apt install chromium, or set MAILCARRIER_CHROMIUM)")
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only when a browser exists

    pool = httpx.get(f"{site.base}/api/v1/pools", headers=site.api, timeout=30).json()
    throttle = httpx.get(f"{site.base}/api/v1/pools/throttle", headers=site.api, timeout=30).json()
    events = httpx.get(f"{site.base}/api/v1/pools/events", headers=site.api, timeout=30).json()
    verdict = httpx.get(f"{site.base}/api/v1/pools/eligibility", headers=site.api, timeout=30).json()
    site.shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{site.base}/dashboard/login")
            page.fill("input[name=key]", site.dash_key)
            page.click("button[type=submit]")
            page.wait_for_url(f"{site.base}/dashboard/")
            page.click("text=Pool & reputation")
            page.wait_for_url("**/dashboard/pool")
            page.screenshot(path=str(site.shots / "pool.png"), full_page=True)
            assert page.inner_text("[data-figure=pool]") == pool["name"]
            assert page.inner_text("[data-figure=other_accounts]") == str(pool["other_accounts"])
            for ip in pool["ips"]:
                row = page.locator(f"tr[data-ip='{ip['address']}']")
                assert row.locator("[data-figure=sent_today]").inner_text() == str(ip["sent_today"])
                cap = "warm" if ip["daily_cap"] is None else str(ip["daily_cap"])
                assert row.locator("[data-figure=daily_cap]").inner_text() == cap
            assert page.inner_text("[data-figure=belongs_in]") == verdict["eligibility"]["belongs_in"]
            assert page.locator("#throttle tr[data-in-force=yes]").count() == sum(a["in_force"] for a in throttle)
            shown = page.locator("#events tr[data-event]")
            assert shown.count() == len(events)
            assert [int(shown.nth(i).get_attribute("data-event") or 0) for i in range(shown.count())] == [
                e["id"] for e in events]

            page.fill("#domain-check input[name=domain]", "good.test")
            page.click("#domain-check button")
            page.wait_for_url("**/dashboard/pool/domain?domain=good.test")
            page.screenshot(path=str(site.shots / "domain_check.png"), full_page=True)
            assert "would be refused" in page.inner_text("#verdict")
            failed = page.locator("#checks tr[data-status=fail]").all_inner_texts()
            assert any("FCrDNS 127.0.0.3" in row for row in failed)
            assert any("DNSBL bl.test for 127.0.0.2" in row for row in failed)
        finally:
            browser.close()
    assert sorted(p.name for p in site.shots.iterdir()) == ["domain_check.png", "pool.png"]
