"""Choosing the source IP from stored warm-up state, counters and throttle automation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from mailcarrier.delivery.source_routing import PoolRouting
from mailcarrier.domain.smtp_reply import SMTPReply
from mailcarrier.domain.throttle_rules import ActionKind
from mailcarrier.domain.warmup import WarmupLimits, load_schedules
from mailcarrier.services.pools import membership, source_ips, throttling
from mailcarrier.services.pools import warmup as pool_warmup
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.pool_tables import ip_daily_volume, sending_ips
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

LATE = datetime(2026, 6, 1, 23, 30, tzinfo=UTC)  # the whole day's warm-up share is available
CONSERVATIVE = load_schedules()["conservative"]  # day 1: 50, day 2: 50, day 3: 100
STANDARD = load_schedules()["standard"]


@pytest.fixture
def db(empty_engine: Engine) -> Iterator[tuple[Engine, int]]:  # noqa: F811
    """Account ``acme`` on pool ``house`` of three new loopback IPs; a warm pool ``warm``."""
    upgrade(empty_engine)
    start = LATE - timedelta(hours=23)
    with empty_engine.begin() as conn:
        acme = account_repo.create_account(conn, "acme", "Acme", start).id
        membership.create_pool(conn, "house", "dedicated", start)
        membership.create_pool(conn, "warm", "shared", start)
        for n in (1, 2, 3):
            membership.add_ip(conn, "house", f"127.0.0.{n}", start, schedule=CONSERVATIVE)
        membership.add_ip(conn, "warm", "127.0.0.9", start, schedule=STANDARD, warm=True)
        membership.assign_account(conn, acme, "house", start)
    yield empty_engine, acme


def test_unassigned_account_waits_with_a_reason(db: tuple[Engine, int]) -> None:
    engine, _ = db
    with engine.begin() as conn:
        other = account_repo.create_account(conn, "solo", "Solo", LATE).id
        pick = source_ips.choose_source_ip(conn, other, "gmail.com", LATE)
    assert pick.address is None and "not assigned" in pick.reasons[0]


def test_messages_spread_over_the_pool_and_warmup_caps_hold(db: tuple[Engine, int]) -> None:
    engine, acme = db
    carried: dict[str, int] = {}
    with engine.begin() as conn:
        for _ in range(150):
            pick = source_ips.choose_source_ip(conn, acme, "example.com", LATE)
            assert pick.address is not None and pick.pool == "house" and not pick.overflow
            carried[pick.address] = carried.get(pick.address, 0) + 1
        refused = source_ips.choose_source_ip(conn, acme, "example.com", LATE)
        overflow = source_ips.choose_source_ip(conn, acme, "example.com", LATE, overflow_pool="warm")
    assert carried == {"127.0.0.1": 50, "127.0.0.2": 50, "127.0.0.3": 50}
    assert refused.address is None
    assert sum("warm-up allowance used (cap 50 today)" in r for r in refused.reasons) == 3
    assert overflow.address == "127.0.0.9" and overflow.overflow and overflow.pool == "warm"


def test_warmup_cap_is_spread_over_the_day(db: tuple[Engine, int]) -> None:
    engine, acme = db
    morning = LATE.replace(hour=0)  # 50 a day: at most ceil(50/24) = 3 per IP by 01:00
    with engine.begin() as conn:
        picks = [source_ips.choose_source_ip(conn, acme, "example.com", morning).address for _ in range(10)]
    assert picks.count(None) == 1 and len([p for p in picks if p]) == 9


def test_ramp_advances_daily_and_holds_after_a_bad_day(db: tuple[Engine, int]) -> None:
    engine, acme = db
    day2, day3 = LATE + timedelta(days=1), LATE + timedelta(days=2)
    with engine.begin() as conn:
        for _ in range(30):
            source_ips.choose_source_ip(conn, acme, "example.com", LATE)
        pool_warmup.record_ip_outcome(conn, "127.0.0.1", LATE.date(), bounced=5)  # 50% of its 10
        source_ips.choose_source_ip(conn, acme, "example.com", day2)
        source_ips.choose_source_ip(conn, acme, "example.com", day3)
        rows = {r.address: r for r in conn.execute(select(sending_ips))}
    assert (rows["127.0.0.1"].warmup_day, rows["127.0.0.1"].warmup_held) == (2, False)  # held on day 2
    assert rows["127.0.0.2"].warmup_day == 3 and rows["127.0.0.2"].last_sent_on is not None
    with pytest.raises(ValueError), engine.begin() as conn:
        pool_warmup.record_ip_outcome(conn, "127.0.0.1", LATE.date(), bounced=-1)


def test_idle_ip_restarts_its_ramp(db: tuple[Engine, int]) -> None:
    engine, acme = db
    with engine.begin() as conn:
        membership.assign_account(conn, acme, "warm", LATE)
        assert source_ips.choose_source_ip(conn, acme, "example.com", LATE).address == "127.0.0.9"
        much_later = LATE + timedelta(days=45)
        source_ips.choose_source_ip(conn, acme, "example.com", much_later, warmup_limits=WarmupLimits())
        row = conn.execute(select(sending_ips).where(sending_ips.c.address == "127.0.0.9")).one()
    assert row.warmup_day == 1 and row.warmup_as_of == (LATE + timedelta(days=45)).date()


def test_yahoo_tss04_suspends_that_provider_on_that_ip_until_expiry(db: tuple[Engine, int]) -> None:
    engine, acme = db
    reply = "421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to unexpected volume"
    with engine.begin() as conn:
        for n in (1, 2, 3):
            decision = throttling.record_reply_for_throttling(conn, f"127.0.0.{n}", "yahoo.com", LATE,
                                                       delivered=False, text=reply)
            assert decision.started is not None and decision.started.kind is ActionKind.SUSPEND
        blocked = source_ips.choose_source_ip(conn, acme, "mta7.am0.yahoodns.net", LATE + timedelta(minutes=5))
        gmail = source_ips.choose_source_ip(conn, acme, "gmail.com", LATE + timedelta(minutes=5))
        active = throttling.throttle_log(conn, active_at=LATE + timedelta(minutes=5))
        after = source_ips.choose_source_ip(conn, acme, "yahoo.com", LATE + timedelta(hours=2, minutes=1))
        assert after.address is not None  # looking at the pair closed the expired action in the log
        throttling.record_reply_for_throttling(conn, after.address, "yahoo.com", LATE + timedelta(hours=2, minutes=2),
                                        delivered=True)
        log = throttling.throttle_log(conn)
    assert blocked.address is None and blocked.provider == "yahoo"
    assert all("yahoo suspended by deferral automation" in r for r in blocked.reasons)
    assert gmail.address is not None
    assert len(active) == 3 and {e.rule for e in active} == {"yahoo-tss04"}
    ended = [e for e in log if e.ip_address == after.address]
    assert ended[0].end_reason == "expired" and ended[0].ended_at == LATE + timedelta(hours=2)
    assert "TSS04" in ended[0].trigger


def test_rate_limited_slows_down_then_clean_delivery_restores(db: tuple[Engine, int]) -> None:
    engine, _acme = db
    text = "421 4.7.0 Try again later, closing connection (rate limited)"
    with engine.begin() as conn:
        starts = [throttling.record_reply_for_throttling(conn, "127.0.0.1", "mx.example.org",
                                                  LATE + timedelta(minutes=m), delivered=False,
                                                  text=text).started for m in (0, 1, 2)]
        assert starts[:2] == [None, None] and starts[2] is not None
        assert starts[2].kind is ActionKind.SLOW_DOWN
        [entry] = throttling.throttle_log(conn, active_at=LATE + timedelta(minutes=3))
        assert (entry.ip_address, entry.provider, entry.rule) == ("127.0.0.1", "default", "generic-rate-limited")
        assert entry.until == LATE + timedelta(minutes=92)
        decision = throttling.record_reply_for_throttling(conn, "127.0.0.1", "mx.example.org",
                                                   LATE + timedelta(minutes=10), delivered=True)
        assert decision.ended == "clean delivery"
        assert throttling.throttle_log(conn, active_at=LATE + timedelta(minutes=11)) == []
        [closed] = throttling.throttle_log(conn)
    assert closed.end_reason == "clean delivery" and closed.ended_at == LATE + timedelta(minutes=10)


def test_throttle_state_survives_a_new_connection(db: tuple[Engine, int]) -> None:
    """Counted replies are persisted: two matches in one worker, the third in another, still trigger."""
    engine, _ = db
    text = "421 too many connections"
    with engine.begin() as conn:
        for minute in (0, 1):
            throttling.record_reply_for_throttling(conn, "127.0.0.2", "example.net", LATE + timedelta(minutes=minute),
                                            delivered=False, text=text)
    with engine.begin() as conn:
        decision = throttling.record_reply_for_throttling(conn, "127.0.0.2", "example.net",
                                                   LATE + timedelta(minutes=2), delivered=False, text=text)
    assert decision.started is not None


def _sent(engine: Engine, address: str) -> int:
    with engine.connect() as conn:
        ip = membership.ip_by_address(conn, address)
        return int(conn.execute(select(ip_daily_volume.c.sent).where(ip_daily_volume.c.ip_id == ip.id))
                   .scalar_one_or_none() or 0)


def test_batch_reservation_stays_within_room_and_can_be_given_back(db: tuple[Engine, int]) -> None:
    engine, acme = db
    morning = LATE.replace(hour=0)  # room 3 per IP this hour (50 a day spread over 24 hours)
    with engine.begin() as conn:
        with pytest.raises(ValueError, match="batch"):
            source_ips.choose_source_ip(conn, acme, "example.com", morning, batch=0)
        pick = source_ips.choose_source_ip(conn, acme, "example.com", morning, batch=10)
        assert pick.address is not None and pick.reserved == 3
        pool_warmup.release_reserved(conn, pick.address, pick.provider, morning, 2)
        pool_warmup.release_reserved(conn, pick.address, pick.provider, morning, 0)
        with pytest.raises(ValueError):
            pool_warmup.release_reserved(conn, pick.address, pick.provider, morning, -1)
    assert _sent(engine, pick.address) == 1


def test_pool_routing_hands_out_reservations_and_flushes_the_rest(db: tuple[Engine, int]) -> None:
    engine, acme = db
    routing = PoolRouting(engine, WarmupLimits(), batch=4)

    async def scenario() -> list[str | None]:
        picks = [(await routing.choose(acme, "example.com", "mx.example.com", LATE)).address for _ in range(10)]
        deferral = SMTPReply(421, "4.7.0 try again later")
        await routing.observe(acme, "127.0.0.1", "example.com", "mx.example.com", LATE, deferral)
        await routing.flush()
        return picks

    picks = asyncio.run(scenario())
    counted = sum(_sent(engine, f"127.0.0.{n}") for n in (1, 2, 3))
    assert counted == 10 and None not in picks
    assert len(set(picks)) == 3  # runs of up to four per IP, every IP used
