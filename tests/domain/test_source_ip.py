"""Source IP selection from warm-up allowances and throttle state."""

from __future__ import annotations

from datetime import UTC, datetime

from mailcarrier.domain.source_ip import IpStatus, choose_source_ip
from mailcarrier.domain.throttle_rules import ReplyEvent, ThrottleState, load_throttle_rules, on_reply

RULES = load_throttle_rules()
YAHOO = RULES.providers["yahoo"]
NOON = datetime(2026, 11, 22, 11, 30, tzinfo=UTC)  # end of hour 11: half a daily cap is allowed


def suspended(ip: str) -> ThrottleState:
    event = ReplyEvent(at=NOON, delivered=False, text="421 4.7.0 [TSS04] Messages temporarily deferred")
    return on_reply(ThrottleState(ip=ip, provider="yahoo"), event, RULES).state


def test_prefers_the_ip_with_most_room() -> None:
    pool = [IpStatus("127.0.0.2", daily_cap=200, sent_today=90), IpStatus("127.0.0.3", None, sent_today=5000)]
    choice = choose_source_ip(pool, YAHOO, NOON)
    assert choice.ip == "127.0.0.3" and choice.connections == YAHOO.connections


def test_warmup_cap_holds_a_new_ip() -> None:
    pool = [IpStatus("127.0.0.2", daily_cap=200, sent_today=100)]
    choice = choose_source_ip(pool, YAHOO, NOON)
    assert choice.ip is None and "warm-up allowance used" in choice.reasons[0]


def test_suspended_ip_is_skipped() -> None:
    pool = [IpStatus("127.0.0.2", None, 0, throttle=suspended("127.0.0.2")), IpStatus("127.0.0.3", 200, 0)]
    choice = choose_source_ip(pool, YAHOO, NOON)
    assert choice.ip == "127.0.0.3"
    assert any("suspended" in reason for reason in choice.reasons)


def test_hourly_provider_limit() -> None:
    pool = [IpStatus("127.0.0.2", None, 0, sent_this_hour=YAHOO.messages_per_hour)]
    assert choose_source_ip(pool, YAHOO, NOON).ip is None


def test_empty_pool() -> None:
    assert choose_source_ip([], YAHOO, NOON).reasons == ("the pool has no IPs",)
