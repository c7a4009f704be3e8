"""The marketer's dashboard pages, through the ASGI app on SQLite and PostgreSQL: contacts
(filters, history, audited reactivation), audiences and CSV import, mailings (create, preview,
check, test send, send/pause/resume/cancel), the charts and every CSV export."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from datetime import timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import Engine, select

from mailcarrier.api.dashboard.import_jobs import ImportJob, ImportJobs
from mailcarrier.config import Settings
from mailcarrier.domain.contact_status import ContactEvent, EventKind, StatusPolicy
from mailcarrier.domain.vocabulary import Category, Reason
from mailcarrier.services.contacts import ContactEventRecord, apply_event
from mailcarrier.services.mailings import MailingDraft, create_mailing, send_mailing
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage import contacts as contact_repo
from mailcarrier.storage.api_keys import create_api_key
from mailcarrier.storage.tables import activities, audience_members, deliveries, mailings
from mailcarrier.storage.tracking_tables import tracking_hits
from tests.api.conftest import T0, Clock
from tests.api.world import make_mailing

_TOKEN = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')
HTML = '<p>Hi {{ first_name }}</p><p>Shop Ltd, 1 Market Street, Springfield</p><a href="{{ unsubscribe_url }}">u</a>'


async def _login(client: httpx.AsyncClient, db: Engine, account_id: int,
                 scopes: tuple[str, ...] = ("*",)) -> str:
    with db.begin() as conn:
        key = create_api_key(conn, account_id, "alice", list(scopes), T0)[1]
    form = await client.get("/dashboard/login")
    response = await client.post("/dashboard/login", data={"key": key, "csrf_token": _token(form.text)})
    assert response.status_code == 303
    return _token((await client.get("/dashboard/")).text)


def _token(html: str) -> str:
    found = _TOKEN.search(html)
    assert found, "no CSRF field in the page"
    return found.group(1)


def _csv(response: httpx.Response) -> list[list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))


def _contacts(db: Engine, account_id: int) -> dict[str, int]:
    """An audience 'news' with ann (bounced: invalid address), bob (active), =cmd (a formula)."""
    with db.begin() as conn:
        audience = account_repo.create_audience(conn, account_id, "news", T0)
        ids = {}
        for email, first in (("ann@a.example", "Ann"), ("bob@b.example", "Bob"), ("=cmd@c.example", "Eve")):
            ids[email] = contact_repo.add_contact(conn, account_id, email, T0, first_name=first)
            conn.execute(audience_members.insert().values(audience_id=audience.id, contact_id=ids[email],
                                                          added_at=T0))
    ids["audience"] = audience.id
    return ids


def _hard_bounce(db: Engine, account_id: int, contact_id: int, when_days: int = 1) -> None:
    when = T0 + timedelta(days=when_days)
    apply_event(db, StatusPolicy(),
                ContactEventRecord(account_id, contact_id, ContactEvent(
                    EventKind.HARD_BOUNCE, when, Reason.USERUNKNOWN, Category.INVALID_ADDRESS),
                    reply_code=550, enhanced_status="5.1.1", diagnostic="550 5.1.1 user unknown",
                    remote_mta="mx.a.example", cause="delivery engine"), when)


async def test_contact_list_filters_paginates_and_exports(client: httpx.AsyncClient, db: Engine,
                                                          account_id: int, clock: Clock) -> None:
    ids = _contacts(db, account_id)
    _hard_bounce(db, account_id, ids["ann@a.example"])
    await _login(client, db, account_id)
    page = await client.get("/dashboard/contacts")
    assert page.status_code == 200 and 'data-figure="total">3<' in page.text
    page = await client.get("/dashboard/contacts", params={"status": "error"})
    assert 'data-figure="total">1<' in page.text and "ann@a.example" in page.text and "bob@" not in page.text
    page = await client.get("/dashboard/contacts", params={"category": 2, "reason": "userunknown",
                                                           "since": str((T0 + timedelta(days=1)).date()),
                                                           "until": str((T0 + timedelta(days=1)).date())})
    assert 'data-figure="total">1<' in page.text and "2 – invalid address" in page.text
    page = await client.get("/dashboard/contacts", params={"since": str((T0 + timedelta(days=2)).date())})
    assert 'data-figure="total">0<' in page.text
    page = await client.get("/dashboard/contacts", params={"status": "error", "until": "9999-12-31"})
    assert page.status_code == 200 and 'data-figure="total">1<' in page.text  # the last day: no bound
    page = await client.get("/dashboard/contacts", params={"q": "BO"})  # address or name, any case
    assert 'data-figure="total">1<' in page.text and "bob@b.example" in page.text
    page = await client.get("/dashboard/contacts", params={"q": "Ann@A.EX"})  # part of an address
    assert 'data-figure="total">1<' in page.text and "ann@a.example" in page.text
    page = await client.get("/dashboard/contacts", params={"q": "%"})  # a wildcard is matched literally
    assert 'data-figure="total">0<' in page.text
    page = await client.get("/dashboard/contacts", params={"audience": ids["audience"], "status": "active"})
    assert 'data-figure="total">2<' in page.text
    assert (await client.get("/dashboard/contacts", params={"status": "nonsense"})).status_code == 422
    assert (await client.get("/dashboard/contacts", params={"audience": 999999})).status_code == 404
    rows = _csv(await client.get("/dashboard/contacts.csv", params={"audience": ids["audience"]}))
    assert rows[0][:2] == ["email", "status"] and len(rows) == 4
    exported = {r[0]: dict(zip(rows[0], r, strict=True)) for r in rows[1:]}
    assert "'=cmd@c.example" in exported  # a spreadsheet would run =... as a formula
    assert exported["ann@a.example"]["status"] == "error"
    assert exported["ann@a.example"]["last_bounce_reason"] == "userunknown"


async def test_contact_list_pages_by_id(client: httpx.AsyncClient, db: Engine, account_id: int) -> None:
    with db.begin() as conn:
        for i in range(55):
            contact_repo.add_contact(conn, account_id, f"p{i:02d}@pages.example", T0)
    await _login(client, db, account_id)
    first = await client.get("/dashboard/contacts")
    assert first.text.count('href="/dashboard/contacts/') == 50
    following = re.search(r'href="(/dashboard/contacts\?after=\d+)" rel="next"', first.text)
    assert following
    second = await client.get(following.group(1).replace("&amp;", "&"))
    assert second.text.count('href="/dashboard/contacts/') == 5 and "p54@pages.example" in second.text
    assert 'rel="next"' not in second.text
    assert len(_csv(await client.get("/dashboard/contacts.csv"))) == 56  # every page, header included


async def test_contact_page_history_and_audited_reactivation(client: httpx.AsyncClient, db: Engine,
                                                             account_id: int) -> None:
    ids = _contacts(db, account_id)
    ann = ids["ann@a.example"]
    _hard_bounce(db, account_id, ann)
    token = await _login(client, db, account_id)
    page = await client.get(f"/dashboard/contacts/{ann}")
    assert page.status_code == 200
    history = page.text.split('id="history"', 1)[1]
    assert "status Active → Error" in history and "2 – invalid address" in history
    assert "550 5.1.1 550 5.1.1 user unknown" in history and "mx.a.example" in history
    blank = await client.post(f"/dashboard/contacts/{ann}/reactivate", data={"why": "  ", "csrf_token": token})
    assert blank.status_code == 422 and "Say why" in blank.text
    no_token = await client.post(f"/dashboard/contacts/{ann}/reactivate", data={"why": "confirmed"})
    assert no_token.status_code == 403
    done = await client.post(f"/dashboard/contacts/{ann}/reactivate",
                             data={"why": "confirmed by phone", "csrf_token": token})
    assert done.status_code == 303
    page = await client.get(done.headers["location"])
    assert 'data-figure="status">Active' in page.text and "reactivated by alice (dashboard): confirmed by phone" \
        in page.text
    with db.connect() as conn:
        causes = [r.cause for r in conn.execute(select(activities.c.cause).where(
            activities.c.contact_id == ann, activities.c.type == "reactivate"))]
    assert causes == ["reactivated by alice (dashboard): confirmed by phone"]
    assert (await client.get("/dashboard/contacts/99999999")).status_code == 404
    rows = _csv(await client.get(f"/dashboard/contacts/{ann}/history.csv"))
    assert [r[2] for r in rows[1:]] == ["status_changed", "reactivate", "status_changed", "hard_bounce"]
    assert rows[4][6] == "2 – invalid address" and rows[4][8] == "550"


async def test_reactivation_needs_the_write_scope_and_refuses_opted_out(client: httpx.AsyncClient, db: Engine,
                                                                       account_id: int) -> None:
    ids = _contacts(db, account_id)
    ann, bob = ids["ann@a.example"], ids["bob@b.example"]
    _hard_bounce(db, account_id, ann)
    apply_event(db, StatusPolicy(),
                ContactEventRecord(account_id, bob, ContactEvent(EventKind.UNSUBSCRIBE, T0)), T0)
    token = await _login(client, db, account_id)
    refused = await client.post(f"/dashboard/contacts/{bob}/reactivate", data={"why": "x", "csrf_token": token})
    assert refused.status_code == 409 and "must subscribe again" in refused.text
    client.cookies.clear()
    token = await _login(client, db, account_id, scopes=("reports:read", "contacts:read"))
    page = await client.get(f"/dashboard/contacts/{ann}")
    assert 'id="reactivate"' not in page.text and "contacts:write" in page.text
    forbidden = await client.post(f"/dashboard/contacts/{ann}/reactivate", data={"why": "x", "csrf_token": token})
    assert forbidden.status_code == 403


async def _wait_for_import(client: httpx.AsyncClient, url: str) -> str:
    for _ in range(200):
        page = await client.get(url)
        assert page.status_code == 200
        if 'data-state="running"' not in page.text:
            return page.text
        await asyncio.sleep(0.05)
    raise AssertionError("the import did not finish")


async def test_audience_create_and_csv_import_with_rejected_rows(client: httpx.AsyncClient, db: Engine,
                                                                account_id: int) -> None:
    token = await _login(client, db, account_id)
    created = await client.post("/dashboard/audiences", data={"name": " Spring  list ", "csrf_token": token})
    assert created.status_code == 303
    again = await client.post("/dashboard/audiences", data={"name": "Spring list", "csrf_token": token})
    assert again.status_code == 409 and "exists already" in again.text
    assert (await client.post("/dashboard/audiences", data={"name": "", "csrf_token": token})).status_code == 422
    audience_id = int(created.headers["location"].rsplit("=", 1)[1])
    body = ("email,first_name,city\nann@a.example,Ann,Paris\nnot-an-address,Bob,Lyon\n"
            "ann@a.example,Ann,Paris\ncid@c.example,Cid\n=bad@@x,Evil,Nice\n")
    started = await client.post("/dashboard/imports", data={"audience_id": str(audience_id), "csrf_token": token},
                                files={"file": ("people.csv", body.encode(), "text/csv")})
    assert started.status_code == 303 and started.headers["location"].startswith("/dashboard/imports/")
    result = await _wait_for_import(client, started.headers["location"])
    assert 'data-figure="rows_read">5<' in result and 'data-figure="rows_imported">1<' in result
    assert 'data-figure="duplicates_merged">1<' in result and 'data-figure="bad_count">3<' in result
    rows = _csv(await client.get(started.headers["location"] + "/rejected.csv"))
    assert rows[0] == ["line", "reason", "email", "first_name", "city"]
    assert [r[0] for r in rows[1:]] == ["3", "5", "6"]
    assert rows[1][2:] == ["not-an-address", "Bob", "Lyon"] and "expected 3 fields" in rows[2][1]
    assert rows[3][2] == "'=bad@@x"
    audiences = await client.get("/dashboard/audiences")
    assert 'data-audience="Spring list">1<' in audiences.text
    empty = await client.post("/dashboard/imports", data={"audience_id": str(audience_id), "csrf_token": token},
                              files={"file": ("empty.csv", b"", "text/csv")})
    assert empty.status_code == 422
    broken = await client.post("/dashboard/imports", data={"audience_id": str(audience_id), "csrf_token": token},
                               files={"file": ("x.csv", b"name\nann\n", "text/csv")})
    failed = await _wait_for_import(client, broken.headers["location"])
    assert "no email column" in failed
    assert (await client.get("/dashboard/imports/nope")).status_code == 404


async def test_mailing_create_preview_check_test_send_and_actions(client: httpx.AsyncClient, db: Engine,
                                                                  account_id: int) -> None:
    ids = _contacts(db, account_id)
    token = await _login(client, db, account_id)
    form = {"name": "June news", "audience_id": str(ids["audience"]), "from_address": "news@shop.example",
            "subject": "Hello {{ first_name }}", "html": HTML, "text": "Hi {{ first_name }} {{ unsubscribe_url }}",
            "csrf_token": token}
    bad = await client.post("/dashboard/mailings", data={**form, "html": "{{ frist_name }}"})
    assert bad.status_code == 422 and "frist_name" in bad.text and "June news" in bad.text
    made = await client.post("/dashboard/mailings", data=form)
    assert made.status_code == 303
    url = made.headers["location"]
    mailing_id = int(url.rsplit("/", 1)[1])
    draft = await client.get(url, params={"preview_contact": ids["bob@b.example"]})
    assert 'id="preview-subject">Hello Bob<' in draft.text and "Hi Bob" in draft.text
    by_address = await client.get(url, params={"preview_email": "ANN@a.example"})
    assert 'id="preview-subject">Hello Ann<' in by_address.text
    unknown = await client.get(url, params={"preview_email": "nobody@a.example"})
    assert unknown.status_code == 404 and "No contact" in unknown.text
    checked = await client.post(f"{url}/check", data={"csrf_token": token})
    assert checked.status_code == 200 and 'id="checks"' in checked.text
    assert "unsubscribe link" in checked.text and "postal address" in checked.text
    tested = await client.post(f"{url}/test-send", data={"addresses": "me@shop.example, boss@shop.example",
                                                         "csrf_token": token})
    assert tested.status_code == 200 and "Test sent to me@shop.example, boss@shop.example" in tested.text
    again = await client.post(f"{url}/test-send", data={"addresses": "other@shop.example", "csrf_token": token})
    assert again.status_code == 200
    refused = await client.post(f"{url}/test-send", data={"addresses": "nope", "csrf_token": token})
    assert refused.status_code == 422 and "invalid test address" in refused.text
    with db.connect() as conn:
        tests = {m.id: sorted(conn.execute(select(deliveries.c.email).where(deliveries.c.mailing_id == m.id))
                              .scalars())
                 for m in conn.execute(select(mailings.c.id).where(mailings.c.kind == "test"))}
    # Each test goes to the addresses named for it only, not to every earlier test address.
    assert sorted(tests.values()) == [["boss@shop.example", "me@shop.example"], ["other@shop.example"]]
    sent = await client.post(f"{url}/send", data={"csrf_token": token})
    assert sent.status_code == 303
    page = await client.get(url)
    assert 'data-state="sending"' in page.text and 'data-live="3"' in page.text
    assert 'data-figure="queued">3<' in page.text
    assert (await client.post(f"{url}/send", data={"csrf_token": token})).status_code == 409
    assert (await client.post(f"{url}/pause", data={"csrf_token": token})).status_code == 303
    paused = await client.get(url)
    assert 'data-state="paused"' in paused.text and "data-live" not in paused.text and ">Resume<" in paused.text
    assert (await client.post(f"{url}/resume", data={"csrf_token": token})).status_code == 303
    assert (await client.post(f"{url}/cancel", data={"csrf_token": token})).status_code == 303
    cancelled = await client.get(url)
    assert 'data-state="cancelled"' in cancelled.text and 'data-figure="failed">3<' in cancelled.text
    assert (await client.post(f"{url}/explode", data={"csrf_token": token})).status_code == 404
    rows = _csv(await client.get(f"{url}/recipients.csv", params={"bucket": "all"}))
    assert sorted(r[2] for r in rows[1:]) == ["'=cmd@c.example", "ann@a.example", "bob@b.example"]
    assert [r[3] for r in rows[1:]] == ["failed"] * 3 and f"mailing-{mailing_id}-all.csv" in \
        (await client.get(f"{url}/recipients.csv", params={"bucket": "all"})).headers["content-disposition"]


async def test_read_only_key_sees_no_write_forms(client: httpx.AsyncClient, db: Engine, account_id: int) -> None:
    await _login(client, db, account_id, scopes=("reports:read",))
    assert (await client.get("/dashboard/mailings/new")).status_code == 403
    assert "/dashboard/mailings/new" not in (await client.get("/dashboard/")).text
    assert "need a key" in (await client.get("/dashboard/audiences")).text


async def test_bounce_report_charts_every_day_with_names_and_exports(client: httpx.AsyncClient, db: Engine,
                                                                     account_id: int, clock: Clock) -> None:
    ids = _contacts(db, account_id)
    audience = ids["audience"]
    mailing_id = create_mailing(db, MailingDraft(account_id=account_id, from_address="n@shop.example",
                                                 subject="s", html=HTML, audience_id=audience), T0)
    send_mailing(db, account_id, mailing_id, T0)
    _hard_bounce(db, account_id, ids["ann@a.example"], when_days=2)
    _hard_bounce(db, account_id, ids["bob@b.example"], when_days=5)
    clock.now = T0 + timedelta(days=6)
    await _login(client, db, account_id)
    page = await client.get("/dashboard/bounces", params={"days": 7})
    assert page.status_code == 200 and 'data-figure="total">2<' in page.text
    chart = page.text.split('aria-label="Bounces per day by category"', 1)[1].split("</svg>", 1)[0]
    assert chart.count("<rect") - 5 == 2  # two days with bounces, plus the five legend swatches
    for day in ("01 May", "03 May", "07 May"):  # the axis names days across the whole period
        assert day in chart
    assert "2 – invalid address" in chart and "1 – spam or blocked sender" in chart
    trend = page.text.split('aria-label="Bounces per day at the top receiving domains"', 1)[1].split("</svg>")[0]
    assert "a.example" in trend and "b.example" in trend and "<polyline" in trend
    assert "100.0%" in page.text  # rates next to counts
    by_day = _csv(await client.get("/dashboard/bounces.csv", params={"days": 7, "by": "day"}))
    assert by_day[1:] == [[str((T0 + timedelta(days=2)).date()), "2", "2 – invalid address", "userunknown", "1"],
                          [str((T0 + timedelta(days=5)).date()), "2", "2 – invalid address", "userunknown", "1"]]
    by_domain = _csv(await client.get("/dashboard/bounces.csv", params={"days": 7, "by": "domain"}))
    assert sorted(r[0] for r in by_domain[1:]) == ["a.example", "b.example"]
    assert (await client.get("/dashboard/bounces.csv", params={"by": "nope"})).status_code == 422
    mailings_csv = _csv(await client.get("/dashboard/mailings.csv", params={"which": "in_progress"}))
    assert [r[0] for r in mailings_csv[1:]] == [str(mailing_id)]


async def test_static_assets_are_served_from_the_package(client: httpx.AsyncClient) -> None:
    css = await client.get("/dashboard/static/app.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    js = await client.get("/dashboard/static/live.js")
    assert js.status_code == 200 and "data-live" in js.text
    assert (await client.get("/dashboard/static/../session.py")).status_code == 404
    assert (await client.get("/dashboard/static/other.js")).status_code == 404


async def test_import_progress_page_while_running(client: httpx.AsyncClient, app: FastAPI, db: Engine,
                                                  account_id: int) -> None:
    """The progress page of an import still running: a progress bar at the share of the file
    read, and the live region that makes the page update itself (until the job is done)."""
    await _login(client, db, account_id)
    jobs = ImportJobs(app.state.context.settings.storage.data_dir / "dashboard-imports")
    job = ImportJob("job1-0123456789a", account_id, "news", "big.csv", 4000, T0, consumed=1000)
    jobs.save(job)  # a job caught mid-way, as the background thread leaves it
    page = await client.get("/dashboard/imports/job1-0123456789a")
    assert '<progress id="import-progress" max="100" value="25">' in page.text
    assert 'data-state="running" data-live="1"' in page.text and 'data-figure="percent">25%<' in page.text
    job.state, job.error = "failed", "malformed CSV at line 3"
    jobs.save(job)
    page = await client.get("/dashboard/imports/job1-0123456789a")
    assert "data-live" not in page.text and "malformed CSV at line 3" in page.text
    other = ImportJob("job2-0123456789a", account_id + 1000, "news", "x.csv", 1, T0)
    jobs.save(other)
    assert (await client.get("/dashboard/imports/job2-0123456789a")).status_code == 404  # another account's
    assert (await client.get("/dashboard/imports/..%2Fjob1")).status_code == 404


async def test_contact_page_marks_opens_and_clicks_person_or_machine(client: httpx.AsyncClient, db: Engine,
                                                                    settings: Settings, account_id: int) -> None:
    mailing_id, (ann,) = make_mailing(db, settings, account_id, ["ann@a.example"], T0)
    with db.begin() as conn:
        for kind, verdict, reasons, agent in (
                ("click", "machine", ["scanner network 192.0.2.0/24"], "SafeLinks"),
                ("open", "human", [], "Thunderbird"),
                ("open", "apple_mpp", ["Apple Mail Privacy Protection"], "Mozilla/5.0")):
            conn.execute(tracking_hits.insert().values(
                kind=kind, occurred_at=T0 + timedelta(minutes=5), method="GET", ip="192.0.2.9",
                user_agent=agent, headers={}, token_valid=True, account_id=account_id, mailing_id=mailing_id,
                delivery_id=ann.delivery_id, contact_id=ann.contact_id, verdict=verdict, reasons=reasons))
        conn.execute(tracking_hits.insert().values(  # a forged token is no activity of the contact
            kind="click", occurred_at=T0, method="GET", ip="203.0.113.1", user_agent="x", headers={},
            token_valid=False, account_id=account_id, mailing_id=mailing_id, delivery_id=ann.delivery_id))
    await _login(client, db, account_id)
    page = await client.get(f"/dashboard/contacts/{ann.contact_id}")
    hits = page.text.split('id="hits"', 1)[1].split("</table>", 1)[0]
    assert hits.count("<tr>") == 3 + 1  # three hits and the header row
    assert 'class="badge person">person<' in hits
    assert 'class="badge machine">machine (scanner)<' in hits and "scanner network 192.0.2.0/24" in hits
    assert "machine (Apple MPP)" in hits and "203.0.113.1" not in page.text
    deliveries_part = page.text.split("Deliveries and attempts", 1)[1]
    assert f'href="/dashboard/mailings/{mailing_id}">spring</a>: delivered' in deliveries_part
