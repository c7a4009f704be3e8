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

Authentication only reads. A key's ``last_used_at`` is written at most once a minute per key,
by :class:`KeyUses` in a thread of its own after the request was answered, so an API read
never waits on (or fails for) the write lock that workers and imports hold.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from mailcarrier.api.context import AppContext, app_context
from mailcarrier.api.problems import ProblemError
from mailcarrier.domain.scopes import Scope, grants
from mailcarrier.storage.api_keys import (
    LAST_USED_RESOLUTION,
    ApiKey,
    authenticate_key,
    hash_key,
    record_key_uses,
)
from mailcarrier.storage.engine import run_write

__all__ = ["KEY_CACHE_SECONDS", "KeyUses", "Principal", "has_scope", "key_uses", "require_scopes"]

_log = logging.getLogger("mailcarrier.api")

KEY_CACHE_SECONDS = 5
# Declared for the OpenAPI document only (so /docs offers "Authorize" and sends the key with
# "Try it out"): the key is read from the request by _presented_key, whichever way it came.
_BEARER_SCHEME = HTTPBearer(auto_error=False, scheme_name="bearer", bearerFormat="mc_<prefix>_<secret>",
                            description="An API key: `mailcarrier accounts keys create ACCOUNT --name ...`")
_HEADER_SCHEME = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKey",
                              description="The same API key, in the X-API-Key header instead.")
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
    return grants(granted, Scope(needed))


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    return request.headers.get("x-api-key") or None


def require_scopes(*scopes: str) -> Callable[..., Principal]:
    """A dependency that authenticates the caller and checks it holds every scope given.

    The names are checked here, when the route is declared: a misspelt scope fails at start-up
    (ValueError) instead of locking every key out of the route.
    """
    needed = [Scope(s) for s in scopes]

    def dependency(request: Request, context: AppContext = Depends(app_context),
                   _bearer: HTTPAuthorizationCredentials | None = Security(_BEARER_SCHEME),
                   _header: str | None = Security(_HEADER_SCHEME)) -> Principal:
        presented = _presented_key(request)
        challenge = {"WWW-Authenticate": 'Bearer realm="mailcarrier"'}
        if presented is None:
            raise ProblemError(401, "an API key is required (Authorization: Bearer <key>)",
                               headers=challenge)
        key = _verified_key(request, context, presented)
        if key is None:
            raise ProblemError(401, "the API key is unknown, malformed or revoked", headers=challenge)
        missing = [s.value for s in needed if not grants(key.scopes, s)]
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
    with context.engine.connect() as conn:  # reads only: a GET never writes in its request
        key = authenticate_key(conn, presented, now)
    if key is None:
        cache.pop(digest, None)
        return None
    key_uses(request, context).note(key, now)
    if len(cache) >= _KEY_CACHE_LIMIT:
        cache.clear()
    cache[digest] = (key, now)
    return key


class KeyUses:
    """Last uses of API keys, written in the background at most once a minute per key.

    :meth:`note` only remembers; a single flusher thread (started when there is something
    to write and none runs) writes everything noted so far in one ``run_write`` unit. A
    write that still fails after its retries is logged and dropped: ``last_used_at`` is a
    hint for operators, never worth failing or delaying a request.
    """

    def __init__(self, engine: Engine, *, resolution: timedelta = LAST_USED_RESOLUTION,
                 limit: int = 10_000) -> None:
        self.engine, self.resolution, self._limit = engine, resolution, limit
        self._pending: dict[int, datetime] = {}
        self._noted: dict[int, datetime] = {}
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None

    def note(self, key: ApiKey, now: datetime) -> None:
        """Remember that ``key`` was used at ``now``; a write is queued at most once per resolution."""
        with self._lock:
            last = self._noted.get(key.id, key.last_used_at)
            if last is not None and timedelta(0) <= now - last < self.resolution:
                return
            if len(self._noted) >= self._limit:
                self._noted.clear()
            self._noted[key.id] = now
            self._pending[key.id] = now
            if self._flusher is not None:  # running: it takes this one before it stops
                return
            self._flusher = threading.Thread(target=self._drain, name="api-key-uses", daemon=True)
            self._flusher.start()

    def _drain(self) -> None:
        while True:
            self.flush()
            with self._lock:
                if not self._pending:
                    self._flusher = None
                    return

    def flush(self) -> int:
        """Write what was noted and not written yet; returns how many keys that was."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return 0
        try:
            run_write(self.engine, lambda conn: record_key_uses(conn, batch), what="recording API key uses")
        except SQLAlchemyError as error:
            _log.warning("could not record the last use of %d API key(s): %s", len(batch), error,
                         extra={"event": "api.key_use_dropped"})
        return len(batch)

    def wait(self, timeout: float | None = None) -> None:
        """Until the background flusher (if any) is done (tests, shutdown)."""
        with self._lock:
            flusher = self._flusher
        if flusher is not None:
            flusher.join(timeout)


def key_uses(request: Request, context: AppContext) -> KeyUses:
    """The application's :class:`KeyUses` (made on first use)."""
    found: KeyUses | None = getattr(request.app.state, "key_uses", None)
    if found is None:
        found = KeyUses(context.engine)
        request.app.state.key_uses = found
    return found
