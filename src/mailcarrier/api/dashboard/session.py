"""Dashboard sessions: a signed cookie naming the account and the API key that logged in.

The cookie is ``<account>.<key id>.<expiry>.<HMAC-SHA256>``, signed with a key derived from
the master secret. Every request re-checks that the key still exists and is not revoked,
so revoking a key logs its dashboard sessions out.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, select

from mailcarrier.storage.tables import api_keys

__all__ = ["COOKIE", "Session", "load_session", "sign_session"]

COOKIE = "mc_dashboard"
LIFETIME = timedelta(hours=12)


@dataclass(frozen=True, slots=True)
class Session:
    account_id: int
    key_id: int
    expires: int
    #: The key's scopes, read on every request: pages that change data check them.
    scopes: frozenset[str] = frozenset()
    #: The key's name, shown as who did an audited action (e.g. a reactivation).
    key_name: str = ""


def _mac(secret: bytes, payload: str) -> str:
    key = hmac.new(secret, b"dashboard-session", hashlib.sha256).digest()
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def sign_session(secret: bytes, account_id: int, key_id: int, now: datetime) -> str:
    payload = f"{account_id}.{key_id}.{int((now + LIFETIME).timestamp())}"
    return f"{payload}.{_mac(secret, payload)}"


def load_session(conn: Connection, secret: bytes, cookie: str | None, now: datetime) -> Session | None:
    """The session in ``cookie`` if well-signed, unexpired and its key still live; else None."""
    if not cookie or len(cookie) > 200:
        return None
    payload, _, mac = cookie.rpartition(".")
    parts = payload.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    if not hmac.compare_digest(_mac(secret, payload), mac):
        return None
    account_id, key_id, expires = (int(p) for p in parts)
    if expires < now.timestamp():
        return None
    row = conn.execute(select(api_keys.c.revoked_at, api_keys.c.scopes, api_keys.c.name).where(
        api_keys.c.id == key_id, api_keys.c.account_id == account_id)).one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    return Session(account_id, key_id, expires, frozenset(str(s) for s in (row.scopes or ())), row.name)
