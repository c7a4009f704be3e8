"""Signed tracking tokens for opens, clicks, unsubscribes and opt-in confirmation.

A token carries ids only (never a URL), so a link cannot be turned into an
open redirect: the destination is looked up from the link table by id.
Each purpose has its own key, derived from the master secret, so a leaked
open token can never be replayed as an unsubscribe.  The key id travels in
the token so secrets can be rotated while old messages still resolve.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["TokenPurpose", "TrackingToken", "decode_token", "derive_key", "encode_token"]

#: 96 bits of HMAC-SHA256: forgery is out of reach and URLs stay short.
_MAC_BYTES = 12
#: version, key id, purpose, account, mailing, delivery, link, expiry (0 = never)
_LAYOUT = struct.Struct(">BBBQQQQQ")
_VERSION = 1


class TokenPurpose(StrEnum):
    """What a token may be used for; each purpose is signed with its own key."""

    OPEN = "open"
    CLICK = "click"
    UNSUBSCRIBE = "unsubscribe"
    CONFIRM = "confirm"


_PURPOSE_CODES = {purpose: index for index, purpose in enumerate(TokenPurpose, start=1)}
_CODE_PURPOSES = {index: purpose for purpose, index in _PURPOSE_CODES.items()}


@dataclass(frozen=True, slots=True)
class TrackingToken:
    """The ids a token stands for; ``link_id`` is 0 when not a click."""

    purpose: TokenPurpose
    account_id: int
    mailing_id: int
    delivery_id: int
    link_id: int = 0
    expires_at: int = 0  # unix seconds; 0 means the token never expires


def derive_key(master_secret: bytes, purpose: TokenPurpose, key_id: int) -> bytes:
    """Derive one purpose's key so that keys are independent of each other."""
    label = f"mailcarrier-tracking/{purpose.value}/{key_id}".encode("ascii")
    return hmac.new(master_secret, label, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def encode_token(token: TrackingToken, *, master_secret: bytes, key_id: int) -> str:
    """Serialise and sign a token with the given key id (0..255)."""
    body = _LAYOUT.pack(
        _VERSION,
        key_id,
        _PURPOSE_CODES[token.purpose],
        token.account_id,
        token.mailing_id,
        token.delivery_id,
        token.link_id,
        token.expires_at,
    )
    mac = hmac.new(derive_key(master_secret, token.purpose, key_id), body, hashlib.sha256).digest()
    return _b64(body + mac[:_MAC_BYTES])


def decode_token(
    text: str,
    *,
    secrets: Mapping[int, bytes],
    purpose: TokenPurpose,
    now: int,
) -> TrackingToken | None:
    """Return the token's ids, or None if it is forged, altered, expired or of another purpose.

    ``secrets`` maps key ids to master secrets, so retired keys keep working
    for as long as the operator keeps them listed.
    """
    if not text or len(text) > 200 or not text.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        return None
    if len(raw) != _LAYOUT.size + _MAC_BYTES or _b64(raw) != text:
        return None
    body, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
    version, key_id, code, account, mailing, delivery, link, expires = _LAYOUT.unpack(body)
    secret = secrets.get(key_id)
    if version != _VERSION or secret is None or _CODE_PURPOSES.get(code) is not purpose:
        return None
    expected = hmac.new(derive_key(secret, purpose, key_id), body, hashlib.sha256).digest()
    if not hmac.compare_digest(expected[:_MAC_BYTES], mac):
        return None
    if expires and now >= expires:
        return None
    return TrackingToken(purpose, account, mailing, delivery, link, expires)
