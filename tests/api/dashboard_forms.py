"""Test helpers for dashboard forms: read the CSRF token a page gives and log in the way a browser does."""

from __future__ import annotations

import re

import httpx

__all__ = ["csrf_token", "login"]

_TOKEN = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


def csrf_token(html: str) -> str:
    """The CSRF token of the first form on the page."""
    found = _TOKEN.search(html)
    assert found, "no CSRF field in the page's form"
    return found.group(1)


def login(http: httpx.Client, key: str) -> httpx.Response:
    """Open the login form (which sets the CSRF cookie) and submit ``key`` with its token."""
    form = http.get("/dashboard/login")
    return http.post("/dashboard/login", data={"key": key, "csrf_token": csrf_token(form.text)})
