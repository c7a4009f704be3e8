"""Policies follow the settings (environment variables included)."""

from __future__ import annotations

import pytest

from mailcarrier.config import load_settings
from mailcarrier.domain.errors import ConfigurationError
from mailcarrier.services.policies import pool_policy, warmup_limits, warmup_schedule


def test_defaults_are_the_published_thresholds() -> None:
    policy = pool_policy(load_settings())
    assert (policy.trap_lookback_days, policy.trusted_max_messages_30d, policy.dedicated_min_messages_30d) == (
        365, 75_000, 100_000)
    assert warmup_limits(load_settings()).idle_restart_days == 30
    assert warmup_schedule(load_settings()).name == "standard"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILCARRIER_POOL_TRUSTED_MAX_MESSAGES_30D", "5000")
    monkeypatch.setenv("MAILCARRIER_WARMUP_SCHEDULE", "conservative")
    settings = load_settings()
    assert pool_policy(settings).trusted_max_messages_30d == 5000
    assert warmup_schedule(settings).daily[0] == 50


def test_unknown_schedule_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="aggressive, conservative, standard"):
        warmup_schedule(load_settings(warmup_schedule="turbo"))


def test_contradictory_thresholds_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        pool_policy(load_settings(pool_trusted_max_messages_30d=200_000))
