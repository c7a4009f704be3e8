"""Choosing the source IP for a message: each IP of the account's pool with its warm-up room
and throttle state, the choice itself made by ``domain.source_ip``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from sqlalchemy import Connection, select

from mailcarrier.domain.errors import InvalidInputError
from mailcarrier.domain.source_ip import IpStatus
from mailcarrier.domain.source_ip import choose_source_ip as choose_from_statuses
from mailcarrier.domain.throttle_rules import (
    ProviderLimits,
    ThrottleRules,
    effective_limits,
    load_throttle_rules,
)
from mailcarrier.domain.warmup import (
    WarmupLimits,
    daily_cap,
    hourly_allowance,
    load_schedules,
)
from mailcarrier.services.pools.membership import current_pool, pool_by_name, pool_ips
from mailcarrier.services.pools.throttling import throttle_state
from mailcarrier.services.pools.values import Pool, SendingIp, SourcePick
from mailcarrier.services.pools.warmup import advanced_state, count_send, hour_of, lock_pools
from mailcarrier.storage.pool_tables import (
    ip_daily_volume,
    ip_hourly_volume,
    throttle_states,
)

__all__ = [
    "choose_source_ip",
]

def _statuses(conn: Connection, ips: Sequence[SendingIp], provider: str, now: datetime,
              limits: WarmupLimits) -> tuple[list[IpStatus], dict[str, SendingIp], tuple[str, ...]]:
    """Each enabled IP's cap, counters and throttle state (one query per kind, not per IP)."""
    schedules = load_schedules()
    enabled = [ip for ip in ips if ip.enabled]
    ids = [ip.id for ip in enabled]
    sent_today = dict(conn.execute(select(ip_daily_volume.c.ip_id, ip_daily_volume.c.sent).where(
        ip_daily_volume.c.ip_id.in_(ids), ip_daily_volume.c.day == now.date())).all())
    sent_hour = dict(conn.execute(select(ip_hourly_volume.c.ip_id, ip_hourly_volume.c.sent).where(
        ip_hourly_volume.c.ip_id.in_(ids), ip_hourly_volume.c.provider == provider,
        ip_hourly_volume.c.hour == hour_of(now))).all())
    throttled = set(conn.execute(select(throttle_states.c.ip_id).where(
        throttle_states.c.ip_id.in_(ids), throttle_states.c.provider == provider)).scalars())
    statuses, by_address = [], {}
    for ip in enabled:
        state = advanced_state(conn, ip, now.date(), limits)
        schedule = schedules.get(state.schedule)
        cap = daily_cap(schedule, state) if schedule is not None else None
        throttle = throttle_state(conn, ip, provider, now) if ip.id in throttled else None
        statuses.append(IpStatus(ip=ip.address, daily_cap=cap, sent_today=int(sent_today.get(ip.id, 0)),
                                 sent_this_hour=int(sent_hour.get(ip.id, 0)), throttle=throttle))
        by_address[ip.address] = replace(ip, warmup=state)
    return statuses, by_address, tuple(ip.address for ip in enabled if ip.id in throttled)


def _room(status: IpStatus, limits: ProviderLimits, now: datetime) -> int:
    """How many more messages the IP may carry to the provider this hour (at least 1 once chosen)."""
    in_force = limits if status.throttle is None else effective_limits(status.throttle, limits, now)
    if in_force is None:
        return 1
    room = in_force.messages_per_hour - status.sent_this_hour
    allowance = hourly_allowance(status.daily_cap, status.sent_today, now)
    return max(1, min(room, allowance) if allowance is not None else room)


def choose_source_ip(conn: Connection, account_id: int, destination: str, now: datetime, *,
                     warmup_limits: WarmupLimits | None = None, rules: ThrottleRules | None = None,
                     overflow_pool: str | None = None, reserve: bool = True, batch: int = 1) -> SourcePick:
    """The source IP for the next message of the account to ``destination`` (domain or MX host).

    Looks at the account's pool; when no IP there may send (warm-up caps, hourly limits,
    suspensions) and ``overflow_pool`` names a warm pool, tries that one. With
    ``reserve`` the message is counted against the chosen IP at once, so concurrent
    callers cannot overshoot a warm-up cap; ``batch`` > 1 reserves up to that many messages
    on the chosen IP at once (never more than its room this hour), for a caller that hands
    them out itself and gives back what it did not use (:func:`release_reserved`).
    ``address`` None means wait; ``reasons`` say why.
    """
    if batch < 1:
        raise InvalidInputError("batch must be at least 1")
    rules = rules or load_throttle_rules()
    limits = rules.provider_for(destination)
    warmup_limits = warmup_limits or WarmupLimits()
    pool = current_pool(conn, account_id)
    if pool is None:
        return SourcePick(None, limits.provider, 0, 0, None, False,
                          ("the account is not assigned to a pool (`mailcarrier pools assign`)",))
    candidates: list[tuple[Pool, bool]] = [(pool, False)]
    if overflow_pool and overflow_pool != pool.name:
        candidates.append((pool_by_name(conn, overflow_pool), True))
    lock_pools(conn, [p.id for p, _ in candidates])
    reasons: list[str] = []
    for candidate, overflow in candidates:
        statuses, by_address, throttled = _statuses(conn, pool_ips(conn, candidate.id), limits.provider,
                                                    now, warmup_limits)
        choice = choose_from_statuses(statuses, limits, now)
        reasons += [f"pool {candidate.name}: {r}" for r in choice.reasons] or (
            [] if choice.ip else [f"pool {candidate.name}: no enabled IPs"])
        if choice.ip is not None:
            count = 0
            if reserve:
                status = next(st for st in statuses if st.ip == choice.ip)
                count = min(batch, _room(status, limits, now))
                count_send(conn, by_address[choice.ip], limits.provider, now, count)
            return SourcePick(choice.ip, limits.provider, choice.connections, limits.messages_per_connection,
                              candidate.name, overflow, tuple(reasons), count, throttled)
    return SourcePick(None, limits.provider, 0, 0, pool.name, False, tuple(reasons))
