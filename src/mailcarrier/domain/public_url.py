"""Can recipients reach the links we put in their mail? (the ``public_url`` setting)

Unsubscribe links, the List-Unsubscribe header, tracked links and the open pixel all start
with ``public_url``. Left at its default (``http://127.0.0.1:8025``) or set to a name that
only resolves inside the sender's network, every unsubscribe link in a real mailing is
dead: recipients cannot opt out (a legal problem, and Gmail and Yahoo require working
one-click unsubscribe from bulk senders) and clicks go nowhere. This is decided from the URL
alone, without DNS: numeric hosts by their address class, names by their suffix.

RFC 8058 one-click unsubscribe needs an ``https`` URI, so plain ``http`` is flagged too.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from mailcarrier.domain.outbound_targets import forbidden_reason, numeric_host

__all__ = ["public_url_problem"]

#: Suffixes that never resolve on the public internet: RFC 2606/6761 special-use names,
#: mDNS (RFC 6762), the home network zone (RFC 8375) and widespread private conventions.
_PRIVATE_SUFFIXES = ("localhost", "local", "test", "example", "invalid", "internal", "intranet",
                     "lan", "home", "corp", "private", "localdomain", "home.arpa")


def public_url_problem(url: str) -> str | None:
    """Why links under ``url`` cannot work for recipients on the internet, or None if they can."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - reading it validates the port
    except ValueError as exc:
        return f"{url!r} is not a valid URL ({exc})"
    host = (parts.hostname or "").rstrip(".").lower()
    if parts.scheme.lower() not in ("http", "https") or not host:
        return f"{url!r} is not an absolute http(s) URL"
    address = numeric_host(host)
    if address is not None:
        reason = forbidden_reason(address)
        if reason is not None:
            return f"{host} is a {reason} address, unreachable from the internet"
    else:
        if "." not in host:
            return f"{host} is a single-label name, which only resolves inside a local network"
        suffix = next((s for s in _PRIVATE_SUFFIXES if host == s or host.endswith("." + s)), None)
        if suffix is not None:
            return f"{host} ends in .{suffix}, a name that does not resolve on the internet"
    if parts.scheme.lower() != "https":
        return f"{url} is plain http; one-click unsubscribe (RFC 8058) requires https"
    return None
