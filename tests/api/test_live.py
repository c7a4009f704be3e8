"""Real servers on loopback: uvicorn with httpx, and headless Chromium clicking a delivered message."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright
from sqlalchemy import Engine, select

from mailcarrier.api.app import create_app
from mailcarrier.config import Settings
from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.services.mailings import MailingDraft, create_mailing, send_mailing
from mailcarrier.services.tracking.links import make_link_hook
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage import contacts as contact_repo
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.tables import audience_members, contacts
from mailcarrier.storage.tracking_tables import tracking_hits
from tests.api.conftest import T0
from tests.api.live import destination, free_port, serving
from tests.api.world import make_mailing

CHROMIUM = os.environ.get("MAILCARRIER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def test_click_and_unsubscribe_through_real_uvicorn(db: Engine, settings: Settings,
                                                     account_id: int) -> None:
    port = free_port()
    live_settings = settings.with_values(public_url=f"http://127.0.0.1:{port}")
    _m, (ann,) = make_mailing(db, live_settings, account_id, ["ann@a.example"],
                              datetime.now(UTC) - timedelta(hours=1))
    app = create_app(live_settings, db)
    with serving(app, port) as base:
        html = ann.prepared.html or ""
        click = html.split('href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
        assert click.startswith(f"{base}/c/")
        response = httpx.get(click, follow_redirects=False, headers={"User-Agent": "Thunderbird"})
        assert response.status_code == 302
        assert response.headers["location"] == "https://shop.example/sale?utm=1&x=2"
        one_click = httpx.post(ann.prepared.unsubscribe_url, data={"List-Unsubscribe": "One-Click"})
        assert one_click.status_code == 200
        assert httpx.get(f"{base}/c/AAAA").status_code == 404
        assert app.state.tracking.recorder.flush(timeout=10)
    with db.connect() as conn:
        rows = conn.execute(select(tracking_hits.c.ip, tracking_hits.c.verdict, tracking_hits.c.token_valid)
                            .order_by(tracking_hits.c.id)).all()
        status = conn.execute(select(contacts.c.status).where(contacts.c.id == ann.contact_id)).scalar_one()
    assert [tuple(r) for r in rows] == [("127.0.0.1", "human", True), ("127.0.0.1", None, False)]
    assert status == "opted_out"


def _html_part(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/html":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    raise AssertionError("no HTML part")


@pytest.mark.slow
def test_browser_opens_delivered_message_clicks_and_lands(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not installed at {CHROMIUM} (apt install chromium, or set MAILCARRIER_CHROMIUM)")
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    with engine.begin() as conn:
        account = account_repo.create_account(conn, "shop", "Shop", T0)
        audience = account_repo.create_audience(conn, account.id, "news", T0)
        contact_id = contact_repo.add_contact(conn, account.id, "reader@example.com", T0, first_name="Ann")
        conn.execute(audience_members.insert().values(audience_id=audience.id, contact_id=contact_id,
                                                      added_at=T0))
    api_port = free_port()
    raw: list[bytes] = []
    with destination() as (landing, seen), Sandbox() as sandbox:
        original = sandbox.handler.handle_DATA

        async def keep(server, session, envelope):  # type: ignore[no-untyped-def]
            raw.append(envelope.original_content)
            return await original(server, session, envelope)

        sandbox.handler.handle_DATA = keep  # type: ignore[method-assign]
        settings = Settings.of(data_dir=tmp_path / "data",
                            secret_key="browser-test-secret-0123456789",
                            static_routes=f"*=127.0.0.1:{sandbox.port}", smtp_timeout=2.0,
                            dkim_algorithm="ed25519", public_url=f"http://127.0.0.1:{api_port}")
        mailing_id = create_mailing(engine, MailingDraft(
            account_id=account.id, from_address="news@shop.example", from_name="Shop",
            subject="Hello {{ first_name }}",
            html=(f'<html><body><p>Hi {{{{ first_name }}}}</p><a id="offer" href="{landing}/offer?c=spring">'
                  'See the offer</a> <a href="{{ unsubscribe_url }}">unsubscribe</a></body></html>'),
            text=f"Offer: {landing}/offer?c=spring", kind="regular", audience_id=audience.id), T0)
        send_mailing(engine, account.id, mailing_id, T0)
        asyncio.run(run_worker(settings, engine, until_idle=True, clock=SimulatedClock(T0),
                               link_hook=make_link_hook(engine, settings)))
        assert len(raw) == 1
        html = _html_part(message_from_bytes(raw[0]))
        assert f"{landing}/offer" not in html and f"http://127.0.0.1:{api_port}/c/" in html
        message_file = tmp_path / "message.html"
        message_file.write_text(html, encoding="utf-8")
        app = create_app(settings, engine)
        with serving(app, api_port), sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(message_file.as_uri())
                page.click("#offer")
                page.wait_for_url(f"{landing}/offer?c=spring", timeout=15_000)
                assert page.title() == "Landed"
            finally:
                browser.close()
            assert app.state.tracking.recorder.flush(timeout=10)
    assert [p for p in seen if p != "/favicon.ico"] == ["/offer?c=spring"]
    with engine.connect() as conn:
        rows = conn.execute(select(tracking_hits.c.kind, tracking_hits.c.verdict, tracking_hits.c.contact_id)
                            .order_by(tracking_hits.c.id)).all()
    kinds = {(r.kind, r.verdict, r.contact_id) for r in rows}
    assert ("click", "human", contact_id) in kinds
    assert ("open", "human", contact_id) in kinds  # the pixel, fetched by the browser
    engine.dispose()
