"""Forwarded headers, believed only from the reverse proxies the operator names.

``X-Forwarded-For`` is written by whoever sends the request. Believing it from any peer (or,
as uvicorn does by default, from loopback, which is every local process and any proxy that
does not strip the header) lets a client choose its own address: the subscription form's
per-address rate limit and the tracking hits' network checks then count nothing.

:class:`TrustedProxies` rewrites the ASGI ``client`` (and ``scheme`` from
``X-Forwarded-Proto``) only when the direct peer is one of ``trusted_proxies``; the client is
then the rightmost address of ``X-Forwarded-For`` that is not itself a trusted proxy (the
left part of the header is whatever the client wrote). With no trusted proxies configured
the headers are ignored and the peer address is the client.
"""

from __future__ import annotations

import ipaddress

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["TrustedProxies"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = text.strip()
    if value.startswith("["):  # [v6]:port
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:  # v4:port
        value = value.partition(":")[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


class TrustedProxies:
    """ASGI middleware: take the client address from X-Forwarded-For only behind a trusted proxy."""

    def __init__(self, app: ASGIApp, trusted: tuple[_Network, ...]) -> None:
        self.app = app
        self.networks = trusted

    def _trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        return address is not None and any(address in net for net in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if (scope["type"] in ("http", "websocket") and self.networks and client
                and self._trusted(_address(str(client[0])))):
            headers = [(k, v) for k, v in scope.get("headers", ()) if k in (b"x-forwarded-for",
                                                                           b"x-forwarded-proto")]
            hops = [h for k, v in headers if k == b"x-forwarded-for"
                    for h in v.decode("latin-1").split(",") if h.strip()]
            chosen = None
            for hop in reversed(hops):
                address = _address(hop)
                if address is None:
                    break  # garbage: stop believing the header here
                chosen = address
                if not self._trusted(address):
                    break
            scope = dict(scope)
            if chosen is not None:
                scope["client"] = (str(chosen), 0)
            protos = [v.decode("latin-1").split(",")[-1].strip().lower() for k, v in headers
                      if k == b"x-forwarded-proto"]
            if protos and protos[-1] in ("http", "https"):
                scope["scheme"] = protos[-1] if scope["type"] == "http" else \
                    {"http": "ws", "https": "wss"}[protos[-1]]
        await self.app(scope, receive, send)
