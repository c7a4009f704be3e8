"""Deferral automation sequences and provider limits, through the public functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailcarrier.domain.errors import RuleFileError
from mailcarrier.domain.throttle_rules import (
    ActionKind,
    ReplyEvent,
    ThrottleState,
    effective_limits,
    load_throttle_rules,
    on_reply,
    parse_throttle_rules,
)

RULES = load_throttle_rules()
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
YAHOO_TSS04 = "421 4.7.0 [TSS04] Messages from 127.0.0.2 temporarily deferred due to unexpected volume"
RATE_LIMITED = "421 4.7.0 Rate limited, please try again later"


def deferral(minutes: float, text: str) -> ReplyEvent:
    return ReplyEvent(at=T0 + timedelta(minutes=minutes), delivered=False, text=text)


def delivered(minutes: float) -> ReplyEvent:
    return ReplyEvent(at=T0 + timedelta(minutes=minutes), delivered=True)


@pytest.mark.parametrize(
    ("host", "provider"),
    [("gmail.com", "gmail"), ("ALT1.ASPMX.L.GOOGLE.COM.", "gmail"), ("mta7.am0.yahoodns.net", "yahoo"),
     ("hotmail.com", "microsoft"), ("icloud.com", "apple"), ("example.org", "default"),
     ("notgmail.com", "default")],
)
def test_provider_for(host: str, provider: str) -> None:
    assert RULES.provider_for(host).provider == provider


def test_yahoo_tss04_suspends_for_two_hours_then_expires() -> None:
    state = ThrottleState(ip="127.0.0.2", provider="yahoo")
    decision = on_reply(state, deferral(0, YAHOO_TSS04), RULES)
    assert decision.started is not None and decision.started.kind is ActionKind.SUSPEND
    assert decision.started.rule == "yahoo-tss04"
    limits = RULES.providers["yahoo"]
    assert effective_limits(decision.state, limits, T0 + timedelta(minutes=119)) is None
    assert effective_limits(decision.state, limits, T0 + timedelta(minutes=120)) == limits
    later = on_reply(decision.state, delivered(121), RULES)
    assert later.state.action is None and later.ended == "expired"


def test_suspension_is_not_ended_by_a_clean_delivery_nor_weakened() -> None:
    state = on_reply(ThrottleState(ip="a", provider="yahoo"), deferral(0, YAHOO_TSS04), RULES).state
    after_delivery = on_reply(state, delivered(5), RULES)
    assert after_delivery.state.action is not None and after_delivery.ended is None
    after_rate = state
    for minute in (1, 2, 3):
        after_rate = on_reply(after_rate, deferral(minute, RATE_LIMITED), RULES).state
    assert after_rate.action is not None and after_rate.action.kind is ActionKind.SUSPEND


def test_generic_rate_limit_needs_three_in_an_hour_and_slows_down() -> None:
    state = ThrottleState(ip="127.0.0.3", provider="default")
    started = []
    for minute in (0, 10, 20):
        decision = on_reply(state, deferral(minute, RATE_LIMITED), RULES)
        state = decision.state
        started.append(decision.started)
    assert started[:2] == [None, None]
    action = started[2]
    assert action is not None and action.kind is ActionKind.SLOW_DOWN
    assert action.until == T0 + timedelta(minutes=110)
    limits = effective_limits(state, RULES.providers["default"], T0 + timedelta(minutes=30))
    assert limits is not None and limits.connections == 1
    assert limits.messages_per_hour == RULES.providers["default"].messages_per_hour // 2


def test_matches_older_than_an_hour_do_not_count() -> None:
    state = ThrottleState(ip="x", provider="default")
    for minute in (0, 61, 122):
        decision = on_reply(state, deferral(minute, RATE_LIMITED), RULES)
        state = decision.state
        assert decision.started is None


def test_first_clean_delivery_ends_a_slow_down() -> None:
    state = ThrottleState(ip="x", provider="default")
    for minute in (0, 1, 2):
        state = on_reply(state, deferral(minute, RATE_LIMITED), RULES).state
    assert state.action is not None
    decision = on_reply(state, delivered(3), RULES)
    assert decision.state.action is None and decision.ended == "clean delivery"
    assert effective_limits(decision.state, RULES.providers["default"], T0) == RULES.providers["default"]


def test_provider_specific_rule_does_not_fire_for_other_providers() -> None:
    decision = on_reply(ThrottleState(ip="x", provider="gmail"), deferral(0, YAHOO_TSS04), RULES)
    assert decision.started is None


def test_unmatched_deferrals_are_not_counted() -> None:
    decision = on_reply(ThrottleState(ip="x", provider="default"), deferral(0, "450 mailbox busy"), RULES)
    assert decision.state.matches == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[", "not valid TOML"),
        ("[providers.gmail]\nconnections=1\nmessages_per_connection=1\nmessages_per_hour=1", "providers.default"),
        ("[providers.default]\nconnections=0\nmessages_per_connection=1\nmessages_per_hour=1", "'connections'"),
        (
            "[providers.default]\nconnections=1\nmessages_per_connection=1\nmessages_per_hour=1\n"
            "[[deferral_rules]]\nname='x'\nprovider='nope'\npattern='a'\nthreshold_per_hour=1\n"
            "action='suspend'\nminutes=1",
            "unknown provider",
        ),
        (
            "[providers.default]\nconnections=1\nmessages_per_connection=1\nmessages_per_hour=1\n"
            "[[deferral_rules]]\nname='x'\npattern='('\nthreshold_per_hour=1\naction='suspend'\nminutes=1",
            "bad pattern",
        ),
        (
            "[providers.default]\nconnections=1\nmessages_per_connection=1\nmessages_per_hour=1\n"
            "[[deferral_rules]]\nname='x'\npattern='a'\nthreshold_per_hour=1\naction='pause'\nminutes=1",
            "'action'",
        ),
        (
            "[providers.default]\nconnections=1\nmessages_per_connection=1\nmessages_per_hour=1\n"
            "[[deferral_rules]]\nname='x'\npattern='a'\nthreshold_per_hour=1\naction='slow_down'\n"
            "minutes=1\nrate_factor=2",
            "rate_factor",
        ),
    ],
)
def test_bad_rule_files(text: str, message: str) -> None:
    with pytest.raises(RuleFileError, match=message):
        parse_throttle_rules(text)


@given(st.text(max_size=300))
def test_parser_raises_only_rule_file_error(text: str) -> None:
    try:
        parse_throttle_rules(text)
    except RuleFileError:
        return


@given(st.lists(st.tuples(st.booleans(), st.sampled_from([YAHOO_TSS04, RATE_LIMITED, "450 busy"]),
                          st.integers(0, 30)), max_size=40))
def test_limits_never_exceed_the_provider_limits(steps: list[tuple[bool, str, int]]) -> None:
    state = ThrottleState(ip="x", provider="yahoo")
    limits = RULES.providers["yahoo"]
    at = T0
    for ok, text, gap in steps:
        at += timedelta(minutes=gap)
        state = on_reply(state, ReplyEvent(at=at, delivered=ok, text=text), RULES).state
        now_limits = effective_limits(state, limits, at)
        if now_limits is not None:
            assert now_limits.connections <= limits.connections
            assert 1 <= now_limits.messages_per_hour <= limits.messages_per_hour
