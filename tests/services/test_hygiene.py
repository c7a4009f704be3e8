"""Sender-hygiene checks against a local DNS server (no outside network)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailcarrier.domain.dns_checks import CheckStatus
from mailcarrier.services.hygiene import DnsHygiene, DomainCheckRequest, failures

from .local_dns import local_dns


def dkim_txt(bits: int) -> str:
    der = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    chunks = [record[i : i + 200] for i in range(0, len(record), 200)]
    return " ".join(f'"{chunk}"' for chunk in chunks)


ZONE = {
    ("good.test", "TXT"): ['"v=spf1 ip4:127.0.0.2 ip4:127.0.0.3 -all"'],
    ("s1._domainkey.good.test", "TXT"): [dkim_txt(2048)],
    ("weak._domainkey.good.test", "TXT"): [dkim_txt(1024)],
    ("_dmarc.good.test", "TXT"): ['"v=DMARC1; p=quarantine; rua=mailto:dmarc@good.test"'],
    ("bounces.good.test", "MX"): ["10 mx.mailcarrier.test."],
    ("2.0.0.127.in-addr.arpa", "PTR"): ["mta2.mailcarrier.test."],
    ("mta2.mailcarrier.test", "A"): ["127.0.0.2"],
    ("3.0.0.127.in-addr.arpa", "PTR"): ["mta3.mailcarrier.test."],
    ("mta3.mailcarrier.test", "A"): ["127.0.0.99"],
    ("2.0.0.127.bl.test", "A"): ["127.0.0.2"],
    ("3.0.0.127.bl.test", "A"): ["127.255.255.254"],
    ("bad.test", "TXT"): ['"v=spf1 ip4:192.0.2.0/24 -all"'],
    ("bounces.bad.test", "MX"): ["10 mx.elsewhere.test."],
}


@pytest.fixture(scope="module")
def resolver() -> Iterator[dns.resolver.Resolver]:
    with local_dns(ZONE) as served:
        yield served


@pytest.fixture
def hygiene(resolver: dns.resolver.Resolver) -> DnsHygiene:
    return DnsHygiene(resolver, lifetime=2.0)


def test_spf_pass_and_fail(hygiene: DnsHygiene) -> None:
    assert hygiene.spf("good.test", "127.0.0.2").ok
    failed = hygiene.spf("bad.test", "127.0.0.2")
    assert failed.status is CheckStatus.FAIL and "SPF record" in failed.fix
    assert hygiene.spf("nothing.test", "127.0.0.2").status is CheckStatus.FAIL


def test_spf_does_not_leave_the_default_resolver_changed(hygiene: DnsHygiene) -> None:
    before = dns.resolver.default_resolver
    hygiene.spf("good.test", "127.0.0.2")
    assert dns.resolver.default_resolver is before


def test_dkim(hygiene: DnsHygiene) -> None:
    assert hygiene.dkim("good.test", "s1").ok
    assert "1024 bits" in hygiene.dkim("good.test", "weak").detail
    assert "no DKIM key" in hygiene.dkim("good.test", "missing").detail


def test_dmarc(hygiene: DnsHygiene) -> None:
    assert hygiene.dmarc("good.test", "good.test", "bounces.good.test").ok
    assert "no DMARC" in hygiene.dmarc("bad.test", "bad.test", "bounces.bad.test").detail


def test_fcrdns(hygiene: DnsHygiene) -> None:
    assert hygiene.fcrdns("127.0.0.2").ok
    assert "does not resolve back" in hygiene.fcrdns("127.0.0.3").detail
    assert "no PTR" in hygiene.fcrdns("127.0.0.4").detail


def test_mx(hygiene: DnsHygiene) -> None:
    assert hygiene.mx("bounces.good.test", "mx.mailcarrier.test").ok
    assert not hygiene.mx("bounces.bad.test", "mx.mailcarrier.test").ok


def test_dnsbl_listing_clean_and_query_error(hygiene: DnsHygiene) -> None:
    assert hygiene.dnsbl("127.0.0.2", "bl.test").status is CheckStatus.FAIL
    assert hygiene.dnsbl("127.0.0.3", "bl.test").status is CheckStatus.ERROR
    assert hygiene.dnsbl("127.0.0.4", "bl.test").ok


def test_check_domain_reports_everything(hygiene: DnsHygiene) -> None:
    request = DomainCheckRequest(
        domain="good.test",
        sending_ips=("127.0.0.2", "127.0.0.3"),
        dkim_selector="s1",
        bounce_domain="bounces.good.test",
        inbound_host="mx.mailcarrier.test",
        dnsbl_zones=("bl.test",),
    )
    checks = hygiene.check_domain(request)
    assert len(checks) == 2 + 1 + 1 + 2 + 1 + 2
    failed = {check.name for check in failures(checks)}
    assert failed == {"FCrDNS 127.0.0.3", "DNSBL bl.test for 127.0.0.2", "DNSBL bl.test for 127.0.0.3"}


def test_unreachable_server_gives_error_checks_not_a_crash() -> None:
    dead = dns.resolver.Resolver(configure=False)
    dead.nameservers = ["127.0.0.1"]
    dead.port = 9  # discard port: nothing answers DNS there
    hygiene = DnsHygiene(dead, lifetime=0.5)
    request = DomainCheckRequest("good.test", ("127.0.0.2",), "s1", "bounces.good.test", "mx.test")
    checks = hygiene.check_domain(request)
    assert all(check.status is CheckStatus.ERROR for check in checks if not check.name.startswith("SPF"))
    assert all(not check.ok for check in checks)
