"""Which URLs a server-side request may go to (webhooks): no loopback, private or other internal targets.

An account that registers a webhook chooses where *our* server sends requests. Without a
check that is a server-side request forgery (SSRF): ``http://169.254.169.254/`` reads the
cloud metadata service, ``http://127.0.0.1:6379/`` talks to Redis. The rules:

* https only, unless the operator allows http (or the host is one of the named internal hosts);
* the host must not be, or resolve to, an address that is loopback, private, shared (CGNAT),
  link-local, multicast, reserved, unspecified or otherwise not globally routable. IPv6 forms
  that embed an IPv4 address (IPv4-mapped ``::ffff:127.0.0.1``, 6to4, Teredo, NAT64) are
  judged by the embedded address;
* numeric host spellings that C resolvers accept (``2130706433``, ``0x7f000001``,
  ``0177.0.0.1``, ``127.1``) are read as the address they stand for, so they are refused
  without any DNS look-up;
* an operator may name internal hosts (names, addresses or networks) that are allowed all
  the same, for self-hosted receivers on the same network.

This module is pure: resolution happens in the shell, which calls :func:`check_address` on
every address it is about to connect to (and connects to that address, so a second DNS
answer cannot switch it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mailcarrier.domain.errors import MailcarrierError

__all__ = [
    "IPAddress",
    "TargetPolicy",
    "UnsafeTargetError",
    "WebhookTarget",
    "check_address",
    "check_url",
    "forbidden_reason",
    "numeric_host",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


class UnsafeTargetError(MailcarrierError, ValueError):
    """The URL points at a target the server must not send requests to."""


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    """What the operator allows besides public https URLs."""

    allow_http: bool = False
    #: Lower-case host names allowed even when they resolve to internal addresses (http allowed too).
    internal_hosts: frozenset[str] = field(default_factory=frozenset)
    #: Addresses/networks allowed even though internal (http allowed too).
    internal_networks: tuple[_Network, ...] = ()

    @classmethod
    def allowing(cls, allow_http: bool, internal: Iterable[str | _Network]) -> TargetPolicy:
        """Build from the webhook settings: ``internal`` holds host names (lower case, no
        trailing dot) and networks, as ``config_values.parse_host_or_network`` reads them."""
        entries = tuple(internal)
        return cls(allow_http, frozenset(e for e in entries if isinstance(e, str)),
                   tuple(e for e in entries if not isinstance(e, str)))

    def allows_internal(self, host: str, address: IPAddress | None) -> bool:
        """Whether the operator named this host (or address) as an allowed internal target."""
        if host.lower().rstrip(".") in self.internal_hosts:
            return True
        return address is not None and any(address in net for net in self.internal_networks)


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """A URL that passed the checks that need no DNS."""

    url: str
    scheme: str
    host: str  #: lower-case name, or the canonical address for numeric hosts
    port: int
    address: IPAddress | None  #: set when the URL names an address rather than a name


def _inet_aton_part(part: str) -> int | None:
    try:
        if part[:2].lower() == "0x":
            return int(part[2:] or "0", 16)
        if len(part) > 1 and part.startswith("0"):
            return int(part[1:], 8)
        return int(part, 10)
    except ValueError:
        return None


def numeric_host(host: str) -> IPAddress | None:
    """The address a numeric host spelling stands for, as C's ``inet_aton`` reads it; else None.

    Covers dotted quads, IPv6 literals (with or without brackets) and the legacy forms
    ``a``, ``a.b``, ``a.b.c`` with decimal, octal (leading 0) or hex (0x) parts.
    """
    text = host.strip().rstrip(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            return None
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(parts):
        return None
    values = [_inet_aton_part(p) for p in parts]
    if any(v is None for v in values):
        return None
    nums = [v for v in values if v is not None]
    *head, last = nums
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (5 - len(nums))):
        return None
    value = 0
    for v in head:
        value = value << 8 | v
    value = value << (8 * (5 - len(nums))) | last
    return ipaddress.IPv4Address(value)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(address))
    return None


def forbidden_reason(address: IPAddress) -> str | None:
    """Why a request must not go to ``address`` ("loopback", "private", ...), or None if it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            reason = forbidden_reason(inner)
            return f"{reason} (embedded in {address})" if reason else None
    is_v4 = isinstance(address, ipaddress.IPv4Address)
    checks = (("unspecified", address.is_unspecified), ("loopback", address.is_loopback),
              ("link-local", address.is_link_local), ("multicast", address.is_multicast),
              ("shared (carrier-grade NAT)", is_v4 and address in _CGNAT),
              ("private", address.is_private), ("reserved", address.is_reserved),
              ("site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
              ("not globally routable", not address.is_global))
    for reason, hit in checks:
        if hit:
            return reason
    return None


def check_address(host: str, address: IPAddress, policy: TargetPolicy) -> None:
    """Refuse connecting to ``address`` (what ``host`` resolved to) unless it is public or allowed."""
    reason = forbidden_reason(address)
    if reason is not None and not policy.allows_internal(host, address):
        raise UnsafeTargetError(
            f"webhook host {host} resolves to {address}, a {reason} address; requests to internal "
            "addresses are refused (an operator can allow named hosts with "
            "MAILCARRIER_WEBHOOK_INTERNAL_HOSTS)")


def check_url(url: str, policy: TargetPolicy) -> WebhookTarget:
    """The checks that need no DNS: scheme, form, and numeric or local host names."""
    if len(url) > 2048 or any(ord(c) < 0x21 for c in url):
        raise UnsafeTargetError("a webhook URL must be at most 2048 characters, without spaces "
                                "or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTargetError(f"the webhook URL cannot be read: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeTargetError("a webhook URL must be an absolute https URL")
    if parts.username is not None or parts.password is not None:
        raise UnsafeTargetError("a webhook URL must not carry a user name or password; "
                                "verify the signature header instead")
    host = parts.hostname.lower().rstrip(".")
    address = numeric_host(host)
    if address is not None:
        host = str(address)
    allowed_internal = policy.allows_internal(host, address)
    if scheme == "http" and not (policy.allow_http or allowed_internal):
        raise UnsafeTargetError("a webhook URL must use https (an operator can allow http with "
                                "MAILCARRIER_WEBHOOK_ALLOW_HTTP)")
    if address is not None:
        check_address(host, address, policy)
    elif not allowed_internal and (host in _LOCAL_NAMES or host.endswith(".localhost")
                                   or "." not in host):
        raise UnsafeTargetError(f"webhook host {host} is a local name; requests to internal hosts "
                                "are refused (an operator can allow named hosts with "
                                "MAILCARRIER_WEBHOOK_INTERNAL_HOSTS)")
    return WebhookTarget(url, scheme, host, port or (443 if scheme == "https" else 80), address)
