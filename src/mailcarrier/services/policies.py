"""Frozen domain policies built from the operator's settings, and per account.

An account may override some thresholds (:data:`ACCOUNT_THRESHOLDS`: seed 004's B2B sender
with an 11% hard-bounce rate is not a spammer) and choose its contact policy preset
(:class:`~mailcarrier.domain.contact_status.ContactPolicy`); what it does not set comes
from the operator's settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from mailcarrier.config import LEAVES, Settings
from mailcarrier.domain.contact_status import ContactPolicy, StatusPolicy
from mailcarrier.domain.errors import InvalidInputError
from mailcarrier.domain.outbound_targets import TargetPolicy
from mailcarrier.domain.pools import PoolPolicy
from mailcarrier.domain.warmup import WarmupLimits, WarmupSchedule, load_schedules

__all__ = [
    "ACCOUNT_THRESHOLDS",
    "account_pool_policy",
    "account_settings",
    "account_status_policy",
    "contact_policy",
    "pool_policy",
    "status_policy",
    "validate_thresholds",
    "warmup_limits",
    "warmup_schedule",
    "webhook_target_policy",
]

#: Settings an account may set for itself (same names, ranges and meaning as the settings).
ACCOUNT_THRESHOLDS = (
    "status_soft_bounce_mailings", "status_block_limit", "filtering_reject_share",
    "filtering_min_rejected", "filtering_recent_days", "max_bounce_rate", "max_complaint_rate",
    "pool_trap_lookback_days", "pool_trusted_max_messages_30d", "pool_dedicated_min_messages_30d",
)


def _thresholds_model() -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name in ACCOUNT_THRESHOLDS:
        setting = LEAVES[name].field
        # the setting's type and range (ge/le...), optional: None removes an override
        fields[name] = (Annotated[(setting.annotation | None, *setting.metadata)], None)  # type: ignore[operator]
    return create_model("AccountThresholds", __config__=ConfigDict(extra="forbid"), **fields)


_THRESHOLDS = _thresholds_model()


def validate_thresholds(values: Mapping[str, Any]) -> dict[str, Any]:
    """The account thresholds, checked against the settings' ranges; ValueError says which
    name or value is wrong (a null value removes the override)."""
    try:
        checked = _THRESHOLDS.model_validate(dict(values))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'thresholds'}: {e['msg']}"
                             for e in exc.errors())
        raise InvalidInputError(f"invalid account thresholds ({problems}); allowed: "
                         f"{', '.join(ACCOUNT_THRESHOLDS)}") from None
    return {k: v for k, v in checked.model_dump().items() if v is not None}


def contact_policy(name: str) -> ContactPolicy:
    """A preset by name; ValueError listing the presets otherwise."""
    try:
        return ContactPolicy(name)
    except ValueError:
        choices = ", ".join(p.value for p in ContactPolicy)
        raise InvalidInputError(f"unknown contact policy {name!r}; choose one of {choices}") from None


def account_settings(settings: Settings, thresholds: Mapping[str, Any]) -> Settings:
    """The operator's settings with an account's own thresholds on top."""
    own = {k: v for k, v in thresholds.items() if k in ACCOUNT_THRESHOLDS}
    return settings.with_values(**own) if own else settings


def account_status_policy(base: StatusPolicy, preset: str,
                          thresholds: Mapping[str, Any]) -> StatusPolicy:
    """``base`` (the operator's status policy) with an account's preset and thresholds."""
    names = {"status_soft_bounce_mailings": "soft_bounce_mailings_to_error",
             "status_block_limit": "blocks_to_error", "filtering_reject_share": "filtering_reject_share",
             "filtering_min_rejected": "filtering_min_rejected",
             "filtering_recent_days": "filtering_recent_days"}
    changes: dict[str, Any] = {names[k]: v for k, v in thresholds.items() if k in names}
    with suppress(ValueError):  # an unknown stored value keeps the operator's preset
        changes["preset"] = ContactPolicy(preset)
    if all(getattr(base, k) == v for k, v in changes.items()):
        return base
    return StatusPolicy(**{**{f: getattr(base, f) for f in StatusPolicy.__dataclass_fields__}, **changes})


def account_pool_policy(base: PoolPolicy, thresholds: Mapping[str, Any]) -> PoolPolicy:
    """``base`` (the operator's pool policy) with an account's own thresholds."""
    names = {"max_bounce_rate": "max_bounce_rate", "max_complaint_rate": "max_complaint_rate",
             "pool_trap_lookback_days": "trap_lookback_days",
             "pool_trusted_max_messages_30d": "trusted_max_messages_30d",
             "pool_dedicated_min_messages_30d": "dedicated_min_messages_30d"}
    changes = {names[k]: v for k, v in thresholds.items() if k in names}
    if not changes:
        return base
    return PoolPolicy(**{**{f: getattr(base, f) for f in PoolPolicy.__dataclass_fields__}, **changes})


def status_policy(settings: Settings) -> StatusPolicy:
    """The status policy with the operator's thresholds."""
    return StatusPolicy(
        soft_bounce_mailings_to_error=settings.contacts.status_soft_bounce_mailings,
        blocks_to_error=settings.contacts.status_block_limit,
        filtering_reject_share=settings.contacts.filtering_reject_share,
        filtering_min_rejected=settings.contacts.filtering_min_rejected,
        filtering_recent_days=settings.contacts.filtering_recent_days,
    )


def pool_policy(settings: Settings) -> PoolPolicy:
    return PoolPolicy(
        trap_lookback_days=settings.pools.trap_lookback_days,
        trusted_max_messages_30d=settings.pools.trusted_max_messages_30d,
        dedicated_min_messages_30d=settings.pools.dedicated_min_messages_30d,
        max_complaint_rate=settings.pools.max_complaint_rate,
        max_bounce_rate=settings.pools.max_bounce_rate,
    )


def warmup_limits(settings: Settings) -> WarmupLimits:
    return WarmupLimits(
        idle_restart_days=settings.pools.warmup_idle_restart_days,
        max_bounce_rate=settings.pools.max_bounce_rate,
        max_complaint_rate=settings.pools.max_complaint_rate,
    )


def warmup_schedule(settings: Settings) -> WarmupSchedule:
    """The configured schedule (its name was checked against the shipped ones at load)."""
    return load_schedules()[settings.pools.warmup_schedule]


def webhook_target_policy(settings: Settings) -> TargetPolicy:
    """Where webhooks may be sent: public https URLs, plus what the operator allows."""
    return TargetPolicy.allowing(settings.webhooks.allow_http, settings.webhooks.internal_hosts)
