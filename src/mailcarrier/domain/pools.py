"""Pool eligibility: which kind of sending-IP pool an account has earned.

Tenants of a shared IP share each other's reputation, so the trusted range is reserved
for senders with a clean record and the shared range is where a trusted sender lands again
after a spam-trap hit or bad complaint/bounce rates. A *dedicated* sender is never moved to
shared: that would hand its damage to the neighbours seed 000 warns about ("if you leave a
candle unattended and burn the place down, you have no one to blame but yourself"). It stays
on its own IPs, *quarantined*: the shell throttles them (their warm-up ramp restarts at day
1) while the faults last.

Seed 000's trusted criteria are no spam-trap hit in 12 months, fewer than 75,000 messages a
month and opted-in lists. The bounce-rate and complaint-rate limits are this project's own
additions, and every reason they produce says so; both are account-configurable (seed 004:
an 11% hard-bounce rate can be normal in B2B). The engine is a pure function of the
account's record, a frozen policy and ``now``; every verdict carries its reasons so an
operator (and the account) can see why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from mailcarrier.domain.errors import ConfigurationError

__all__ = [
    "AccountRecord",
    "Eligibility",
    "PoolKind",
    "PoolPolicy",
    "evaluate",
]


class PoolKind(StrEnum):
    """The three kinds of pool an account can send from."""

    SHARED = "shared"
    TRUSTED = "trusted"
    DEDICATED = "dedicated"


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    """Thresholds of the eligibility engine; defaults are the product's published values."""

    trap_lookback_days: int = 365
    trusted_max_messages_30d: int = 75_000
    dedicated_min_messages_30d: int = 100_000
    max_complaint_rate: float = 0.001
    max_bounce_rate: float = 0.05

    def __post_init__(self) -> None:
        if self.trap_lookback_days < 1:
            raise ConfigurationError("trap_lookback_days must be at least 1")
        if not 0 < self.trusted_max_messages_30d <= self.dedicated_min_messages_30d:
            raise ConfigurationError(
                "need 0 < trusted_max_messages_30d <= dedicated_min_messages_30d"
            )
        for name in ("max_complaint_rate", "max_bounce_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigurationError(f"{name} must be a fraction between 0 and 1, got {value}")


@dataclass(frozen=True, slots=True)
class AccountRecord:
    """What the engine needs to know about one account, gathered by the storage layer.

    ``messages_30d``, ``bounces_30d`` and ``complaints_30d`` count the last 30 days;
    ``trap_hits`` are the moments the account's mail hit a spam trap;
    ``unconsented_sources`` names audience sources without recorded opt-in
    (purchased or imported-without-consent lists).
    """

    account: str
    current_pool: PoolKind
    messages_30d: int
    bounces_30d: int = 0
    complaints_30d: int = 0
    trap_hits: tuple[datetime, ...] = ()
    unconsented_sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("messages_30d", "bounces_30d", "complaints_30d"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} cannot be negative")


@dataclass(frozen=True, slots=True)
class Eligibility:
    """The engine's verdict: the pool the account belongs in, and why.

    ``demoted`` is true when the account sits in trusted today and must go back to shared;
    ``quarantined`` when a dedicated sender has faults: it stays on its own IPs, held;
    ``recommend_dedicated`` flags volume that deserves its own IP.
    """

    account: str
    pool: PoolKind
    trusted_eligible: bool
    demoted: bool
    recommend_dedicated: bool
    reasons: tuple[str, ...]
    quarantined: bool = False


def evaluate(record: AccountRecord, policy: PoolPolicy, now: datetime) -> Eligibility:
    """Decide the account's pool from its record, the policy and the current time."""
    faults = tuple(_faults(record, policy, now))
    blockers = tuple(_trusted_blockers(record, policy))
    recommend_dedicated = record.messages_30d > policy.dedicated_min_messages_30d
    reasons: list[str] = [*faults, *blockers]
    quarantined = bool(faults) and record.current_pool is PoolKind.DEDICATED
    if record.current_pool is PoolKind.DEDICATED:
        pool = PoolKind.DEDICATED  # never onto the neighbours' shared IPs
        if quarantined:
            reasons.append("dedicated sender kept on its own IPs, quarantined: throttled (warm-up "
                           "restarted) while the faults last; never moved to shared, where the "
                           "damage would fall on the neighbours")
    elif faults:
        pool = PoolKind.SHARED
    elif record.current_pool is PoolKind.TRUSTED and not blockers:
        pool = PoolKind.TRUSTED
    else:
        pool = PoolKind.SHARED
    demoted = bool(faults) and record.current_pool is PoolKind.TRUSTED
    if recommend_dedicated:
        reasons.append(
            f"{record.messages_30d} messages in 30 days exceeds "
            f"{policy.dedicated_min_messages_30d}: a dedicated IP is recommended"
        )
    if not reasons:
        reasons.append("clean record: eligible for the trusted pool")
    return Eligibility(
        account=record.account,
        pool=pool,
        trusted_eligible=not faults and not blockers,
        demoted=demoted,
        recommend_dedicated=recommend_dedicated and not faults,
        reasons=tuple(reasons),
        quarantined=quarantined,
    )


def _faults(record: AccountRecord, policy: PoolPolicy, now: datetime) -> Iterable[str]:
    """Reasons that send an account back to shared whatever pool it is in."""
    since = now - timedelta(days=policy.trap_lookback_days)
    recent = [hit for hit in record.trap_hits if since <= hit <= now]
    if recent:
        latest = max(recent).date().isoformat()
        yield f"spam-trap hit within {policy.trap_lookback_days} days (latest {latest})"
    if record.messages_30d:
        complaint_rate = record.complaints_30d / record.messages_30d
        if complaint_rate > policy.max_complaint_rate:
            yield (
                f"complaint rate {complaint_rate:.3%} above the limit {policy.max_complaint_rate:.3%} "
                f"({_OWN})"
            )
        bounce_rate = record.bounces_30d / record.messages_30d
        if bounce_rate > policy.max_bounce_rate:
            yield (f"bounce rate {bounce_rate:.2%} above the limit {policy.max_bounce_rate:.2%} "
                   f"({_OWN})")


#: The rate limits are not among seed 000's trusted criteria: say whose they are.
_OWN = "mailcarrier's own criterion, beyond the published trusted-IP rules; account-configurable"


def _trusted_blockers(record: AccountRecord, policy: PoolPolicy) -> Iterable[str]:
    """Reasons that keep a clean account out of the trusted pool."""
    if record.messages_30d >= policy.trusted_max_messages_30d:
        yield (
            f"{record.messages_30d} messages in 30 days: trusted requires fewer than "
            f"{policy.trusted_max_messages_30d}"
        )
    if record.unconsented_sources:
        names = ", ".join(sorted(record.unconsented_sources))
        yield f"audience sources without opt-in consent: {names}"
