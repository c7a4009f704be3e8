"""``/docs`` in headless Chromium with every request off the loopback server refused.

FastAPI's default page loads Swagger UI from a CDN and is blank without internet; ours must
render from the package alone, offer "Authorize" for the API key, and "Try it out" must
reach the API with that key.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from mailcarrier.api.app import create_app
from mailcarrier.config import Settings
from mailcarrier.storage.api_keys import create_api_key
from tests.api.live import free_port, serving

CHROMIUM = os.environ.get("MAILCARRIER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def test_openapi_declares_the_api_key_schemes(db: Engine, settings: Settings) -> None:
    doc = create_app(settings, db).openapi()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    whoami = doc["paths"]["/api/v1/whoami"]["get"]
    assert {"bearer": []} in whoami["security"] and {"apiKey": []} in whoami["security"]
    assert "security" not in doc["paths"]["/healthz"]["get"]


def test_docs_pages_reference_only_local_assets(db: Engine, settings: Settings) -> None:
    port = free_port()
    with serving(create_app(settings, db), port) as base, httpx.Client(base_url=base) as http:
        for page in ("/docs", "/redoc"):
            html = http.get(page).text
            assert "cdn" not in html.lower() and "https://" not in html, page
        assert http.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
        assert http.get("/docs/assets/redoc.standalone.js").status_code == 200


def test_docs_render_offline_and_try_it_out_sends_the_key(db: Engine, settings: Settings,
                                                          account_id: int, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not installed at {CHROMIUM} (apt install chromium, or set MAILCARRIER_CHROMIUM)")
    from playwright.sync_api import Route, sync_playwright  # noqa: PLC0415 - only when a browser exists

    with db.begin() as conn:
        _, key = create_api_key(conn, account_id, "docs test", ["*"], datetime.now(UTC))
    port = free_port()
    refused: list[str] = []

    def offline(route: Route) -> None:
        if route.request.url.startswith(f"http://127.0.0.1:{port}/"):
            route.continue_()
        else:  # the network: a CDN, fonts, anything
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    with serving(create_app(settings, db), port) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", offline)
            page.goto(f"{base}/docs")
            page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
            assert "mailcarrier" in page.inner_text(".swagger-ui .info .title")
            page.screenshot(path=str(tmp_path / "docs.png"))  # kept by pytest for a look
            page.click("button.authorize")
            dialog = page.locator(".dialog-ux")
            dialog.locator("input").first.fill(key)  # the first scheme: bearer
            dialog.locator("button.authorize").first.click()
            dialog.locator("button.close-modal").click()
            operation = page.locator("#operations-health-whoami_api_v1_whoami_get")
            operation.locator(".opblock-summary").click()
            operation.locator("button.try-out__btn").click()
            operation.locator("button.execute").click()
            status = operation.locator(".live-responses-table .response .response-col_status").first
            status.wait_for(timeout=20_000)
            assert status.inner_text().strip() == "200"
            assert "Authorization: Bearer mc_" in operation.locator(".curl-command").inner_text()
            body = operation.locator(".live-responses-table").inner_text()
            assert f'"account_id": {account_id}' in body, body
        finally:
            browser.close()
    assert refused == []
