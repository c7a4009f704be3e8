"""Frozen domain policies built from the operator's settings."""

from __future__ import annotations

from mailcarrier.config import Settings
from mailcarrier.domain.contact_status import StatusPolicy
from mailcarrier.domain.errors import ConfigurationError
from mailcarrier.domain.outbound_targets import TargetPolicy
from mailcarrier.domain.pools import PoolPolicy
from mailcarrier.domain.warmup import WarmupLimits, WarmupSchedule, load_schedules

__all__ = ["pool_policy", "status_policy", "warmup_limits", "warmup_schedule", "webhook_target_policy"]


def status_policy(settings: Settings) -> StatusPolicy:
    """The status policy with the operator's thresholds."""
    return StatusPolicy(
        soft_bounce_mailings_to_error=settings.status_soft_bounce_mailings,
        blocks_to_error=settings.status_block_limit,
        filtering_reject_share=settings.filtering_reject_share,
        filtering_min_rejected=settings.filtering_min_rejected,
        filtering_recent_days=settings.filtering_recent_days,
    )


def pool_policy(settings: Settings) -> PoolPolicy:
    return PoolPolicy(
        trap_lookback_days=settings.pool_trap_lookback_days,
        trusted_max_messages_30d=settings.pool_trusted_max_messages_30d,
        dedicated_min_messages_30d=settings.pool_dedicated_min_messages_30d,
        max_complaint_rate=settings.max_complaint_rate,
        max_bounce_rate=settings.max_bounce_rate,
    )


def warmup_limits(settings: Settings) -> WarmupLimits:
    return WarmupLimits(
        idle_restart_days=settings.warmup_idle_restart_days,
        max_bounce_rate=settings.max_bounce_rate,
        max_complaint_rate=settings.max_complaint_rate,
    )


def warmup_schedule(settings: Settings) -> WarmupSchedule:
    """The configured schedule; an unknown name is a configuration error listing the choices."""
    schedules = load_schedules()
    try:
        return schedules[settings.warmup_schedule]
    except KeyError:
        choices = ", ".join(sorted(schedules))
        raise ConfigurationError(
            f"MAILCARRIER_WARMUP_SCHEDULE={settings.warmup_schedule!r} is unknown; choose one of {choices}"
        ) from None


def webhook_target_policy(settings: Settings) -> TargetPolicy:
    """Where webhooks may be sent: public https URLs, plus what the operator allows."""
    return TargetPolicy.from_setting(settings.webhook_allow_http, settings.webhook_internal_hosts)
