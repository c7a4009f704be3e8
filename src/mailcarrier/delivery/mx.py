"""Where to deliver a recipient domain: static routes first, else DNS MX.

MX records are tried by preference; a domain without MX falls back to its
A/AAAA records (RFC 5321 section 5.1); a null MX (RFC 7505, ``0 .``) means
the domain accepts no mail. Failures carry our internal codes so the
classifier can tell a dead domain (170 NXDOMAIN, 172 null MX, 173 no host)
from a DNS hiccup worth retrying (171). Answers are cached for their TTL.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.resolver

from mailcarrier.config_values import StaticRoute
from mailcarrier.domain.errors import DeliveryError

__all__ = ["MailHost", "MxResolver", "RouteError", "StaticRoute"]

SMTP_PORT = 25
#: Failures are cached briefly so a broken domain does not cost one DNS query per recipient.
_NEGATIVE_TTL = 60.0


@dataclass(frozen=True, slots=True)
class MailHost:
    host: str
    port: int = SMTP_PORT
    preference: int = 0


class RouteError(DeliveryError):
    """No mail host for a domain; ``internal_code`` is 170, 171, 172 or 173."""

    def __init__(self, domain: str, internal_code: int, detail: str) -> None:
        super().__init__(f"{domain}: {detail}")
        self.domain = domain
        self.internal_code = internal_code


class MxResolver:
    """Resolves recipient domains to ordered mail hosts, with a TTL cache."""

    def __init__(
        self,
        resolver: dns.resolver.Resolver | None = None,
        static_routes: tuple[StaticRoute, ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolver = resolver or dns.resolver.Resolver()
        self._static = static_routes
        self._clock = clock
        self._cache: dict[str, tuple[float, tuple[MailHost, ...] | RouteError]] = {}

    def resolve(self, domain: str) -> tuple[MailHost, ...]:
        """Mail hosts for ``domain`` in the order to try; raises RouteError."""
        domain = domain.strip().rstrip(".").lower()
        for route in self._static:
            if fnmatch.fnmatchcase(domain, route.pattern):
                return (MailHost(route.host, route.port),)
        now = self._clock()
        cached = self._cache.get(domain)
        if cached is not None and cached[0] > now:
            if isinstance(cached[1], RouteError):
                raise cached[1]
            return cached[1]
        try:
            hosts, ttl = self._lookup(domain)
        except RouteError as error:
            self._cache[domain] = (now + _NEGATIVE_TTL, error)
            raise
        self._cache[domain] = (now + ttl, hosts)
        return hosts

    def _query(self, domain: str, rdtype: str) -> dns.resolver.Answer | None:
        try:
            return self._resolver.resolve(domain, rdtype)
        except dns.resolver.NXDOMAIN as error:
            raise RouteError(domain, 170, "the domain does not exist (NXDOMAIN)") from error
        except dns.resolver.NoAnswer:
            return None
        except dns.exception.DNSException as error:  # SERVFAIL (NoNameservers), timeouts, ...
            detail = f"DNS lookup failed temporarily ({type(error).__name__})"
            raise RouteError(domain, 171, detail) from error

    def _lookup(self, domain: str) -> tuple[tuple[MailHost, ...], float]:
        answer = self._query(domain, "MX")
        if answer is not None:
            records = sorted(answer, key=lambda r: (r.preference, r.exchange.to_text()))
            if len(records) == 1 and records[0].exchange.to_text() == ".":
                raise RouteError(domain, 172, "the domain publishes a null MX and accepts no mail")
            hosts = tuple(
                MailHost(r.exchange.to_text(omit_final_dot=True).lower(), SMTP_PORT, r.preference)
                for r in records if r.exchange.to_text() != "."
            )
            if hosts:
                return hosts, float(answer.rrset.ttl if answer.rrset is not None else _NEGATIVE_TTL)
        for rdtype in ("A", "AAAA"):
            fallback = self._query(domain, rdtype)
            if fallback is not None:
                ttl = float(fallback.rrset.ttl if fallback.rrset is not None else _NEGATIVE_TTL)
                return (MailHost(domain, SMTP_PORT, 0),), ttl
        raise RouteError(domain, 173, "the domain has neither MX nor A/AAAA records")
