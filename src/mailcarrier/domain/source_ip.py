"""Which source IP of an account's pool carries the next message to a provider.

Combines the warm-up allowance (spread over the day) and the throttle automation's
state for the (IP, provider) pair. Pure: the worker passes in counters and ``now``; a
None choice comes with reasons so the message waits (or overflows to a warm shared
pool, per setting) with an explanation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from mailcarrier.domain.throttle_rules import ProviderLimits, ThrottleState, effective_limits
from mailcarrier.domain.warmup import hourly_allowance

__all__ = ["IpStatus", "SourceChoice", "choose_source_ip"]


@dataclass(frozen=True, slots=True)
class IpStatus:
    """One pool IP as the worker sees it now.

    ``daily_cap`` is the warm-up cap for today (None: warm); ``sent_today`` counts all
    messages the IP carried today; ``sent_this_hour`` those to this provider this hour.
    """

    ip: str
    daily_cap: int | None
    sent_today: int
    sent_this_hour: int = 0
    throttle: ThrottleState | None = None


@dataclass(frozen=True, slots=True)
class SourceChoice:
    ip: str | None
    connections: int
    reasons: tuple[str, ...]


def choose_source_ip(
    pool: Sequence[IpStatus], limits: ProviderLimits, now: datetime
) -> SourceChoice:
    """The IP with the most room left; None with one reason per IP when none may send."""
    best: tuple[float, int, str, int] | None = None
    reasons: list[str] = []
    for status in pool:
        in_force = limits if status.throttle is None else effective_limits(status.throttle, limits, now)
        if in_force is None:
            reasons.append(f"{status.ip}: {limits.provider} suspended by deferral automation")
            continue
        hourly_room = in_force.messages_per_hour - status.sent_this_hour
        if hourly_room <= 0:
            cap = in_force.messages_per_hour
            reasons.append(f"{status.ip}: hourly limit {cap} to {limits.provider} reached")
            continue
        allowance = hourly_allowance(status.daily_cap, status.sent_today, now)
        if allowance == 0:
            reasons.append(f"{status.ip}: warm-up allowance used (cap {status.daily_cap} today)")
            continue
        room = min(hourly_room, allowance) if allowance is not None else hourly_room
        key = (-float(room), status.sent_today, status.ip, in_force.connections)
        if best is None or key[:3] < best[:3]:
            best = key
    if best is None:
        return SourceChoice(ip=None, connections=0, reasons=tuple(reasons or ["the pool has no IPs"]))
    return SourceChoice(ip=best[2], connections=best[3], reasons=tuple(reasons))
