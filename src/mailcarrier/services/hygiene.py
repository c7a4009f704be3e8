"""DNS look-ups behind ``domains check``: fetch answers, let the domain core judge them.

Every query goes through one ``dns.resolver.Resolver`` so tests (and operators with a
split-horizon resolver) can point it anywhere. SPF is evaluated by pyspf, which queries
through dnspython's *default* resolver; :class:`DnsHygiene` therefore installs its
resolver as the default for the duration of the SPF evaluation only.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import dns.exception
import dns.resolver
import dns.reversename
import spf

from mailcarrier.config_values import HostPort
from mailcarrier.domain.dns_checks import (
    Check,
    CheckStatus,
    check_dkim,
    check_dmarc,
    check_fcrdns,
    check_mx,
    check_spf,
    dnsbl_query_name,
    interpret_dnsbl,
)
from mailcarrier.domain.errors import RefusedByPolicyError, UnavailableError

__all__ = ["DnsHygiene", "DnsQueryError", "DomainCheckRequest", "DomainNotSendableError", "assert_sendable",
           "failures", "resolver_for"]

_SPF_LOCK = threading.Lock()


def resolver_for(nameserver: HostPort | None) -> dns.resolver.Resolver:
    """The system resolver for None, else one asking only that server (split-horizon or test
    DNS); the setting and the ``--nameserver`` flags are read by ``config_values.parse_nameserver``."""
    if nameserver is None:
        return dns.resolver.Resolver()
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [nameserver.host]
    resolver.port = nameserver.port
    resolver.use_edns(0, 0, 4096)
    return resolver


class DnsQueryError(UnavailableError):
    """A DNS query failed for a reason other than 'no such record'."""


@dataclass(frozen=True, slots=True)
class DomainCheckRequest:
    """What to check for one sending domain."""

    domain: str
    sending_ips: tuple[str, ...]
    dkim_selector: str
    bounce_domain: str
    inbound_host: str
    dnsbl_zones: tuple[str, ...] = ()


class DnsHygiene:
    """Runs the sender-hygiene checks against DNS through one resolver."""

    def __init__(self, resolver: dns.resolver.Resolver | None = None, lifetime: float = 5.0) -> None:
        self._resolver = resolver or dns.resolver.Resolver()
        self._lifetime = lifetime

    def _answers(self, name: str, rdtype: str) -> list[str]:
        try:
            answer = self._resolver.resolve(name, rdtype, lifetime=self._lifetime, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise DnsQueryError(f"{rdtype} {name}: {exc}") from exc
        if rdtype == "TXT":
            return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        if rdtype == "MX":
            return [r.exchange.to_text(omit_final_dot=True) for r in answer]
        if rdtype == "PTR":
            return [r.target.to_text(omit_final_dot=True) for r in answer]
        return [r.to_text() for r in answer]

    def spf(self, domain: str, ip: str) -> Check:
        with _SPF_LOCK:
            saved = dns.resolver.default_resolver
            dns.resolver.default_resolver = self._resolver
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)  # pyspf calls resolver.query
                    result, explanation = spf.check2(
                        i=ip,
                        s=f"postmaster@{domain}",
                        h=domain,
                        timeout=self._lifetime,
                        querytime=self._lifetime,
                    )
            finally:
                dns.resolver.default_resolver = saved
        return check_spf(domain, ip, str(result), str(explanation))

    def dkim(self, domain: str, selector: str) -> Check:
        return check_dkim(selector, domain, self._answers(f"{selector}._domainkey.{domain}", "TXT"))

    def dmarc(self, domain: str, dkim_domain: str, bounce_domain: str) -> Check:
        return check_dmarc(domain, self._answers(f"_dmarc.{domain}", "TXT"), dkim_domain, bounce_domain)

    def fcrdns(self, ip: str) -> Check:
        names = self._answers(dns.reversename.from_address(ip).to_text(), "PTR")
        rdtype = "AAAA" if ":" in ip else "A"
        forward = {name.lower(): self._answers(name, rdtype) for name in names}
        return check_fcrdns(ip, names, forward)

    def mx(self, bounce_domain: str, inbound_host: str) -> Check:
        return check_mx(bounce_domain, self._answers(bounce_domain, "MX"), inbound_host)

    def dnsbl(self, ip: str, zone: str) -> Check:
        return interpret_dnsbl(ip, zone, self._answers(dnsbl_query_name(ip, zone), "A"))

    def check_domain(self, request: DomainCheckRequest) -> tuple[Check, ...]:
        """Every check for the domain; a failed query becomes an ERROR check, not a crash."""
        name, bounce, inbound = request.domain, request.bounce_domain, request.inbound_host
        jobs: list[tuple[str, Callable[[], Check]]] = []
        jobs += [(f"SPF {name} for {ip}", partial(self.spf, name, ip)) for ip in request.sending_ips]
        jobs.append((f"DKIM {request.dkim_selector}", partial(self.dkim, name, request.dkim_selector)))
        jobs.append((f"DMARC {name}", partial(self.dmarc, name, name, bounce)))
        jobs += [(f"FCrDNS {ip}", partial(self.fcrdns, ip)) for ip in request.sending_ips]
        jobs.append((f"MX {bounce}", partial(self.mx, bounce, inbound)))
        jobs += [
            (f"DNSBL {zone} for {ip}", partial(self.dnsbl, ip, zone))
            for ip in request.sending_ips
            for zone in request.dnsbl_zones
        ]
        checks = [_guarded(label, job) for label, job in jobs]
        return tuple(checks)


def _guarded(name: str, job: Callable[[], Check]) -> Check:
    try:
        return job()
    except DnsQueryError as exc:
        return Check(name, CheckStatus.ERROR, f"DNS query failed: {exc}", "check the resolver and retry")


def failures(checks: Iterable[Check]) -> list[Check]:
    """The checks that block marketing mail from the domain."""
    return [check for check in checks if not check.ok]


class DomainNotSendableError(RefusedByPolicyError):
    """Marketing mail from this domain is refused until its hygiene checks pass."""

    def __init__(self, domain: str, problems: Iterable[Check]) -> None:
        self.domain = domain
        self.problems = tuple(problems)
        lines = [f"marketing mail from {domain} is refused until these are fixed:"]
        for check in self.problems:
            todo = check.fix or "re-run `mailcarrier domains check` once DNS answers"
            lines.append(f"- {check.name}: {check.detail} -> {todo}")
        super().__init__("\n".join(lines))


def assert_sendable(domain: str, checks: Iterable[Check]) -> None:
    """Raise DomainNotSendableError naming every failed check and its fix; return if all pass.

    A check that could not complete (DNS error, refused DNSBL query) also blocks: an
    unverified domain is not a sendable one, and the message says to retry.
    """
    problems = failures(checks)
    if problems:
        raise DomainNotSendableError(domain, problems)
