"""Double opt-in over HTTP: subscribe (JSON and form), confirm, bots refused."""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI
from sqlalchemy import Engine, func, select

from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.tables import audience_members, contacts, deliveries, mailings
from mailcarrier.storage.tracking_tables import consent_records, pending_subscriptions
from tests.api.conftest import T0, Clock


async def post_from(app: FastAPI, ip: str, url: str, **kwargs: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://mc.test") as http:
        return await http.post(url, **kwargs)  # type: ignore[arg-type]


def _count(db: Engine, table: object) -> int:
    with db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


async def test_json_subscribe_then_confirm(app: FastAPI, client: httpx.AsyncClient, db: Engine,
                                           clock: Clock, account_id: int) -> None:
    with db.begin() as conn:
        audience = account_repo.create_audience(conn, account_id, "newsletter", T0)
    response = await client.post("/subscribe/acme", json={
        "email": "Ann.Lee@Example.COM", "first_name": "Ann", "audience": "newsletter"},
        headers={"User-Agent": "Firefox"})
    assert response.status_code == 202 and response.json()["status"] == "pending"
    with db.connect() as conn:
        contact = conn.execute(select(contacts)).one()
        sub = conn.execute(select(pending_subscriptions)).one()
        mailing = conn.execute(select(mailings)).one()
        delivery = conn.execute(select(deliveries)).one()
        member = conn.execute(select(audience_members)).one()
    assert (contact.email, contact.status, contact.first_name) == ("ann.lee@example.com", "pending", "Ann")
    assert member.audience_id == audience.id and member.contact_id == contact.id
    assert sub.ip == "198.51.100.7" and sub.confirmation_mailing_id == mailing.id
    # The confirmation goes through the delivery engine: one queued delivery of an automated mailing.
    assert mailing.kind == "automated" and mailing.state == "sending"
    assert (delivery.contact_id, delivery.state, delivery.email) == (contact.id, "queued", contact.email)
    link = re.search(r"http://mc\.test(/confirm/[A-Za-z0-9_-]+)", mailing.text_body)
    assert link and link.group(1) in mailing.html_body
    # Fetching the link (a scanner, or the person) only shows the button.
    clock.advance(minutes=5)
    shown = await client.get(link.group(1))
    assert shown.status_code == 200 and 'method="post"' in shown.text and "a******@example.com" in shown.text
    with db.connect() as conn:
        assert conn.execute(select(contacts.c.status)).scalar_one() == "pending"
    done = await post_from(app, "192.0.2.44", link.group(1))
    assert done.status_code == 200 and "confirmed" in done.text
    with db.connect() as conn:
        contact = conn.execute(select(contacts)).one()
        actions = conn.execute(select(consent_records.c.action, consent_records.c.ip)
                               .order_by(consent_records.c.id)).all()
    assert (contact.status, contact.consent_source, contact.consent_ip) == ("active", "double_opt_in", "192.0.2.44")
    assert contact.consent_at == clock.now
    assert [tuple(a) for a in actions] == [("subscribe_requested", "198.51.100.7"), ("confirmed", "192.0.2.44")]
    again = await client.post(link.group(1))
    assert again.status_code == 200 and _count(db, consent_records) == 2


async def test_form_subscribe_and_existing_active_contact(client: httpx.AsyncClient, db: Engine) -> None:
    form = await client.get("/subscribe/acme?audience=news")
    assert form.status_code == 200 and 'name="website"' in form.text and 'value="news"' in form.text
    posted = await client.post("/subscribe/acme", data={"email": "bob@example.com"})
    assert posted.status_code == 202 and "Check your inbox" in posted.text
    with db.begin() as conn:
        conn.execute(contacts.update().values(status="active"))
    same = await client.post("/subscribe/acme", data={"email": "bob@example.com"})
    assert same.status_code == 202 and "Check your inbox" in same.text  # no enumeration
    assert _count(db, pending_subscriptions) == 1 and _count(db, mailings) == 1


async def test_bots_refused(app: FastAPI, client: httpx.AsyncClient, db: Engine) -> None:
    trap = await client.post("/subscribe/acme", data={"email": "bot@example.com", "website": "http://spam"})
    assert trap.status_code == 400 and trap.headers["content-type"] == "application/problem+json"
    assert _count(db, contacts) == 0
    for i in range(4):  # the honeypot hit counted as the first of five
        ok = await post_from(app, "198.51.100.7", "/subscribe/acme", json={"email": f"p{i}@example.com"})
        assert ok.status_code == 202
    limited = await post_from(app, "198.51.100.7", "/subscribe/acme", json={"email": "p9@example.com"})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    other = await post_from(app, "203.0.113.5", "/subscribe/acme", json={"email": "p9@example.com"})
    assert other.status_code == 202
    assert _count(db, contacts) == 5


async def test_bad_input_and_expired_link(app: FastAPI, client: httpx.AsyncClient, db: Engine,
                                          clock: Clock) -> None:
    ips = (f"192.0.2.{i}" for i in range(1, 200))  # a fresh address each time: no rate limit
    for body in ({"email": "not an address"}, {"email": ""}, {"email": ["a@b.example"]}, ["x"]):
        response = await post_from(app, next(ips), "/subscribe/acme", json=body)
        assert response.status_code == 422, body
    bad_json = await post_from(app, next(ips), "/subscribe/acme", content=b"{nope",
                               headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400
    plain = await post_from(app, next(ips), "/subscribe/acme", content=b"x",
                            headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415
    unknown = await post_from(app, next(ips), "/subscribe/nobody", json={"email": "a@example.com"})
    assert unknown.status_code == 404
    assert _count(db, contacts) == 0
    await post_from(app, next(ips), "/subscribe/acme", json={"email": "late@example.com"})
    with db.connect() as conn:
        body = conn.execute(select(mailings.c.text_body)).scalar_one()
    link = re.search(r"http://mc\.test(/confirm/[A-Za-z0-9_-]+)", body)
    assert link
    clock.advance(hours=48, seconds=1)
    assert (await client.get(link.group(1))).status_code == 404
    assert (await client.post(link.group(1))).status_code == 404
    assert (await client.post(link.group(1)[:-2] + "xx")).status_code == 404
    with db.connect() as conn:
        assert conn.execute(select(contacts.c.status)).scalar_one() == "pending"
