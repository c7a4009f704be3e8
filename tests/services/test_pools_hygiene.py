"""Sender hygiene for an account's pool, and scheduled DNSBL look-ups, against a loopback DNS server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dns.resolver
import pytest
from sqlalchemy import Engine, select

from mailcarrier.domain.warmup import load_schedules
from mailcarrier.services.hygiene import DnsHygiene, DomainNotSendableError, assert_sendable
from mailcarrier.services.pools import membership, reputation, sender_checks
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.pool_tables import dnsbl_lookups
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

from .local_dns import local_dns
from .test_hygiene import ZONE

T0 = datetime(2026, 6, 1, 4, 0, tzinfo=UTC)
STANDARD = load_schedules()["standard"]


@pytest.fixture(scope="module")
def resolver() -> Iterator[dns.resolver.Resolver]:
    with local_dns(ZONE) as served:
        yield served


@pytest.fixture
def db(empty_engine: Engine) -> Iterator[tuple[Engine, int]]:  # noqa: F811
    upgrade(empty_engine)
    with empty_engine.begin() as conn:
        acme = account_repo.create_account(conn, "acme", "Acme", T0).id
        membership.create_pool(conn, "house", "dedicated", T0)
        membership.add_ip(conn, "house", "127.0.0.2", T0, schedule=STANDARD)
        membership.assign_account(conn, acme, "house", T0)
    yield empty_engine, acme


def test_domain_passing_every_check_is_sendable(db: tuple[Engine, int], resolver: dns.resolver.Resolver) -> None:
    engine, acme = db
    with engine.connect() as conn:
        request = sender_checks.domain_check_request(conn, acme, "Good.Test.", dkim_selector="s1",
                                           bounce_domain="bounces.good.test", inbound_host="mx.mailcarrier.test")
    assert request.sending_ips == ("127.0.0.2",) and request.domain == "good.test"
    checks = DnsHygiene(resolver, lifetime=2.0).check_domain(request)
    assert_sendable("good.test", checks)  # does not raise


def test_pool_ip_without_fcrdns_refuses_marketing_mail_with_fixes(
    db: tuple[Engine, int], resolver: dns.resolver.Resolver,
) -> None:
    engine, acme = db
    with engine.begin() as conn:
        membership.add_ip(conn, "house", "127.0.0.3", T0, schedule=STANDARD)
        request = sender_checks.domain_check_request(conn, acme, "good.test", dkim_selector="weak",
                                           bounce_domain="bounces.good.test", inbound_host="mx.mailcarrier.test")
    checks = DnsHygiene(resolver, lifetime=2.0).check_domain(request)
    with pytest.raises(DomainNotSendableError) as caught:
        assert_sendable("good.test", checks)
    message = str(caught.value)
    assert "FCrDNS 127.0.0.3" in message and "add an A/AAAA record mta3.mailcarrier.test → 127.0.0.3" in message
    assert "RSA key is 1024 bits" in message and "2048" in message
    assert "FCrDNS 127.0.0.2" not in message
    assert {c.name for c in caught.value.problems} == {"FCrDNS 127.0.0.3", "DKIM weak._domainkey.good.test"}


def test_scheduled_dnsbl_check_records_listings_not_query_errors(
    db: tuple[Engine, int], resolver: dns.resolver.Resolver,
) -> None:
    engine, _ = db
    hygiene = DnsHygiene(resolver, lifetime=2.0)
    with engine.begin() as conn:
        membership.add_ip(conn, "house", "127.0.0.3", T0, schedule=STANDARD)
        membership.add_ip(conn, "house", "127.0.0.4", T0, schedule=STANDARD)
    results = {r.ip_address: r for r in sender_checks.dnsbl_check(engine, hygiene, ["bl.test"], T0)}
    again = sender_checks.dnsbl_check(engine, hygiene, ["bl.test"], T0 + timedelta(hours=6))
    with engine.connect() as conn:
        statuses = conn.execute(select(dnsbl_lookups.c.status).order_by(dnsbl_lookups.c.id)).scalars().all()
        listed = reputation.reputation_history(conn, ip_address="127.0.0.2")
        errors = reputation.reputation_history(conn, ip_address="127.0.0.3")
    assert results["127.0.0.2"].new_listing and results["127.0.0.2"].check.status.value == "fail"
    assert results["127.0.0.3"].check.status.value == "error" and not results["127.0.0.3"].new_listing
    assert results["127.0.0.4"].check.status.value == "pass"
    assert not any(r.new_listing for r in again)
    assert statuses == ["fail", "error", "pass"] * 2
    assert len(listed) == 1 and listed[0].neighbours == ("acme",) and errors == []


def test_assert_domain_sendable_uses_the_pool_of_the_account(
    db: tuple[Engine, int], resolver: dns.resolver.Resolver,
) -> None:
    engine, acme = db
    hygiene = DnsHygiene(resolver, lifetime=2.0)
    args = {"dkim_selector": "s1", "bounce_domain": "bounces.good.test", "inbound_host": "mx.mailcarrier.test"}
    sender_checks.assert_domain_sendable(engine, hygiene, acme, "good.test", **args)
    with pytest.raises(DomainNotSendableError, match=r"SPF bad\.test for 127\.0\.0\.2"):
        sender_checks.assert_domain_sendable(engine, hygiene, acme, "bad.test", **args)
