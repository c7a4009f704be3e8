"""The HTTP client webhooks are POSTed with: every connection checked and pinned to the checked address.

A check of the URL at registration is not enough: a name can resolve to a public address
when it is registered and to ``127.0.0.1`` when it is called (DNS rebinding), and httpx
would resolve it again while connecting. :class:`PinnedTransport` therefore resolves the
host itself, refuses the request if *any* address it got is internal (see
:mod:`mailcarrier.domain.outbound_targets`), and connects to the checked address, keeping
the original name in the ``Host`` header and as the TLS server name (SNI and certificate
check). Redirects are never followed and proxy variables of the environment are ignored
(a proxy would resolve the name again).
"""

from __future__ import annotations

import ipaddress
import socket
from collections import OrderedDict
from collections.abc import Callable, Sequence

import httpx

from mailcarrier.domain.outbound_targets import (
    IPAddress,
    TargetPolicy,
    UnsafeTargetError,
    check_address,
    check_url,
)

__all__ = ["PinnedTransport", "RefusedTargetError", "Resolver", "system_resolver", "webhook_client"]

#: (host, port) -> the addresses a connection may use, in preference order.
Resolver = Callable[[str, int], Sequence[IPAddress]]
_MAX_POOLS = 32


class RefusedTargetError(httpx.TransportError):
    """The webhook URL's host is, or resolves to, an address requests must not go to."""


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for ``host`` (IPv4 and IPv6), without duplicates."""
    found: list[IPAddress] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


class PinnedTransport(httpx.BaseTransport):
    """Resolves, checks and pins each request's host; one connection pool per host name."""

    def __init__(self, policy: TargetPolicy, *, resolver: Resolver = system_resolver,
                 verify: bool | str = True) -> None:
        self._policy = policy
        self._resolve = resolver
        self._verify = verify
        self._pools: OrderedDict[str, httpx.HTTPTransport] = OrderedDict()

    def _pool(self, host: str) -> httpx.HTTPTransport:
        # Per host name, so a connection opened (and certificate checked) for one name is
        # never reused for another name on the same address.
        pool = self._pools.pop(host, None)
        if pool is None:
            pool = httpx.HTTPTransport(verify=self._verify, trust_env=False)
        self._pools[host] = pool
        while len(self._pools) > _MAX_POOLS:
            self._pools.popitem(last=False)[1].close()
        return pool

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            target = check_url(str(request.url), self._policy)
            if target.address is not None:
                addresses: Sequence[IPAddress] = [target.address]
            else:
                try:
                    addresses = self._resolve(target.host, target.port)
                except (OSError, UnicodeError) as exc:
                    raise httpx.ConnectError(f"cannot resolve {target.host}: {exc}", request=request) from exc
                if not addresses:
                    raise httpx.ConnectError(f"{target.host} has no address", request=request)
            for address in addresses:
                check_address(target.host, address, self._policy)
        except UnsafeTargetError as exc:
            raise RefusedTargetError(str(exc), request=request) from exc
        pinned = addresses[0]
        url = request.url.copy_with(host=str(pinned))
        extensions = dict(request.extensions)
        if target.scheme == "https" and target.address is None:
            extensions["sni_hostname"] = target.host
        # The headers (Host included) were built from the original URL and are kept as they are.
        pinned_request = httpx.Request(request.method, url, headers=request.headers,
                                       stream=request.stream, extensions=extensions)
        return self._pool(target.host).handle_request(pinned_request)

    def close(self) -> None:
        while self._pools:
            self._pools.popitem()[1].close()


def webhook_client(policy: TargetPolicy, *, timeout: float = 10.0,
                   resolver: Resolver = system_resolver) -> httpx.Client:
    """The client to pass to :func:`mailcarrier.services.webhooks.send_due`."""
    return httpx.Client(transport=PinnedTransport(policy, resolver=resolver), timeout=timeout,
                        follow_redirects=False, trust_env=False)
