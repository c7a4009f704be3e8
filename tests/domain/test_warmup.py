"""Warm-up ramp: caps by day, spreading over the day, holds and idle restarts."""

from __future__ import annotations

import contextlib
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailcarrier.domain.errors import ConfigurationError, RuleFileError
from mailcarrier.domain.warmup import (
    DayStats,
    WarmupLimits,
    WarmupState,
    advance,
    daily_cap,
    hourly_allowance,
    load_schedules,
    parse_schedules,
    start,
)

LIMITS = WarmupLimits()
DAY1 = date(2026, 11, 1)


def test_shipped_schedules() -> None:
    schedules = load_schedules()
    assert set(schedules) == {"conservative", "standard", "aggressive"}
    for schedule in schedules.values():
        assert list(schedule.daily) == sorted(schedule.daily)
    assert schedules["conservative"].daily[0] < schedules["standard"].daily[0] < schedules["aggressive"].daily[0]


@pytest.mark.parametrize(
    ("schedule", "day", "cap"),
    [("standard", 1, 200), ("standard", 2, 500), ("conservative", 1, 50), ("aggressive", 14, 1_000_000),
     ("aggressive", 15, None)],
)
def test_daily_cap_by_day(schedule: str, day: int, cap: int | None) -> None:
    state = WarmupState(schedule=schedule, day=day, as_of=DAY1)
    assert daily_cap(load_schedules()[schedule], state) == cap


# Each row: the stats of "yesterday" fed in on successive days, and the expected ramp day after.
@pytest.mark.parametrize(
    ("days", "expected_days", "expected_held"),
    [
        ([DayStats(200), DayStats(500)], [2, 3], [False, False]),
        ([DayStats(200, bounced=11)], [1], [True]),  # 5.5 % bounces: hold
        ([DayStats(200, bounced=10)], [2], [False]),  # exactly 5 %: step
        ([DayStats(1000, complained=2), DayStats(1000)], [1, 2], [True, False]),
        ([DayStats(0), DayStats(100)], [2, 3], [False, False]),
    ],
)
def test_advance_sequences(days: list[DayStats], expected_days: list[int], expected_held: list[bool]) -> None:
    state = start("standard", DAY1)
    for offset, stats in enumerate(days, start=1):
        state = advance(state, DAY1 + timedelta(days=offset), stats, LIMITS)
        assert state.day == expected_days[offset - 1]
        assert state.held is expected_held[offset - 1]


def test_same_day_advance_is_idempotent() -> None:
    state = start("standard", DAY1)
    assert advance(state, DAY1, DayStats(100, bounced=100), LIMITS) == state


def test_idle_thirty_days_restarts_the_ramp() -> None:
    state = WarmupState(schedule="standard", day=12, as_of=DAY1, last_sent_on=DAY1)
    after_29 = advance(state, DAY1 + timedelta(days=29), None, LIMITS)
    assert after_29.day == 12 + 29
    after_30 = advance(state, DAY1 + timedelta(days=30), None, LIMITS)
    assert after_30.day == 1 and after_30.as_of == DAY1 + timedelta(days=30)


def test_sending_yesterday_keeps_the_ip_warm() -> None:
    state = WarmupState(schedule="standard", day=5, as_of=DAY1, last_sent_on=DAY1 - timedelta(days=40))
    assert advance(state, DAY1 + timedelta(days=1), DayStats(50), LIMITS).day == 6


@pytest.mark.parametrize(
    ("hour", "sent", "allowed"),
    [(0, 0, 10), (0, 10, 0), (11, 0, 120), (11, 100, 20), (23, 0, 240), (23, 240, 0), (23, 500, 0)],
)
def test_hourly_allowance_spreads_the_cap(hour: int, sent: int, allowed: int) -> None:
    now = datetime(2026, 11, 1, hour, 30, tzinfo=UTC)
    assert hourly_allowance(240, sent, now) == allowed


def test_no_cap_means_no_allowance_limit() -> None:
    assert hourly_allowance(None, 10**9, datetime(2026, 11, 1, tzinfo=UTC)) is None


@given(cap=st.integers(1, 10**7), hour=st.integers(0, 23), sent=st.integers(0, 10**8))
def test_allowance_never_exceeds_the_daily_cap(cap: int, hour: int, sent: int) -> None:
    allowed = hourly_allowance(cap, sent, datetime(2026, 1, 1, hour, tzinfo=UTC))
    assert allowed is not None and 0 <= allowed <= cap and allowed + sent <= max(cap, sent)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not toml [", "not valid TOML"),
        ("x = 1", "non-empty \\[schedules"),
        ("[schedules.a]\ndaily = []", "positive integers"),
        ("[schedules.a]\ndaily = [1, -2]", "positive integers"),
        ("[schedules.a]\ndaily = [5, 3]", "never decrease"),
        ("[schedules.a]\ndaily = 'many'", "positive integers"),
    ],
)
def test_bad_schedule_files_are_rule_file_errors(text: str, message: str) -> None:
    with pytest.raises(RuleFileError, match=message):
        parse_schedules(text)


@given(st.text(max_size=200))
def test_parse_schedules_only_raises_rule_file_error(text: str) -> None:
    with contextlib.suppress(RuleFileError):
        parse_schedules(text)


def test_invalid_limits() -> None:
    with pytest.raises(ConfigurationError):
        WarmupLimits(idle_restart_days=0)
