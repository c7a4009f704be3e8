"""Eligibility engine: table-driven cases through the public ``evaluate`` function."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailcarrier.domain.errors import ConfigurationError
from mailcarrier.domain.pools import AccountRecord, PoolKind, PoolPolicy, evaluate

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
POLICY = PoolPolicy()


def record(**overrides: object) -> AccountRecord:
    fields: dict[str, object] = {"account": "acme", "current_pool": PoolKind.SHARED, "messages_30d": 10_000}
    fields.update(overrides)
    return AccountRecord(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "pool", "trusted_eligible", "demoted", "dedicated", "reason_part"),
    [
        ({}, PoolKind.SHARED, True, False, False, "eligible for the trusted pool"),
        ({"current_pool": PoolKind.TRUSTED}, PoolKind.TRUSTED, True, False, False, "clean record"),
        ({"trap_hits": (NOW - timedelta(days=30),)}, PoolKind.SHARED, False, False, False, "spam-trap hit"),
        (
            {"current_pool": PoolKind.TRUSTED, "trap_hits": (NOW - timedelta(days=364),)},
            PoolKind.SHARED, False, True, False, "spam-trap hit within 365 days",
        ),
        ({"trap_hits": (NOW - timedelta(days=366),)}, PoolKind.SHARED, True, False, False, "clean record"),
        ({"trap_hits": (NOW + timedelta(days=1),)}, PoolKind.SHARED, True, False, False, "clean record"),
        ({"messages_30d": 74_999}, PoolKind.SHARED, True, False, False, "clean record"),
        ({"messages_30d": 75_000}, PoolKind.SHARED, False, False, False, "fewer than 75000"),
        (
            {"current_pool": PoolKind.TRUSTED, "messages_30d": 80_000},
            PoolKind.SHARED, False, False, False, "fewer than 75000",
        ),
        ({"messages_30d": 100_000}, PoolKind.SHARED, False, False, False, "fewer than 75000"),
        ({"messages_30d": 100_001}, PoolKind.SHARED, False, False, True, "dedicated IP is recommended"),
        (
            {"current_pool": PoolKind.DEDICATED, "messages_30d": 200_000},
            PoolKind.DEDICATED, False, False, True, "dedicated IP is recommended",
        ),
        (
            # a dedicated sender is never moved to shared: quarantined on its own IPs
            {"current_pool": PoolKind.DEDICATED, "messages_30d": 200_000, "complaints_30d": 1_000},
            PoolKind.DEDICATED, False, False, False, "never moved to shared",
        ),
        ({"complaints_30d": 10}, PoolKind.SHARED, True, False, False, "clean record"),
        ({"complaints_30d": 11}, PoolKind.SHARED, False, False, False, "complaint rate 0.110%"),
        ({"bounces_30d": 500}, PoolKind.SHARED, True, False, False, "clean record"),
        (
            {"current_pool": PoolKind.TRUSTED, "bounces_30d": 501},
            PoolKind.SHARED, False, True, False, "bounce rate 5.01% above the limit 5.00% (mailcarrier's own",
        ),
        (
            {"current_pool": PoolKind.TRUSTED, "unconsented_sources": ("bought-list.csv",)},
            PoolKind.SHARED, False, False, False, "without opt-in consent: bought-list.csv",
        ),
        ({"messages_30d": 0}, PoolKind.SHARED, True, False, False, "clean record"),
    ],
)
def test_evaluate(
    overrides: dict[str, object],
    pool: PoolKind,
    trusted_eligible: bool,
    demoted: bool,
    dedicated: bool,
    reason_part: str,
) -> None:
    result = evaluate(record(**overrides), POLICY, NOW)
    assert result.pool is pool
    assert result.trusted_eligible is trusted_eligible
    assert result.demoted is demoted
    assert result.recommend_dedicated is dedicated
    assert any(reason_part in reason for reason in result.reasons), result.reasons


def test_every_fault_is_reported() -> None:
    result = evaluate(
        record(
            current_pool=PoolKind.TRUSTED,
            trap_hits=(NOW - timedelta(days=1),),
            complaints_30d=100,
            bounces_30d=1_000,
            unconsented_sources=("import-2024",),
        ),
        POLICY,
        NOW,
    )
    assert len(result.reasons) == 4


def test_policy_thresholds_are_configurable() -> None:
    strict = PoolPolicy(trusted_max_messages_30d=5_000, dedicated_min_messages_30d=50_000)
    assert not evaluate(record(), strict, NOW).trusted_eligible
    assert evaluate(record(messages_30d=60_000), strict, NOW).recommend_dedicated


@pytest.mark.parametrize(
    "bad",
    [
        {"trap_lookback_days": 0},
        {"trusted_max_messages_30d": 200_000},
        {"max_complaint_rate": 1.5},
        {"max_bounce_rate": -0.1},
    ],
)
def test_invalid_policy_is_a_configuration_error(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        PoolPolicy(**bad)  # type: ignore[arg-type]


def test_negative_counts_are_rejected() -> None:
    with pytest.raises(ValueError, match="messages_30d"):
        record(messages_30d=-1)
