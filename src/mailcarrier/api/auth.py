"""API-key authentication and scope checks, as FastAPI dependencies.

Clients send ``Authorization: Bearer mc_<prefix>_<secret>`` (or ``X-API-Key``). The key is
looked up by prefix and its SHA-256 compared in constant time (``storage.api_keys``). Every
resource route declares the scopes it needs with :func:`require_scopes`; the returned
:class:`Principal` carries the account id that every query must filter by.

Scopes are ``<resource>:read`` / ``<resource>:write``; ``<resource>:*`` grants both and
``*`` grants everything. A ``write`` scope implies ``read`` on the same resource.

A verified key is remembered per application for ``KEY_CACHE_SECONDS`` of the app's clock
(by the hash of the presented key, never the key itself), so a burst of API calls does not
cost one database round trip each; a revocation therefore takes effect within that time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import Depends, Request

from mailcarrier.api.context import AppContext, app_context
from mailcarrier.api.problems import ProblemError
from mailcarrier.storage.api_keys import ApiKey, authenticate_key, hash_key
from mailcarrier.storage.engine import write_transaction

__all__ = ["KEY_CACHE_SECONDS", "Principal", "has_scope", "require_scopes"]

KEY_CACHE_SECONDS = 5
_KEY_CACHE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    account_id: int
    key_id: int
    key_prefix: str
    scopes: frozenset[str]


def has_scope(granted: frozenset[str], needed: str) -> bool:
    """Whether ``granted`` covers ``needed`` (see the module docstring for the rules)."""
    if "*" in granted or needed in granted:
        return True
    resource, _, action = needed.partition(":")
    if f"{resource}:*" in granted:
        return True
    return action == "read" and f"{resource}:write" in granted


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    return request.headers.get("x-api-key") or None


def require_scopes(*scopes: str) -> Callable[..., Principal]:
    """A dependency that authenticates the caller and checks it holds every scope given."""

    def dependency(request: Request, context: AppContext = Depends(app_context)) -> Principal:
        presented = _presented_key(request)
        challenge = {"WWW-Authenticate": 'Bearer realm="mailcarrier"'}
        if presented is None:
            raise ProblemError(401, "an API key is required (Authorization: Bearer <key>)",
                               headers=challenge)
        key = _verified_key(request, context, presented)
        if key is None:
            raise ProblemError(401, "the API key is unknown, malformed or revoked", headers=challenge)
        missing = [s for s in scopes if not has_scope(key.scopes, s)]
        if missing:
            raise ProblemError(403, f"the API key lacks scope(s): {', '.join(missing)}",
                               missing_scopes=missing)
        return Principal(key.account_id, key.id, key.prefix, key.scopes)

    return dependency


def _verified_key(request: Request, context: AppContext, presented: str) -> ApiKey | None:
    """The key behind ``presented``, from the short-lived cache or the store."""
    now = context.clock()
    cache: dict[str, tuple[ApiKey, datetime]] = request.app.state.__dict__.setdefault(
        "verified_keys", {})
    digest = hash_key(presented)
    hit = cache.get(digest)
    if hit is not None and timedelta(0) <= now - hit[1] < timedelta(seconds=KEY_CACHE_SECONDS):
        return hit[0]
    with write_transaction(context.engine) as conn:
        key = authenticate_key(conn, presented, now)
    if key is None:
        cache.pop(digest, None)
        return None
    if len(cache) >= _KEY_CACHE_LIMIT:
        cache.clear()
    cache[digest] = (key, now)
    return key
