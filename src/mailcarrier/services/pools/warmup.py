"""Volume counters per sending IP (hourly, daily, per provider) and the warm-up state they
advance (``domain.warmup``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, case, select, update
from sqlalchemy.exc import IntegrityError

from mailcarrier.domain.errors import InvalidInputError
from mailcarrier.domain.warmup import (
    DayStats,
    WarmupLimits,
    WarmupState,
    advance,
)
from mailcarrier.services.pools.membership import ip_by_address
from mailcarrier.services.pools.values import SendingIp
from mailcarrier.storage.pool_tables import (
    ip_daily_volume,
    ip_hourly_volume,
    ip_pools,
    sending_ips,
)

__all__ = [
    "record_ip_outcome",
    "record_send",
    "release_reserved",
]

def lock_pools(conn: Connection, pool_ids: Sequence[int]) -> None:
    """Serialise choosers and reply recorders of the same pools (row locks on PostgreSQL, in id order).

    Without it two workers could both see room under a warm-up cap and overshoot it, or
    deadlock creating the same counter rows. SQLite writers are serialised already
    (``BEGIN IMMEDIATE``), so there is nothing to lock there.
    """
    if conn.dialect.name == "sqlite":
        return
    conn.execute(select(ip_pools.c.id).where(ip_pools.c.id.in_(sorted(pool_ids)))
                 .order_by(ip_pools.c.id).with_for_update()).all()


def hour_of(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0)


def _bump(conn: Connection, table: Any, keys: dict[str, Any], **increments: int) -> None:
    """Add to counters, inserting the row on first use; portable across SQLite and PostgreSQL."""
    where = [table.c[k] == v for k, v in keys.items()]
    values = {name: table.c[name] + amount for name, amount in increments.items()}
    if conn.execute(update(table).where(*where).values(**values)).rowcount:
        return
    try:
        with conn.begin_nested():
            conn.execute(table.insert().values(**keys, **increments))
    except IntegrityError:  # a concurrent writer inserted it first
        conn.execute(update(table).where(*where).values(**values))


def record_send(conn: Connection, address: str, provider: str, now: datetime) -> None:
    """Count one message carried by the IP (daily total, hourly per provider, last day used)."""
    count_send(conn, ip_by_address(conn, address), provider, now)


def count_send(conn: Connection, ip: SendingIp, provider: str, now: datetime, count: int = 1) -> None:
    _bump(conn, ip_daily_volume, {"ip_id": ip.id, "day": now.date()}, sent=count)
    _bump(conn, ip_hourly_volume, {"ip_id": ip.id, "provider": provider, "hour": hour_of(now)}, sent=count)
    if ip.warmup.last_sent_on != now.date():
        conn.execute(update(sending_ips).where(sending_ips.c.id == ip.id).values(last_sent_on=now.date()))


def release_reserved(conn: Connection, address: str, provider: str, reserved_at: datetime,
                     count: int) -> None:
    """Give back ``count`` messages reserved at ``reserved_at`` but never sent (uncount them)."""
    if count < 0:
        raise InvalidInputError("count cannot be negative")
    if count == 0:
        return
    ip = ip_by_address(conn, address)
    lock_pools(conn, [ip.pool_id])
    d, h = ip_daily_volume.c, ip_hourly_volume.c
    conn.execute(update(ip_daily_volume).where(d.ip_id == ip.id, d.day == reserved_at.date())
                 .values(sent=case((d.sent > count, d.sent - count), else_=0)))
    conn.execute(update(ip_hourly_volume).where(h.ip_id == ip.id, h.provider == provider,
                                                h.hour == hour_of(reserved_at))
                 .values(sent=case((h.sent > count, h.sent - count), else_=0)))


def record_ip_outcome(conn: Connection, address: str, day: date, *, bounced: int = 0,
                      complained: int = 0) -> None:
    """Count bounces and complaints against the day the IP sent them (they hold the ramp)."""
    if bounced < 0 or complained < 0:
        raise InvalidInputError("counts cannot be negative")
    ip = ip_by_address(conn, address)
    lock_pools(conn, [ip.pool_id])
    _bump(conn, ip_daily_volume, {"ip_id": ip.id, "day": day}, bounced=bounced, complained=complained)


def day_stats(conn: Connection, ip_id: int, day: date) -> DayStats | None:
    row = conn.execute(select(ip_daily_volume).where(ip_daily_volume.c.ip_id == ip_id,
                                                     ip_daily_volume.c.day == day)).one_or_none()
    return None if row is None else DayStats(row.sent, row.bounced, row.complained)


def advanced_state(conn: Connection, ip: SendingIp, today: date, limits: WarmupLimits) -> WarmupState:
    """Bring the IP's ramp to today and persist it (idempotent within a day)."""
    state = ip.warmup
    if today <= state.as_of:
        return state
    new = advance(state, today, day_stats(conn, ip.id, today - timedelta(days=1)), limits)
    conn.execute(update(sending_ips).where(sending_ips.c.id == ip.id).values(
        warmup_day=new.day, warmup_as_of=new.as_of, warmup_held=new.held, last_sent_on=new.last_sent_on))
    return new
