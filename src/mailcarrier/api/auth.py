"""API-key authentication and scope checks, as FastAPI dependencies.

Clients send ``Authorization: Bearer mc_<prefix>_<secret>`` (or ``X-API-Key``). The key is
looked up by prefix and its SHA-256 compared in constant time (``storage.api_keys``). Every
resource route declares the scopes it needs with :func:`require_scopes`; the returned
:class:`Principal` carries the account id that every query must filter by.

Scopes are ``<resource>:read`` / ``<resource>:write``; ``<resource>:*`` grants both and
``*`` grants everything. A ``write`` scope implies ``read`` on the same resource.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, Request

from mailcarrier.api.context import AppContext, app_context
from mailcarrier.api.problems import ProblemError
from mailcarrier.storage.api_keys import authenticate_key

__all__ = ["Principal", "has_scope", "require_scopes"]


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
        with context.engine.begin() as conn:
            key = authenticate_key(conn, presented, context.clock())
        if key is None:
            raise ProblemError(401, "the API key is unknown, malformed or revoked", headers=challenge)
        missing = [s for s in scopes if not has_scope(key.scopes, s)]
        if missing:
            raise ProblemError(403, f"the API key lacks scope(s): {', '.join(missing)}",
                               missing_scopes=missing)
        return Principal(key.account_id, key.id, key.prefix, key.scopes)

    return dependency
