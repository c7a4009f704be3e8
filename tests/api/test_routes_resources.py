"""The REST resources on real databases: figures, pagination, evidence formats, webhooks,
and tenant isolation — another account's key gets 404 on every endpoint."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, func, select, update

from mailcarrier.api.app import create_app
from mailcarrier.config import Settings
from mailcarrier.services import reports
from mailcarrier.services.report_rollups import refresh_rollups
from mailcarrier.storage.api_keys import create_api_key
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.report_tables import bounce_rollup, domain_rollup, report_watermarks
from mailcarrier.storage.tables import contacts
from tests.api.dashboard_forms import csrf_token
from tests.services.report_world import RECIPIENTS, T0, World, build
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

NOW = T0 + timedelta(days=1)


class Ctx:
    def __init__(self, world: World, http: httpx.AsyncClient, mine: str, theirs: str,
                 app: FastAPI) -> None:
        self.world, self.http, self.app = world, http, app
        self.mine = {"Authorization": f"Bearer {mine}"}
        self.theirs = {"Authorization": f"Bearer {theirs}"}


@pytest.fixture
def world(empty_engine: Engine) -> Iterator[World]:  # noqa: F811
    upgrade(empty_engine)
    yield build(empty_engine)


@pytest.fixture
async def api(world: World, tmp_path: Path) -> AsyncIterator[Ctx]:
    settings = Settings.of(data_dir=tmp_path / "data", secret_key="test-master-secret-0123456789",
                        public_url="http://mc.test")
    with world.engine.begin() as conn:
        _, mine = create_api_key(conn, world.account_id, "mine", ["*"], T0)
        _, theirs = create_api_key(conn, world.other_account_id, "theirs", ["*"], T0)
    app = create_app(settings, world.engine, clock=lambda: NOW)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mc.test") as http:
            yield Ctx(world, http, mine, theirs, app)


async def test_response_page_matches_service(api: Ctx) -> None:
    w = api.world
    r = await api.http.get(f"/api/v1/reports/mailings/{w.mailing_id}", headers=api.mine)
    assert r.status_code == 200, r.text
    body = r.json()
    page = reports.response_page(w.engine, w.account_id, w.mailing_id)
    assert body["buckets"] == page.buckets and body["recipients"] == len(RECIPIENTS)
    assert body["hard_bounce_level"] == "alert"
    assert body["bounced_by_category"] == {str(k): v for k, v in page.bounced_by_category.items()}


async def test_bounce_report_get_writes_nothing_and_matches_a_folded_report(api: Ctx) -> None:
    w = api.world

    def stored() -> tuple[list[Any], int, int]:
        with w.engine.connect() as conn:
            return (list(conn.execute(select(report_watermarks))),
                    int(conn.execute(select(func.count()).select_from(bounce_rollup)).scalar_one()),
                    int(conn.execute(select(func.count()).select_from(domain_rollup)).scalar_one()))

    before = stored()
    params = {"since": str(T0.date()), "until": str(NOW.date())}
    r = await api.http.get("/api/v1/reports/bounces", params=params, headers=api.mine)
    assert r.status_code == 200, r.text
    form = await api.http.get("/dashboard/login")
    logged_in = await api.http.post("/dashboard/login", data={
        "key": api.mine["Authorization"].removeprefix("Bearer "), "csrf_token": csrf_token(form.text)})
    assert logged_in.status_code == 303, logged_in.text
    for path in ("/dashboard/bounces", "/dashboard/bounces.csv"):
        page = await api.http.get(path, params={"days": 2})
        assert page.status_code == 200, (path, page.text[:300])
    assert stored() == before  # neither the API nor the dashboard's GET folded anything
    assert r.json()["total"] == 4
    refresh_rollups(w.engine)
    assert stored() != before
    again = await api.http.get("/api/v1/reports/bounces", params=params, headers=api.mine)
    assert again.json() == r.json()


async def test_recipients_are_paginated_without_overlap(api: Ctx) -> None:
    w = api.world
    seen: list[int] = []
    cursor = 0
    while True:
        r = await api.http.get(f"/api/v1/mailings/{w.mailing_id}/recipients",
                               params={"cursor": cursor, "limit": 4}, headers=api.mine)
        assert r.status_code == 200, r.text
        body = r.json()
        seen += [x["delivery_id"] for x in body["items"]]
        if body["next_cursor"] is None:
            break
        cursor = body["next_cursor"]
    assert sorted(seen) == sorted(w.deliveries.values()) and len(set(seen)) == len(seen)


async def test_contact_status_history_and_reactivation(api: Ctx) -> None:
    w = api.world
    cid = w.contacts["cy@example.com"]
    r = await api.http.get(f"/api/v1/contacts/{cid}", headers=api.mine)
    assert r.status_code == 200 and r.json()["email"] == "cy@example.com"
    r = await api.http.get(f"/api/v1/contacts/{cid}/history", headers=api.mine)
    assert [a["type"] for a in r.json()["items"]] == ["hard_bounce"]
    r = await api.http.post(f"/api/v1/contacts/{cid}/reactivate", headers=api.mine,
                            json={"who": "alice", "why": "confirmed by phone"})
    assert r.status_code == 200, r.text
    assert r.json()["after"] == "active"
    r = await api.http.get(f"/api/v1/contacts/{cid}/history", headers=api.mine)
    assert r.json()["items"][0]["type"] == "reactivate"


async def test_evidence_formats(api: Ctx) -> None:
    params = {"email": "bob@example.com"}
    r = await api.http.get("/api/v1/evidence", params=params, headers=api.mine)
    assert r.status_code == 200 and r.json()["deliveries"][0]["attempts"][-1]["queue_id"] == "4AbC123"
    r = await api.http.get("/api/v1/evidence", params={**params, "format": "text"}, headers=api.mine)
    assert r.headers["content-type"].startswith("text/plain") and "198.51.100.7" in r.text
    r = await api.http.get("/api/v1/evidence", params={**params, "format": "pdf"}, headers=api.mine)
    assert r.headers["content-type"] == "application/pdf" and r.content.startswith(b"%PDF-")


async def test_errors_are_problem_json(api: Ctx) -> None:
    r = await api.http.get("/api/v1/reports/mailings/999999", headers=api.mine)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert "mailing 999999" in r.json()["detail"]
    r = await api.http.get("/api/v1/reports/bounces", params={"since": "2026-05-05", "until": "2026-05-01"},
                           headers=api.mine)
    assert r.status_code == 422
    # the first day of the calendar: a clear 422, not an overflow computing the default period
    r = await api.http.get("/api/v1/reports/bounces", params={"until": "0001-01-01"}, headers=api.mine)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    r = await api.http.get("/api/v1/contacts", params={"status": "bogus"}, headers=api.mine)
    assert r.status_code == 422
    r = await api.http.get("/api/v1/contacts")
    assert r.status_code == 401
    # NUL characters (PostgreSQL text cannot hold them) are refused, never a 500.
    r = await api.http.get("/api/v1/evidence", params={"email": "a\x00@example.com"}, headers=api.mine)
    assert r.status_code == 422
    r = await api.http.post("/api/v1/audiences", json={"name": "x\x00"}, headers=api.mine)
    assert r.status_code == 422


async def test_webhook_endpoints_roundtrip(api: Ctx) -> None:
    r = await api.http.post("/api/v1/webhooks", headers=api.mine,
                            json={"url": "https://hooks.example/in", "events": ["bounced"]})
    assert r.status_code == 201 and r.json()["secret"].startswith("whsec_")
    eid = r.json()["id"]
    listed = (await api.http.get("/api/v1/webhooks", headers=api.mine)).json()["items"]
    assert [e["id"] for e in listed] == [eid] and listed[0]["secret"] is None
    r = await api.http.post("/api/v1/webhooks", headers=api.mine,
                            json={"url": "https://hooks.example/in", "events": ["nope"]})
    assert r.status_code == 422
    assert (await api.http.delete(f"/api/v1/webhooks/{eid}", headers=api.mine)).status_code == 204


async def test_import_csv_upload(api: Ctx) -> None:
    csv = b"email,first_name\nnew@example.net,New\nnot-an-address,X\n"
    r = await api.http.post("/api/v1/imports", headers=api.mine, data={"audience": "Newsletter"},
                            files={"file": ("c.csv", csv, "text/csv")})
    assert r.status_code == 201, r.text
    assert r.json()["rows_imported"] == 1 and r.json()["bad_count"] == 1
    r = await api.http.get("/api/v1/contacts", params={"email": "new@example.net"}, headers=api.mine)
    assert [c["first_name"] for c in r.json()["items"]] == ["New"]


def _ids_for(api: Ctx) -> dict[str, int]:
    w = api.world
    return {"mailing_id": w.mailing_id, "contact_id": w.contacts["cy@example.com"],
            "delivery_id": w.deliveries["cy@example.com"], "audience_id": 0, "endpoint_id": 0}


async def test_other_accounts_key_gets_404_on_every_endpoint(api: Ctx) -> None:
    """Read, change and enumerate account one's resources with account two's key."""
    w = api.world
    ids = _ids_for(api)
    r = await api.http.post("/api/v1/audiences", headers=api.mine, json={"name": "Mine"})
    ids["audience_id"] = r.json()["id"]
    r = await api.http.post("/api/v1/webhooks", headers=api.mine,
                            json={"url": "https://hooks.example/in", "events": ["*"]})
    ids["endpoint_id"] = r.json()["id"]
    bodies: dict[str, Any] = {"reactivate": {"who": "mallory", "why": "x"},
                              "confirm": {"who": "mallory", "why": "x"},
                              "activate": {"trigger": "api"}, "trigger": {"contact_id": 1},
                              "release": {"who": "mallory", "why": "x"},
                              "test-send": {"addresses": ["m@evil.example"]}}
    checked = 0
    for template, operations in api.app.openapi()["paths"].items():
        names = re.findall(r"{(\w+)}", template)
        if not template.startswith("/api/v1/") or not names:
            continue
        path = template.format(**{n: ids[n] for n in names})
        for method in operations:
            body = bodies.get(path.rsplit("/", 1)[-1])
            r = await api.http.request(method, path, headers=api.theirs, json=body)
            assert r.status_code == 404, f"{method} {path} -> {r.status_code} {r.text}"
            assert r.headers["content-type"] == "application/problem+json"
            checked += 1
    assert checked >= 15
    # Query-parameter references to account one's rows.
    for path, params in (("/api/v1/evidence", {"email": "cy@example.com"}),
                         ("/api/v1/contacts", {"audience_id": ids["audience_id"]})):
        r = await api.http.get(path, params=params, headers=api.theirs)
        assert r.status_code == 404, f"{path} {params} -> {r.status_code}"
    # Enumeration: account two's lists never contain account one's rows.
    for path, params in (("/api/v1/contacts", {}), ("/api/v1/audiences", {}), ("/api/v1/webhooks", {}),
                         ("/api/v1/bounces", {"mailing_id": w.mailing_id}),
                         ("/api/v1/contacts", {"email": "cy@example.com"}),
                         ("/api/v1/mailings", {"which": "in_progress"}),
                         ("/api/v1/mailings", {"which": "test"})):
        r = await api.http.get(path, params=params, headers=api.theirs)
        assert r.status_code == 200, r.text
        found = {item.get("id") for item in r.json()["items"]}
        assert not found & {ids["contact_id"], ids["audience_id"], ids["endpoint_id"], w.mailing_id,
                            w.test_mailing_id} - {w.other_contact_id, w.other_mailing_id}, (path, found)
    r = await api.http.get("/api/v1/reports/bounces", params={"since": "2026-05-01"}, headers=api.theirs)
    assert r.json()["total"] == 0
    # Account one's data is unchanged by the attempts.
    r = await api.http.get(f"/api/v1/contacts/{ids['contact_id']}", headers=api.mine)
    assert r.json()["status"] == "active" or r.json()["email_invalid"] is not None
    r = await api.http.get(f"/api/v1/mailings/{w.mailing_id}", headers=api.mine)
    assert r.json()["state"] == "sending"


async def test_segments_export_and_suspected_filtering_decisions(api: Ctx) -> None:
    """Seed 001's bounce filters on the contact list and its CSV export; a held contact is
    confirmed or released by a user; the account's contact policy is read and changed."""
    w = api.world
    with w.engine.begin() as conn:
        for email, cat, reason, held in (("cy@example.com", 2, "userunknown", False),
                                         ("dee@corp.example", 1, "filtered", True),
                                         ("eve@corp.example", 1, "blocked", False)):
            conn.execute(update(contacts).where(contacts.c.email == email).values(
                last_bounce_category=cat, last_bounce_reason=reason, last_bounce_at=T0,
                suspected_filtering=held, consecutive_blocks=1 if cat == 1 else 0))
    r = await api.http.get("/api/v1/contacts", params={"bounce_category": 1}, headers=api.mine)
    assert sorted(c["email"] for c in r.json()["items"]) == ["dee@corp.example", "eve@corp.example"]
    r = await api.http.get("/api/v1/contacts", params={"suspected_filtering": "true"}, headers=api.mine)
    [held] = r.json()["items"]
    assert held["email"] == "dee@corp.example" and held["suspected_filtering"] is True
    assert held["last_bounce_type"] == "hard"
    r = await api.http.get("/api/v1/bounces", headers=api.mine)
    labels = {(b["reason"], b["category"]): (b["bounce_type"], b["address_invalid"]) for b in r.json()["items"]}
    assert labels[("userunknown", 2)] == ("hard", True) and labels[("mailboxfull", 3)] == ("soft", False)
    r = await api.http.get("/api/v1/contacts", params={
        "bounce_reason": "userunknown", "bounced_since": (T0 - timedelta(hours=1)).isoformat(),
        "bounced_until": (T0 + timedelta(hours=1)).isoformat()}, headers=api.mine)
    assert [c["email"] for c in r.json()["items"]] == ["cy@example.com"]
    r = await api.http.get("/api/v1/contacts", params={"bounced_until": "2026-01-01T00:00:00"},
                           headers=api.mine)
    assert r.status_code == 422  # a naive time is refused, not guessed
    # The same window written in another zone selects the same contacts (compared in UTC) ...
    plus5 = timezone(timedelta(hours=5))
    r = await api.http.get("/api/v1/contacts", params={
        "bounce_reason": "userunknown", "bounced_since": (T0 - timedelta(minutes=30)).astimezone(plus5).isoformat(),
        "bounced_until": (T0 + timedelta(minutes=30)).astimezone(plus5).isoformat()}, headers=api.mine)
    assert [c["email"] for c in r.json()["items"]] == ["cy@example.com"]
    # ... and a time that leaves the calendar once in UTC is refused, not sent to the database.
    r = await api.http.get("/api/v1/contacts", params={"bounced_since": "0001-01-01T00:20:56+01:02"},
                           headers=api.mine)
    assert r.status_code == 422 and "out of range" in r.text
    r = await api.http.get("/api/v1/contacts/export.csv", params={"bounce_category": 1}, headers=api.mine)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().splitlines()
    assert lines[0].startswith("email,status,email_invalid,suspected_filtering,last_bounce_at")
    assert sorted(line.split(",")[0] for line in lines[1:]) == ["dee@corp.example", "eve@corp.example"]
    # decisions on the hold
    eve, dee = w.contacts["eve@corp.example"], w.contacts["dee@corp.example"]
    decision = {"who": "alice", "why": "their IT whitelisted us"}
    r = await api.http.post(f"/api/v1/contacts/{eve}/filtering/release", json=decision, headers=api.mine)
    assert r.status_code == 409  # not held
    r = await api.http.post(f"/api/v1/contacts/{dee}/filtering/release", json=decision, headers=api.mine)
    assert r.status_code == 200, r.text
    assert r.json()["contact"]["suspected_filtering"] is False and r.json()["after"] == "active"
    r = await api.http.post(f"/api/v1/contacts/{dee}/filtering/confirm", json=decision, headers=api.mine)
    assert r.status_code == 409  # released already
    # the account's contact policy
    r = await api.http.get("/api/v1/account/policy", headers=api.mine)
    assert r.json() == {"contact_policy": "marketo", "thresholds": {}}
    r = await api.http.put("/api/v1/account/policy", headers=api.mine,
                           json={"contact_policy": "emma", "thresholds": {"max_bounce_rate": 0.11}})
    assert r.json() == {"contact_policy": "emma", "thresholds": {"max_bounce_rate": 0.11}}
    r = await api.http.put("/api/v1/account/policy", headers=api.mine, json={"contact_policy": "strict"})
    assert r.status_code == 422 and "marketo, emma" in r.text
    r = await api.http.get("/api/v1/account/policy", headers=api.theirs)
    assert r.json()["contact_policy"] == "marketo"  # another account is not affected


async def test_automated_mailing_activate_and_trigger(api: Ctx) -> None:
    """A stored automated mailing, activated with the 'api' trigger, sent to one contact."""
    w = api.world
    r = await api.http.post("/api/v1/mailings", headers=api.mine, json={
        "from_address": "news@shop.example", "subject": "Your receipt", "text": "Thanks\n",
        "kind": "automated"})
    assert r.status_code == 201, r.text
    mailing = r.json()["id"]
    ann = w.contacts["ann@example.com"]
    r = await api.http.post(f"/api/v1/mailings/{mailing}/trigger", json={"contact_id": ann}, headers=api.mine)
    assert r.status_code == 409  # not active yet
    r = await api.http.post(f"/api/v1/mailings/{mailing}/activate", json={"trigger": "api"}, headers=api.mine)
    assert r.status_code == 200 and r.json()["trigger"] == "api" and r.json()["state"] == "sending"
    r = await api.http.post(f"/api/v1/mailings/{mailing}/trigger", json={"contact_id": ann}, headers=api.mine)
    assert r.status_code == 201 and r.json()["contact_id"] == ann
    r = await api.http.post(f"/api/v1/mailings/{mailing}/trigger", json={"contact_id": ann}, headers=api.mine)
    assert r.status_code == 409 and "already had" in r.text
    r = await api.http.get("/api/v1/mailings", params={"which": "automated"}, headers=api.mine)
    listed = {m["id"]: m for m in r.json()["items"]}
    assert listed[mailing]["recipients"] == 1
