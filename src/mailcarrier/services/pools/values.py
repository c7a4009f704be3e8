"""The values the pool use-cases return: pools, sending IPs, the source IP picked for a
message, reputation events, applications, throttle actions, blocklist results.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mailcarrier.domain.dns_checks import Check
from mailcarrier.domain.pools import PoolKind
from mailcarrier.domain.reputation_signals import SignalKind
from mailcarrier.domain.throttle_rules import (
    ActionKind,
)
from mailcarrier.domain.warmup import (
    WarmupState,
)

__all__ = [
    "Application",
    "DnsblResult",
    "Pool",
    "ReputationEvent",
    "SendingIp",
    "SourcePick",
    "ThrottleLogEntry",
]

@dataclass(frozen=True, slots=True)
class Pool:
    id: int
    name: str
    kind: PoolKind
    description: str


@dataclass(frozen=True, slots=True)
class SendingIp:
    id: int
    address: str
    pool_id: int
    hostname: str
    enabled: bool
    warmup: WarmupState


@dataclass(frozen=True, slots=True)
class SourcePick:
    """Where the next message to ``provider`` may leave from.

    ``address`` is None when no IP of the account's pool (nor the overflow pool) may send
    now; ``reasons`` then say why per IP, so the message waits with an explanation.
    ``overflow`` is true when the address belongs to the warm overflow pool.
    """

    address: str | None
    provider: str
    connections: int
    messages_per_connection: int
    pool: str | None
    overflow: bool
    reasons: tuple[str, ...]
    reserved: int = 0  #: messages counted against ``address`` by this call (see ``batch``)
    #: pool addresses with deferral-automation state for the provider (counted replies or an action)
    throttled: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReputationEvent:
    id: int
    kind: SignalKind
    ip_address: str | None
    account: str | None
    blocklist: str
    source: str
    evidence: str
    occurred_at: datetime
    resolved_at: datetime | None
    neighbours: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Application:
    id: int
    account_id: int
    kind: PoolKind
    state: str
    eligible: bool
    reasons: tuple[str, ...]
    requested_at: datetime
    decided_at: datetime | None
    decided_by: str | None


@dataclass(frozen=True, slots=True)
class ThrottleLogEntry:
    ip_address: str
    provider: str
    rule: str
    kind: ActionKind
    started_at: datetime
    until: datetime
    ended_at: datetime | None
    end_reason: str | None
    trigger: str


@dataclass(frozen=True, slots=True)
class DnsblResult:
    ip_address: str
    check: Check
    new_listing: bool
