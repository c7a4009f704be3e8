"""Signed VERP return-paths: one bounce address per message.

A bounce arriving at ``b-<account>.<mailing>.<delivery>.<signature>@<bounce domain>``
(ids in base 36)
names exactly which delivery failed, even when the bounce itself is unreadable.
The HMAC signature (keyed by the installation secret, passed in) stops anyone
from crafting return-paths that would mark other people's contacts as bounced.

The local part uses only lowercase letters, digits, ``-`` and ``.`` and is
compared case-insensitively, because some relays lowercase addresses.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

__all__ = ["VerpAddress", "decode_return_path", "encode_return_path"]

_PREFIX = "b-"
#: 80 bits of HMAC-SHA256 are plenty against forgery and keep the local part short.
_SIGNATURE_BYTES = 10
_MAX_LOCAL_PART = 64  # RFC 5321 section 4.5.3.1.1


@dataclass(frozen=True, slots=True)
class VerpAddress:
    """What a return-path identifies."""

    account_id: int
    mailing_id: int
    delivery_id: int


def _signature(key: bytes, payload: str) -> str:
    digest = hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()[:_SIGNATURE_BYTES]
    return base64.b32encode(digest).decode("ascii").lower()


_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(value: int) -> str:
    """Ids in base 36 keep three 63-bit ids plus the signature within 64 characters."""
    text = ""
    while True:
        value, digit = divmod(value, 36)
        text = _DIGITS[digit] + text
        if not value:
            return text


def _payload(address: VerpAddress) -> str:
    return ".".join(_base36(v) for v in (address.account_id, address.mailing_id, address.delivery_id))


def encode_return_path(address: VerpAddress, *, key: bytes, bounce_domain: str) -> str:
    """Build the signed return-path for one delivery.

    Raises ValueError when an id is negative, the key is empty, or the
    domain is missing, because such an address could never be decoded.
    """
    if not key:
        raise ValueError("VERP signing key is empty; set a secret key")
    if not bounce_domain or "@" in bounce_domain:
        raise ValueError(f"invalid bounce domain {bounce_domain!r}")
    if min(address.account_id, address.mailing_id, address.delivery_id) < 0:
        raise ValueError(f"VERP ids must be non-negative: {address}")
    payload = _payload(address)
    local = f"{_PREFIX}{payload}.{_signature(key, payload)}"
    if len(local) > _MAX_LOCAL_PART:
        raise ValueError(f"VERP local part too long ({len(local)} > {_MAX_LOCAL_PART})")
    return f"{local}@{bounce_domain.lower()}"


def _parse_id(text: str) -> int | None:
    """Only the canonical base-36 spelling is accepted, so each id has one address."""
    if not text or len(text) > 13 or any(c not in _DIGITS for c in text):
        return None
    value = int(text, 36)
    return value if _base36(value) == text else None


def decode_return_path(return_path: str, *, key: bytes) -> VerpAddress | None:
    """Read a return-path back; None unless it is one of ours with a valid signature.

    Forged, altered, truncated or foreign addresses all give None: a bounce
    to such an address is simply not attributable, never an error.
    """
    local, at, _domain = return_path.strip().strip("<>").rpartition("@")
    if not at or not key:
        return None
    local = local.lower()
    if not local.startswith(_PREFIX):
        return None
    parts = local[len(_PREFIX):].split(".")
    if len(parts) != 4:
        return None
    ids = [_parse_id(part) for part in parts[:3]]
    if any(value is None for value in ids):
        return None
    address = VerpAddress(*(value for value in ids if value is not None))
    if not hmac.compare_digest(parts[3], _signature(key, _payload(address))):
        return None
    return address
