"""Request time: a tracking request as received (:class:`RawHit`), and its spool record.

The HTTP endpoints verify the token, answer at once, and hand a :class:`RawHit` to the
:class:`~mailcarrier.services.tracking.writer.HitRecorder`; :func:`encode_hit` and
:func:`decode_hit` are its on-disk form in the spool. Only the request headers that the
verdicts use or an analyst would ask for are kept (:func:`stored_headers`), capped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from mailcarrier.domain.errors import InvalidInputError
from mailcarrier.domain.tracking import TokenPurpose, TrackingToken

__all__ = ["STORED_HEADERS", "RawHit", "decode_hit", "encode_hit", "stored_headers"]

#: Request headers kept with each hit: what the verdict used, and what an analyst would ask for.
STORED_HEADERS = ("user-agent", "accept", "accept-language", "purpose", "sec-purpose", "x-purpose",
                  "x-moz", "referer", "via", "from", "x-forwarded-for", "sec-fetch-mode",
                  "sec-fetch-site", "sec-fetch-user")
_MAX_HEADER = 512


# --- request time ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawHit:
    """One request to a tracking URL, as received; ``token`` is None when it did not verify."""

    kind: str  # "open" or "click"
    at: datetime
    method: str
    ip: str
    user_agent: str
    headers: Mapping[str, str]
    token: TrackingToken | None


def stored_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The subset of request headers kept as evidence, each value capped in length."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return {name: lowered[name][:_MAX_HEADER] for name in STORED_HEADERS if name in lowered}


def encode_hit(hit: RawHit) -> bytes:
    """One hit as a spool record: a line of ASCII JSON (newlines inside values are escaped)."""
    token = hit.token
    record = {
        "k": hit.kind, "t": hit.at.isoformat(), "m": hit.method, "ip": hit.ip, "ua": hit.user_agent,
        "h": dict(hit.headers),
        "tok": None if token is None else [token.purpose.value, token.account_id, token.mailing_id,
                                           token.delivery_id, token.link_id, token.expires_at],
    }
    return json.dumps(record, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def decode_hit(record: bytes) -> RawHit:
    """The hit a spool record holds; ValueError (or KeyError/TypeError) if it is not one."""
    data = json.loads(record)
    token = None
    if data["tok"] is not None:
        purpose, account_id, mailing_id, delivery_id, link_id, expires_at = data["tok"]
        token = TrackingToken(TokenPurpose(purpose), int(account_id), int(mailing_id),
                              int(delivery_id), int(link_id), int(expires_at))
    at = datetime.fromisoformat(data["t"])
    if at.tzinfo is None:
        raise InvalidInputError(f"spool record without a time zone: {data['t']!r}")
    return RawHit(kind=str(data["k"]), at=at, method=str(data["m"]), ip=str(data["ip"]),
                  user_agent=str(data["ua"]), headers={str(k): str(v) for k, v in data["h"].items()},
                  token=token)
