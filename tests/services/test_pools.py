"""Pools, eligibility from the store, reputation events and neighbours (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection, Engine, select, update

from mailcarrier.domain.dns_checks import Check, CheckStatus
from mailcarrier.domain.errors import ConflictError, NotFoundError
from mailcarrier.domain.pools import PoolKind, PoolPolicy
from mailcarrier.domain.reputation_signals import SignalKind
from mailcarrier.domain.warmup import load_schedules
from mailcarrier.services.pools import eligibility as pool_eligibility
from mailcarrier.services.pools import membership
from mailcarrier.services.pools import reputation as pool_reputation
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage import contacts as contact_repo
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.pool_tables import pool_assignments, sending_ips
from mailcarrier.storage.tables import activities, deliveries, mailings
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
STANDARD = load_schedules()["standard"]
SMALL = PoolPolicy(trusted_max_messages_30d=10, dedicated_min_messages_30d=20)


@pytest.fixture
def engine(empty_engine: Engine) -> Iterator[Engine]:  # noqa: F811
    upgrade(empty_engine)
    with empty_engine.begin() as conn:
        account_repo.create_account(conn, "acme", "Acme", T0)
        account_repo.create_account(conn, "bolt", "Bolt", T0)
        membership.create_pool(conn, "shared-1", "shared", T0)
        membership.create_pool(conn, "trusted-1", PoolKind.TRUSTED, T0)
        membership.add_ip(conn, "shared-1", "127.0.0.11", T0, schedule=STANDARD, warm=True)
        membership.add_ip(conn, "trusted-1", "127.0.0.21", T0, schedule=STANDARD, warm=True)
    yield empty_engine


def acct(conn: Connection, slug: str) -> int:
    return account_repo.account_by_slug(conn, slug).id


def sent_messages(conn: Connection, account_id: int, count: int, *, bounced: int = 0,
                  when: datetime = T0) -> None:
    """``count`` finished deliveries of one mailing, ``bounced`` of them hard bounces."""
    mailing = conn.execute(mailings.insert().values(
        account_id=account_id, from_address="news@acme.test", subject="s", sending_domain="acme.test",
        created_at=when)).inserted_primary_key
    assert mailing is not None
    for n in range(count):
        contact = contact_repo.add_contact(conn, account_id, f"r{n}-{mailing[0]}@example.com", when,
                                           consent_source="opt_in")
        state = "bounced_hard" if n < bounced else "delivered"
        conn.execute(deliveries.insert().values(
            account_id=account_id, mailing_id=mailing[0], contact_id=contact, email=f"r{n}@example.com",
            domain="example.com", state=state, delivered_at=None if n < bounced else when, final_at=when))


def test_pool_setup_conflicts_and_listing(engine: Engine) -> None:
    with engine.begin() as conn:
        with pytest.raises(ConflictError):
            membership.create_pool(conn, "shared-1", "shared", T0)
        with pytest.raises(ValueError, match="unknown pool kind"):
            membership.create_pool(conn, "x", "penthouse", T0)
        with pytest.raises(ValueError, match="not an IP"):
            membership.add_ip(conn, "shared-1", "300.1.1.1", T0, schedule=STANDARD)
        with pytest.raises(ConflictError):
            membership.add_ip(conn, "trusted-1", "127.0.0.11", T0, schedule=STANDARD)
        with pytest.raises(NotFoundError):
            membership.add_ip(conn, "nope", "127.0.0.99", T0, schedule=STANDARD)
        membership.assign_account(conn, acct(conn, "acme"), "shared-1", T0)
        membership.assign_account(conn, acct(conn, "acme"), "trusted-1", T0 + timedelta(days=1), reason="test")
        views = {v.pool.name: v for v in membership.list_pools(conn)}
        assert views["trusted-1"].accounts == ("acme",)
        assert views["shared-1"].accounts == ()
        assert [ip.address for ip in views["shared-1"].ips] == ["127.0.0.11"]
        history = conn.execute(select(pool_assignments).order_by(pool_assignments.c.id)).all()
        assert [h.ended_at for h in history] == [T0 + timedelta(days=1), None]


def test_unconsented_sources_block_trusted_application(engine: Engine) -> None:
    with engine.begin() as conn:
        acme = acct(conn, "acme")
        membership.assign_account(conn, acme, "shared-1", T0)
        contact_repo.add_contact(conn, acme, "a@example.com", T0, consent_source="purchased")
        contact_repo.add_contact(conn, acme, "b@example.com", T0, consent_source="double_opt_in")
        application = pool_eligibility.apply_for_pool(conn, acme, "trusted", SMALL, T0)
    assert application.state == "refused" and not application.eligible
    assert any("purchased" in reason for reason in application.reasons)
    assert all("double_opt_in" not in reason for reason in application.reasons)


def test_trusted_application_approval_then_trap_demotes_to_shared(engine: Engine) -> None:
    with engine.begin() as conn:
        acme = acct(conn, "acme")
        membership.assign_account(conn, acme, "shared-1", T0)
        sent_messages(conn, acme, 5)
        application = pool_eligibility.apply_for_pool(conn, acme, "trusted", SMALL, T0)
        assert application.state == "pending" and application.eligible
        with pytest.raises(ConflictError, match="already pending"):
            pool_eligibility.apply_for_pool(conn, acme, "trusted", SMALL, T0)
        assert [a.id for a in pool_eligibility.list_applications(conn, "pending")] == [application.id]
        approved = pool_eligibility.decide_application(conn, application.id, approve=True, who="ops", now=T0,
                                          policy=SMALL)
        assert approved.state == "approved" and approved.decided_by == "ops"
        assert membership.current_pool(conn, acme) == membership.pool_by_name(conn, "trusted-1")
        with pytest.raises(ConflictError, match="already approved"):
            pool_eligibility.decide_application(conn, application.id, approve=False, who="ops", now=T0, policy=SMALL)

        later = T0 + timedelta(days=3)
        pool_reputation.record_reputation_event(conn, "trap", later, source="manual", account_id=acme,
                                    evidence="pristine trap hit reported by partner")
        verdict = pool_eligibility.enforce_eligibility(conn, acme, SMALL, later)
        assert verdict.demoted and verdict.pool is PoolKind.SHARED
        current = membership.current_pool(conn, acme)
        assert current is not None and current.name == "shared-1"
        reason = conn.execute(select(pool_assignments.c.reason).where(
            pool_assignments.c.account_id == acme, pool_assignments.c.ended_at.is_(None))).scalar_one()
        assert "spam-trap hit" in reason
        refused = pool_eligibility.apply_for_pool(conn, acme, "trusted", SMALL, later)
        assert refused.state == "refused"


def test_rates_and_volume_from_the_store(engine: Engine) -> None:
    with engine.begin() as conn:
        acme, bolt = acct(conn, "acme"), acct(conn, "bolt")
        membership.assign_account(conn, acme, "trusted-1", T0)
        membership.assign_account(conn, bolt, "shared-1", T0)
        sent_messages(conn, acme, 10, bounced=2)
        sent_messages(conn, bolt, 25, when=T0 - timedelta(days=1))
        sent_messages(conn, bolt, 7, when=T0 - timedelta(days=40))  # outside the window
        record = pool_eligibility.account_record(conn, acme, T0)
        assert (record.messages_30d, record.bounces_30d, record.current_pool) == (10, 2, PoolKind.TRUSTED)
        verdict = pool_eligibility.enforce_eligibility(conn, acme, SMALL, T0)
        assert verdict.demoted and any("bounce rate 20.00%" in r for r in verdict.reasons)
        bolt_verdict = pool_eligibility.evaluate_account(conn, bolt, SMALL, T0)
        assert pool_eligibility.account_record(conn, bolt, T0).messages_30d == 25
        assert bolt_verdict.recommend_dedicated and not bolt_verdict.trusted_eligible
        contact = contact_repo.add_contact(conn, bolt, "c@example.com", T0, consent_source="opt_in")
        conn.execute(activities.insert().values(account_id=bolt, contact_id=contact, type="complaint",
                                                occurred_at=T0))
        assert pool_eligibility.account_record(conn, bolt, T0).complaints_30d == 1


def test_listing_records_the_neighbours_on_the_ip(engine: Engine) -> None:
    with engine.begin() as conn:
        acme, bolt = acct(conn, "acme"), acct(conn, "bolt")
        membership.assign_account(conn, acme, "shared-1", T0)
        membership.assign_account(conn, bolt, "shared-1", T0 + timedelta(days=2))
        first = pool_reputation.record_reputation_event(conn, SignalKind.LISTING, T0 + timedelta(days=5),
                                            source="manual", ip_address="127.0.0.11", blocklist="zen",
                                            occurred_at=T0 + timedelta(days=1))
        event = pool_reputation.record_reputation_signal(
            conn, "554 5.7.1 Service unavailable; Client host [127.0.0.11] blocked using zen.spamhaus.org",
            "127.0.0.11", bolt, T0 + timedelta(days=3))
        assert event is not None
        assert pool_reputation.record_reputation_signal(conn, "550 5.1.1 user unknown", "127.0.0.11", bolt, T0) is None
        history = pool_reputation.reputation_history(conn, ip_address="127.0.0.11")
    assert [e.id for e in history] == [first, event]
    assert history[0].neighbours == ("acme",)  # bolt joined after the listing
    assert history[1].neighbours == ("acme", "bolt") and history[1].blocklist == "Spamhaus"
    assert history[1].account == "bolt" and history[1].source == "bounce"
    with engine.connect() as conn:
        acme_view = pool_reputation.reputation_history(conn, account_id=acct(conn, "acme"))
    assert [e.id for e in acme_view] == [first, event]


def test_reputation_event_input_is_validated(engine: Engine) -> None:
    with engine.begin() as conn:
        with pytest.raises(ValueError, match="unknown source"):
            pool_reputation.record_reputation_event(conn, "trap", T0, source="rumour", ip_address="127.0.0.11")
        with pytest.raises(ValueError):
            pool_reputation.record_reputation_event(conn, "fire", T0, source="manual", ip_address="127.0.0.11")
        with pytest.raises(ValueError, match="needs an IP"):
            pool_reputation.record_reputation_event(conn, "trap", T0, source="manual")
        with pytest.raises(NotFoundError):
            pool_reputation.record_reputation_event(conn, "trap", T0, source="manual", ip_address="127.0.0.200")
        assert pool_reputation.reputation_history(conn) == []


def test_dnsbl_results_open_and_close_listings(engine: Engine) -> None:
    ip, zone = "127.0.0.11", "bl.test"
    listed = Check(f"DNSBL {zone} for {ip}", CheckStatus.FAIL, "listed (127.0.0.2)")
    refused = Check(f"DNSBL {zone} for {ip}", CheckStatus.ERROR, "the list refused the query (127.255.255.x)")
    clean = Check(f"DNSBL {zone} for {ip}", CheckStatus.PASS, "not listed")
    with engine.begin() as conn:
        assert [r.new_listing for r in pool_reputation.record_dnsbl_results(conn, [(ip, zone, refused)], T0)] == [False]
        assert pool_reputation.reputation_history(conn, ip_address=ip) == []
        assert pool_reputation.record_dnsbl_results(conn, [(ip, zone, listed)], T0)[0].new_listing
        assert not pool_reputation.record_dnsbl_results(conn, [(ip, zone, listed)], T0 + timedelta(hours=6))[0].new_listing
        pool_reputation.record_dnsbl_results(conn, [(ip, zone, clean)], T0 + timedelta(hours=12))
        events = pool_reputation.reputation_history(conn, ip_address=ip)
    assert len(events) == 1 and events[0].resolved_at == T0 + timedelta(hours=12)
    assert events[0].source == "dnsbl" and events[0].blocklist == zone


def test_dedicated_sender_with_a_trap_hit_stays_on_its_own_ips_throttled(engine: Engine) -> None:
    """Seed 000: a dedicated sender that burns its house down has no one to blame but itself;
    moving it to shared handed the damage to the neighbours."""
    with engine.begin() as conn:
        acme = acct(conn, "acme")
        membership.create_pool(conn, "acme-own", "dedicated", T0)
        membership.add_ip(conn, "acme-own", "192.0.2.77", T0, schedule=STANDARD)
        membership.assign_account(conn, acme, "acme-own", T0)
        conn.execute(update(sending_ips).where(sending_ips.c.address == "192.0.2.77")
                     .values(warmup_day=12))
        sent_messages(conn, acme, 5)
        pool_reputation.record_reputation_event(conn, "trap", T0, source="manual", account_id=acme, evidence="trap")
        later = T0 + timedelta(days=1)
        verdict = pool_eligibility.enforce_eligibility(conn, acme, SMALL, later)
        assert verdict.quarantined and not verdict.demoted and verdict.pool is PoolKind.DEDICATED
        assert any("never moved to shared" in r for r in verdict.reasons)
        current = membership.current_pool(conn, acme)
        assert current is not None and current.name == "acme-own"
        ip = conn.execute(select(sending_ips).where(sending_ips.c.address == "192.0.2.77")).one()
        assert (ip.warmup_day, ip.warmup_held) == (1, True)  # throttled: the ramp restarts


def test_account_thresholds_decide_the_rates(engine: Engine) -> None:
    """Seed 004: an 11% (here 20%) bounce rate can be normal in B2B; the account says so."""
    with engine.begin() as conn:
        acme = acct(conn, "acme")
        membership.assign_account(conn, acme, "trusted-1", T0)
        sent_messages(conn, acme, 5, bounced=1)  # 20%
        assert pool_eligibility.evaluate_account(conn, acme, SMALL, T0).demoted
        account_repo.set_account_policy(conn, acme, thresholds={"max_bounce_rate": 0.25})
        verdict = pool_eligibility.evaluate_account(conn, acme, SMALL, T0)
        assert not verdict.demoted and verdict.pool is PoolKind.TRUSTED
