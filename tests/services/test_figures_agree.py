"""One source for each figure: the CLI, the API, the dashboard, the webhooks and the bounce
report show the same headline figures for the demo's mailing (every recipient final) and for a mailing still
in progress (queued, retrying, delivered and bounced recipients at once)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from rich.console import Console
from sqlalchemy import Engine, select, update
from typer.testing import CliRunner

from mailcarrier.api.app import create_app
from mailcarrier.cli import mailings_cmd
from mailcarrier.cli.demo_cmd import run_demo
from mailcarrier.config import Settings
from mailcarrier.services import reports, webhooks
from mailcarrier.services.figures import mailing_figures
from mailcarrier.services.mailings import MailingDraft, create_mailing, send_mailing
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.api_keys import create_api_key
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.tables import deliveries
from mailcarrier.storage.webhook_tables import webhook_endpoints, webhook_outbox

_TOKEN = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')
_FIGURE = re.compile(r'data-figure="([a-z_]+)">([0-9]+)<')


@dataclass
class Demo:
    url: str
    engine: Engine
    account_id: int
    done: int
    sending: int
    key: str
    settings: Settings


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("MAILCARRIER_")}
    # The demo runs on a simulated clock that ends by now, so its mailing may be recorded as
    # finished minutes (up to the retry schedule's length) in the past: the endpoint is older.
    hooked_since = datetime.now(UTC) - timedelta(days=2)
    try:
        root = tmp_path_factory.mktemp("figures")
        done = run_demo(root / "demo", Console(record=True, width=120)).mailing_id
    finally:
        os.environ.update(saved)
    url = f"sqlite:///{root / 'demo' / 'mailcarrier.db'}"
    engine = make_engine(url)
    with engine.begin() as conn:
        account_id = account_repo.account_by_slug(conn, "demo").id
        _, key = create_api_key(conn, account_id, "figures", ["*"], datetime.now(UTC))
        conn.execute(webhook_endpoints.insert().values(  # stored as is: no delivery is attempted here
            account_id=account_id, url="https://hooks.shop.example/mailcarrier", secret="s" * 32,
            events=["mailing_finished"], active=True, description="", created_at=hooked_since))
    now = datetime.now(UTC)
    sending = create_mailing(engine, MailingDraft(account_id=account_id, from_address="news@shop.example",
                                                  subject="Second", text="Hello {{ first_name }}"), now)
    send_mailing(engine, account_id, sending, now)
    with engine.begin() as conn:  # the worker has got part of the way
        ids = list(conn.execute(select(deliveries.c.id).where(
            deliveries.c.mailing_id == sending, deliveries.c.state == "queued").order_by(deliveries.c.id)).scalars())
        plan = [("delivered", None, None)] * 20 + [("in_progress", None, None)] * 6 + \
               [("bounced_hard", "userunknown", 2)] * 3 + [("bounced_soft", None, None)] * 2
        for delivery_id, (state, reason, category) in zip(ids, plan, strict=False):
            conn.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(
                state=state, last_reason=reason, last_category=category,
                outcome_unknown=delivery_id == ids[0]))
    settings = Settings.of(data_dir=root / "demo", database_url=url, secret_key="figures-secret-0123456789abcdef",
                        public_url="http://mc.test")
    return Demo(url, engine, account_id, done, sending, key, settings)


@pytest.fixture
async def http(demo: Demo) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(demo.settings, demo.engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://mc.test") as client:
            form = await client.get("/dashboard/login")
            token = _TOKEN.search(form.text)
            assert token
            login = await client.post("/dashboard/login", data={"key": demo.key, "csrf_token": token.group(1)})
            assert login.status_code == 303
            yield client


@pytest.mark.slow
@pytest.mark.parametrize("which", ["done", "sending"])
async def test_cli_api_dashboard_and_report_show_the_same_figures(
        demo: Demo, http: httpx.AsyncClient, which: str) -> None:
    mailing_id = demo.done if which == "done" else demo.sending
    expected = mailing_figures(demo.engine, demo.account_id, mailing_id)
    headline = expected.headline()
    assert expected.reconciles
    if which == "sending":
        assert expected.queued > 0 and expected.in_progress == 6 and expected.bounced_hard == 3
    else:
        assert expected.open == 0 and expected.bounced > 0

    shown = CliRunner().invoke(mailings_cmd.app, ["show", str(mailing_id), "--account", "demo",
                                                  "--format", "json", "--database-url", demo.url])
    assert shown.exit_code == 0, shown.output
    cli = json.loads(shown.output)
    assert cli["figures"] == headline and cli["sent"] == expected.sent

    auth = {"Authorization": f"Bearer {demo.key}"}
    page = (await http.get(f"/api/v1/reports/mailings/{mailing_id}", headers=auth)).json()
    assert page["figures"] == headline
    assert page["buckets"] == expected.buckets and page["attempted"] == expected.sent
    assert page["recipients"] == expected.recipients and page["outcome_unknown"] == expected.outcome_unknown
    assert {int(k): v for k, v in page["bounced_by_category"].items()} == expected.bounced_by_category

    listed = (await http.get("/api/v1/mailings", params={"which": "sent" if which == "done" else "in_progress"},
                             headers=auth)).json()
    row = next(item for item in listed["items"] if item["id"] == mailing_id)
    assert (row["recipients"], row["delivered"], row["bounced"], row["in_progress"]) == \
        (expected.recipients, expected.delivered, expected.bounced, expected.open)

    html = (await http.get(f"/dashboard/mailings/{mailing_id}")).text
    dashboard = {name: int(value) for name, value in _FIGURE.findall(html)}
    assert dashboard["recipients"] == expected.recipients and dashboard["attempted"] == expected.sent
    assert {b: dashboard[b] for b in expected.buckets} == expected.buckets
    assert dashboard["outcome_unknown"] == expected.outcome_unknown
    assert dashboard["suspected_filtering"] == expected.suspected_filtering

    today = datetime.now(UTC).date()
    report = reports.bounce_report(demo.engine, demo.account_id, since=today - timedelta(days=2),
                                   until=today + timedelta(days=1))
    rate = next(r for r in report.mailing_rates if r.mailing_id == mailing_id)
    assert (rate.attempted, rate.bounced_hard) == (expected.sent, expected.bounced_hard)
    assert rate.rate == pytest.approx(expected.hard_bounce_rate)

    webhooks.pump_activities(demo.engine, datetime.now(UTC))
    with demo.engine.connect() as conn:
        finished = [row.payload for row in conn.execute(select(webhook_outbox.c.payload).where(
            webhook_outbox.c.event_type == "mailing_finished"))]
    sent = [p["data"] for p in finished if p["data"]["mailing_id"] == mailing_id]
    if which == "done":  # the webhook tells the figures the mailing finished with
        assert len(sent) == 1 and sent[0]["figures"] == headline and sent[0]["state"] == "done"
    else:
        assert sent == []  # still sending: no event yet
