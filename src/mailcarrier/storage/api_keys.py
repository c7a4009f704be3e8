"""API keys: issued once in clear text, stored only as a SHA-256 hash.

A key looks like ``mc_<prefix>_<secret>``. The prefix is stored in clear and indexed so
that a request costs one lookup by prefix; the whole key is then hashed and compared in
constant time. The secret has 256 bits of entropy, so a plain (unsalted, fast) hash is
enough: nobody can brute-force it, unlike a password.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, or_, select, update

from mailcarrier.domain.errors import InvalidInputError, NotFoundError
from mailcarrier.domain.scopes import parse_scopes
from mailcarrier.storage.tables import api_keys

__all__ = [
    "KEY_SCHEME",
    "LAST_USED_RESOLUTION",
    "ApiKey",
    "authenticate_key",
    "create_api_key",
    "hash_key",
    "list_api_keys",
    "record_key_uses",
    "revoke_api_key",
]

KEY_SCHEME = "mc"
_PREFIX_BYTES = 6  # 12 hex characters: collisions are retried at creation
#: ``last_used_at`` is written at most this often per key, so authentication is not a write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key (never its secret)."""

    id: int
    account_id: int
    name: str
    prefix: str
    scopes: frozenset[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def hash_key(plain: str) -> str:
    """Hex SHA-256 of the whole key text."""
    return hashlib.sha256(plain.encode("utf-8")).hexdigest()


def _parse(plain: str) -> str | None:
    """The prefix of a well-formed key, else None."""
    parts = plain.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME or len(parts[1]) != _PREFIX_BYTES * 2:
        return None
    if not parts[2] or len(plain) > 200:
        return None
    return parts[1]


def _row_to_key(row: object) -> ApiKey:
    return ApiKey(
        id=row.id,  # type: ignore[attr-defined]
        account_id=row.account_id,  # type: ignore[attr-defined]
        name=row.name,  # type: ignore[attr-defined]
        prefix=row.prefix,  # type: ignore[attr-defined]
        scopes=frozenset(row.scopes or ()),  # type: ignore[attr-defined]
        created_at=row.created_at,  # type: ignore[attr-defined]
        last_used_at=row.last_used_at,  # type: ignore[attr-defined]
        revoked_at=row.revoked_at,  # type: ignore[attr-defined]
    )


def create_api_key(conn: Connection, account_id: int, name: str, scopes: Iterable[str],
                   now: datetime) -> tuple[ApiKey, str]:
    """Issue a key; returns the stored record and the clear key (shown once, never stored).

    Unknown scope names are refused (:class:`~mailcarrier.domain.scopes.UnknownScopeError`).
    """
    scope_list = sorted(s.value for s in parse_scopes(scopes))
    if not scope_list:
        raise InvalidInputError("an API key needs at least one scope")
    if not name.strip():
        raise InvalidInputError("an API key needs a name")
    for _ in range(10):
        prefix = secrets.token_hex(_PREFIX_BYTES)
        taken = conn.execute(select(api_keys.c.id).where(api_keys.c.prefix == prefix)).first()
        if taken is None:
            break
    else:  # pragma: no cover - 48 random bits colliding ten times in a row
        raise RuntimeError("could not draw a free API key prefix")
    plain = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    result = conn.execute(api_keys.insert().values(
        account_id=account_id, name=name.strip(), prefix=prefix, key_hash=hash_key(plain),
        scopes=scope_list, created_at=now))
    assert result.inserted_primary_key is not None
    key = ApiKey(int(result.inserted_primary_key[0]), account_id, name.strip(), prefix,
                 frozenset(scope_list), now, None, None)
    return key, plain


def authenticate_key(conn: Connection, plain: str, now: datetime) -> ApiKey | None:
    """The live key matching ``plain``, or None (unknown, malformed, wrong secret or revoked)."""
    prefix = _parse(plain)
    if prefix is None:
        return None
    row = conn.execute(select(api_keys).where(api_keys.c.prefix == prefix)).one_or_none()
    if row is None:
        # Hash anyway so unknown and wrong keys take the same time.
        hmac.compare_digest(hash_key(plain), "0" * 64)
        return None
    if not hmac.compare_digest(hash_key(plain), row.key_hash) or row.revoked_at is not None:
        return None
    return _row_to_key(row)


def record_key_uses(conn: Connection, uses: Mapping[int, datetime]) -> int:
    """Set ``last_used_at`` of each key id to its time, never moving it back; returns rows changed.

    Authentication only reads (:func:`authenticate_key`): the API batches these writes
    (``api.auth.KeyUses``) so that a request never waits on the write lock.
    """
    changed = 0
    for key_id, used_at in sorted(uses.items()):
        changed += conn.execute(update(api_keys).where(
            api_keys.c.id == key_id,
            or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < used_at),
        ).values(last_used_at=used_at)).rowcount
    return changed


def list_api_keys(conn: Connection, account_id: int) -> list[ApiKey]:
    rows = conn.execute(select(api_keys).where(api_keys.c.account_id == account_id)
                        .order_by(api_keys.c.id))
    return [_row_to_key(r) for r in rows]


def revoke_api_key(conn: Connection, account_id: int, prefix: str, now: datetime) -> None:
    """Revoke a key of the account (idempotent); NotFoundError if it is not the account's."""
    found = conn.execute(select(api_keys.c.id).where(api_keys.c.account_id == account_id,
                                                     api_keys.c.prefix == prefix)).first()
    if found is None:
        raise NotFoundError(f"no API key {prefix!r} in this account")
    conn.execute(update(api_keys).where(api_keys.c.id == found.id, api_keys.c.revoked_at.is_(None))
                 .values(revoked_at=now))
