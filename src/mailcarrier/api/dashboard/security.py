"""Dashboard response headers and CSRF tokens.

Every response under ``/dashboard`` carries a strict Content-Security-Policy (no scripts,
no framing), ``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff`` and
``Referrer-Policy: no-referrer``, so a page cannot be framed for clickjacking and a
URL in it (evidence searches name recipients) does not leak to other sites.

CSRF uses a signed double-submit token: a random ``mc_csrf`` cookie (set on the first
dashboard response that lacks one, anonymous visitors included, so the login form is
covered too) and, in every form, the HMAC of that cookie under the master secret. A
cross-site page can neither read the cookie nor compute the HMAC. To protect a new form,
write ``{{ csrf_field() }}`` inside it; every POST/PUT/PATCH/DELETE route of the
dashboard router is checked by :func:`require_csrf` (a router-wide dependency), so there
is nothing else to wire. Scripts may send the token in an ``X-CSRF-Token`` header instead.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from contextvars import ContextVar
from http.cookies import SimpleCookie

from fastapi import Request
from markupsafe import Markup
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailcarrier.api.problems import ProblemError

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "CSRF_HEADER", "SECURITY_HEADERS", "DashboardSecurity",
           "csrf_field", "csrf_token_for", "require_csrf"]

CSRF_COOKIE = "mc_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
PREFIX = "/dashboard"
#: Scripts, styles and fetches only from the dashboard itself (its one stylesheet and one script,
#: shipped in the package); inline styles for mailing previews (a sandboxed iframe). Charts are
#: inline SVG.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_COOKIE_LENGTH = 43  # secrets.token_urlsafe(32)
_current_token: ContextVar[str | None] = ContextVar("dashboard_csrf_token", default=None)


def csrf_token_for(secret: bytes, cookie: str) -> str:
    """The form token matching ``cookie``: an HMAC under a key derived from the master secret."""
    key = hmac.new(secret, b"dashboard-csrf", hashlib.sha256).digest()
    return hmac.new(key, cookie.encode("ascii"), hashlib.sha256).hexdigest()


def _cookie_value(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:
                continue
            morsel = jar.get(CSRF_COOKIE)
            if morsel is not None:
                found = morsel.value
                if len(found) == _COOKIE_LENGTH and all(c.isalnum() or c in "-_" for c in found):
                    return found
    return None


class DashboardSecurity:
    """ASGI middleware: security headers and the CSRF cookie/token for ``/dashboard`` paths."""

    def __init__(self, app: ASGIApp, secret: Callable[[], bytes]) -> None:
        self.app = app
        self._secret_source = secret
        self._secret: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        if self._secret is None:
            self._secret = self._secret_source()
        cookie = _cookie_value(scope)
        new_cookie = None
        if cookie is None:
            cookie = new_cookie = secrets.token_urlsafe(32)
        token = csrf_token_for(self._secret, cookie)
        scope.setdefault("state", {})["csrf_token"] = token
        secure = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if new_cookie is not None:
                    headers.append("set-cookie", f"{CSRF_COOKIE}={new_cookie}; Path={PREFIX}; HttpOnly; "
                                                 f"SameSite=Strict{'; Secure' if secure else ''}")
            await send(message)

        reset = _current_token.set(token)
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            _current_token.reset(reset)


def csrf_field() -> Markup:
    """The hidden input carrying the current request's CSRF token (a Jinja global of the dashboard)."""
    token = _current_token.get()
    if token is None:
        raise RuntimeError("csrf_field() used outside a dashboard request (is DashboardSecurity installed?)")
    return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, token)


async def require_csrf(request: Request) -> None:
    """Refuse a state-changing dashboard request whose token does not match its cookie."""
    if request.method in _SAFE_METHODS:
        return
    expected = getattr(request.state, "csrf_token", None)
    sent: object = request.headers.get(CSRF_HEADER)
    if sent is None:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            sent = (await request.form()).get(CSRF_FIELD)
    if not isinstance(expected, str) or not isinstance(sent, str) \
            or not hmac.compare_digest(expected.encode(), sent.encode("utf-8", "replace")):
        raise ProblemError(403, "the form's CSRF token is missing or does not match this browser's "
                                "session; reload the page and submit it again")
