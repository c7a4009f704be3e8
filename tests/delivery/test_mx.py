import dns.resolver
import pytest

from mailcarrier.config import Settings
from mailcarrier.delivery.mx import MailHost, MxResolver, RouteError
from tests.services.local_dns import local_dns

ZONE = {
    ("shop.example", "MX"): ["20 mx2.shop.example.", "10 MX1.shop.example."],
    ("nomail.example", "MX"): ["0 ."],
    ("bare.example", "A"): ["192.0.2.7"],
    ("empty.example", "TXT"): ['"v=spf1 -all"'],
}


def test_mx_records_in_preference_order() -> None:
    with local_dns(ZONE) as resolver:
        hosts = MxResolver(resolver).resolve("Shop.Example.")
    assert hosts == (MailHost("mx1.shop.example", 25, 10), MailHost("mx2.shop.example", 25, 20))


def test_a_record_fallback() -> None:
    with local_dns(ZONE) as resolver:
        assert MxResolver(resolver).resolve("bare.example") == (MailHost("bare.example", 25, 0),)


@pytest.mark.parametrize(
    ("domain", "code"), [("nomail.example", 172), ("missing.example", 170), ("empty.example", 173)]
)
def test_undeliverable_domains_carry_internal_codes(domain: str, code: int) -> None:
    with local_dns(ZONE) as resolver, pytest.raises(RouteError) as caught:
        MxResolver(resolver).resolve(domain)
    assert caught.value.internal_code == code
    assert domain in str(caught.value)


def test_unreachable_dns_is_temporary() -> None:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = 9  # discard: nothing answers
    resolver.lifetime = 0.3
    with pytest.raises(RouteError) as caught:
        MxResolver(resolver).resolve("shop.example")
    assert caught.value.internal_code == 171


def test_answers_are_cached_until_their_ttl() -> None:
    now = [0.0]
    with local_dns(ZONE) as resolver:
        mx = MxResolver(resolver, clock=lambda: now[0])
        first = mx.resolve("shop.example")
    # the DNS server is gone: a cached answer still comes back, an expired one does not
    assert mx.resolve("shop.example") == first
    now[0] = 301.0
    with pytest.raises(RouteError):
        mx.resolve("shop.example")


def test_static_routes_replace_dns() -> None:
    routes = Settings.of(static_routes="*.test=127.0.0.1:2525, * = [::1]:2526").delivery.static_routes
    mx = MxResolver(dns.resolver.Resolver(configure=False), routes)
    assert mx.resolve("a.test") == (MailHost("127.0.0.1", 2525),)
    assert mx.resolve("gmail.com") == (MailHost("::1", 2526),)
