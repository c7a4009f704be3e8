"""Dashboard hardening: security headers on every response and a CSRF token on every form.

Issue 17: the dashboard had no CSP, framing or sniffing protection, and its login and
logout forms could be submitted from any site.
"""

from __future__ import annotations

import re

import httpx
from sqlalchemy import Engine

from mailcarrier.api.dashboard.security import CSRF_COOKIE, SECURITY_HEADERS
from mailcarrier.storage.api_keys import create_api_key
from tests.api.conftest import T0

_TOKEN = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


def _key(db: Engine, account_id: int) -> str:
    with db.begin() as conn:
        return create_api_key(conn, account_id, "dash", ["reports:read"], T0)[1]


def _token(html: str) -> str:
    found = _TOKEN.findall(html)
    assert found, "no CSRF field in the form"
    return str(found[0])


def _assert_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_every_dashboard_response_carries_security_headers(client: httpx.AsyncClient, db: Engine,
                                                                 account_id: int) -> None:
    login = await client.get("/dashboard/login")
    assert login.status_code == 200
    _assert_headers(login)
    redirect = await client.get("/dashboard/")
    assert redirect.status_code == 303
    _assert_headers(redirect)
    response = await client.post("/dashboard/login", data={"key": _key(db, account_id),
                                                           "csrf_token": _token(login.text)})
    assert response.status_code == 303
    _assert_headers(response)
    page = await client.get("/dashboard/")
    assert page.status_code == 200
    _assert_headers(page)
    assert (await client.get("/dashboard/mailings/999")).status_code == 404
    _assert_headers(await client.get("/dashboard/mailings/999"))
    # The API is not a page: no dashboard cookie there.
    assert CSRF_COOKIE not in (await client.get("/health")).headers.get("set-cookie", "")


async def test_login_requires_the_csrf_token_of_this_browser(client: httpx.AsyncClient, db: Engine,
                                                            account_id: int) -> None:
    key = _key(db, account_id)
    form = await client.get("/dashboard/login")
    token = _token(form.text)
    assert client.cookies.get(CSRF_COOKIE)
    # A cross-site form post carries the victim's cookie but cannot know the token.
    refused = await client.post("/dashboard/login", data={"key": key})
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    assert "mc_dashboard" not in refused.headers.get("set-cookie", "")
    wrong = await client.post("/dashboard/login", data={"key": key, "csrf_token": "0" * 64})
    assert wrong.status_code == 403
    # A token copied from another browser (another cookie) does not fit this cookie.
    async with httpx.AsyncClient(transport=client._transport, base_url="http://mc.test") as other:
        other_token = _token((await other.get("/dashboard/login")).text)
    assert other_token != token
    assert (await client.post("/dashboard/login", data={"key": key, "csrf_token": other_token})).status_code == 403
    ok = await client.post("/dashboard/login", data={"key": key, "csrf_token": token})
    assert ok.status_code == 303 and ok.headers["location"] == "/dashboard/"


async def test_every_form_on_a_page_carries_the_token_and_logout_checks_it(
        client: httpx.AsyncClient, db: Engine, account_id: int) -> None:
    login = await client.get("/dashboard/login")
    await client.post("/dashboard/login", data={"key": _key(db, account_id), "csrf_token": _token(login.text)})
    page = await client.get("/dashboard/")
    token = _token(page.text)
    for form in re.findall(r"<form[^>]*>.*?</form>", page.text, flags=re.S):
        if 'method="post"' in form:
            assert f'value="{token}"' in form, form
    assert (await client.post("/dashboard/logout")).status_code == 403
    assert (await client.get("/dashboard/")).status_code == 200, "a forged logout must not log out"
    out = await client.post("/dashboard/logout", headers={"X-CSRF-Token": token})
    assert out.status_code == 303


async def test_every_state_changing_dashboard_route_refuses_a_missing_token(
        client: httpx.AsyncClient, db: Engine, account_id: int) -> None:
    """Pages added later (contacts, audiences, mailings) inherit the check from the dashboard router."""
    login = await client.get("/dashboard/login")
    await client.post("/dashboard/login", data={"key": _key(db, account_id), "csrf_token": _token(login.text)})
    paths = ["/dashboard/audiences", "/dashboard/imports", "/dashboard/mailings", "/dashboard/mailings/1/check",
             "/dashboard/mailings/1/test-send", "/dashboard/mailings/1/pause", "/dashboard/contacts/1/reactivate",
             "/dashboard/logout"]
    for path in paths:
        r = await client.post(path, data={"name": "x"})
        assert r.status_code == 403, (path, r.status_code)
        assert "CSRF" in r.json()["detail"]
