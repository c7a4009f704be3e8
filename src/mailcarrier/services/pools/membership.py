"""Pools and their IPs, and which account is on which pool (assignments are history: who was on
an IP when it was listed stays answerable).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, or_, select, update
from sqlalchemy.exc import IntegrityError

from mailcarrier.domain.errors import ConflictError, InvalidInputError, NotFoundError
from mailcarrier.domain.pools import PoolKind
from mailcarrier.domain.warmup import (
    WarmupSchedule,
    WarmupState,
)
from mailcarrier.services.pools.values import Pool, SendingIp
from mailcarrier.storage.pool_tables import (
    ip_pools,
    pool_assignments,
    sending_ips,
)
from mailcarrier.storage.tables import accounts

__all__ = [
    "PoolView",
    "accounts_on_ip",
    "add_ip",
    "assign_account",
    "create_pool",
    "current_pool",
    "ip_by_address",
    "list_pools",
    "pool_by_name",
    "pool_ips",
]

def pool_of(row: Any) -> Pool:
    return Pool(row.id, row.name, PoolKind(row.kind), row.description)


def create_pool(conn: Connection, name: str, kind: PoolKind | str, now: datetime,
                description: str = "") -> Pool:
    """A new pool; ConflictError if the name is taken, ValueError for an unknown kind."""
    name = name.strip()
    if not name or len(name) > 64:
        raise InvalidInputError("a pool needs a name of 1-64 characters")
    try:
        pool_kind = PoolKind(kind)
    except ValueError:
        raise InvalidInputError(f"unknown pool kind {kind!r}: use shared, trusted or dedicated") from None
    try:
        with conn.begin_nested():
            key = conn.execute(ip_pools.insert().values(
                name=name, kind=pool_kind.value, description=description, created_at=now,
            )).inserted_primary_key
    except IntegrityError as exc:
        raise ConflictError(f"pool {name!r} already exists") from exc
    assert key is not None
    return Pool(int(key[0]), name, pool_kind, description)


def pool_by_name(conn: Connection, name: str) -> Pool:
    row = conn.execute(select(ip_pools).where(ip_pools.c.name == name)).one_or_none()
    if row is None:
        raise NotFoundError(f"no pool {name!r}; create it with `mailcarrier pools create`")
    return pool_of(row)


def ip_of(row: Any) -> SendingIp:
    state = WarmupState(schedule=row.warmup_schedule, day=row.warmup_day, as_of=row.warmup_as_of,
                        last_sent_on=row.last_sent_on, held=bool(row.warmup_held))
    return SendingIp(row.id, row.address, row.pool_id, row.hostname, bool(row.enabled), state)


def add_ip(conn: Connection, pool_name: str, address: str, now: datetime, *,
           schedule: WarmupSchedule, hostname: str = "", warm: bool = False) -> SendingIp:
    """Add a source address to a pool; it starts its warm-up today unless ``warm``.

    ``warm`` is for an IP that already carries its full volume elsewhere (moved, not
    new): the ramp is marked complete, and idleness still restarts it later.
    """
    try:
        normalised = str(ipaddress.ip_address(address.strip()))
    except ValueError:
        raise InvalidInputError(f"{address!r} is not an IP address") from None
    pool = pool_by_name(conn, pool_name)
    day = len(schedule.daily) + 1 if warm else 1
    values = {"address": normalised, "pool_id": pool.id, "hostname": hostname.strip().rstrip("."),
              "enabled": True, "warmup_schedule": schedule.name, "warmup_day": day,
              "warmup_as_of": now.date(), "warmup_held": False,
              "last_sent_on": now.date() if warm else None, "created_at": now}
    try:
        with conn.begin_nested():
            conn.execute(sending_ips.insert().values(**values))
    except IntegrityError as exc:
        raise ConflictError(f"IP {normalised} is already in a pool") from exc
    return ip_by_address(conn, normalised)


def ip_by_address(conn: Connection, address: str) -> SendingIp:
    row = conn.execute(select(sending_ips).where(sending_ips.c.address == address)).one_or_none()
    if row is None:
        raise NotFoundError(f"no sending IP {address}; add it with `mailcarrier pools add-ip`")
    return ip_of(row)


def pool_ips(conn: Connection, pool_id: int) -> list[SendingIp]:
    rows = conn.execute(select(sending_ips).where(sending_ips.c.pool_id == pool_id)
                        .order_by(sending_ips.c.address))
    return [ip_of(r) for r in rows]


def assign_account(conn: Connection, account_id: int, pool_name: str, now: datetime,
                   reason: str = "assigned by operator") -> Pool:
    """Put the account on a pool, closing its previous assignment (kept as history)."""
    pool = pool_by_name(conn, pool_name)
    current = conn.execute(select(pool_assignments.c.pool_id).where(
        pool_assignments.c.account_id == account_id, pool_assignments.c.ended_at.is_(None),
    )).scalar_one_or_none()
    if current == pool.id:
        return pool
    conn.execute(update(pool_assignments).where(
        pool_assignments.c.account_id == account_id, pool_assignments.c.ended_at.is_(None),
    ).values(ended_at=now))
    conn.execute(pool_assignments.insert().values(account_id=account_id, pool_id=pool.id,
                                                  assigned_at=now, reason=reason))
    return pool


def current_pool(conn: Connection, account_id: int) -> Pool | None:
    row = conn.execute(select(ip_pools).join(pool_assignments, pool_assignments.c.pool_id == ip_pools.c.id)
                       .where(pool_assignments.c.account_id == account_id,
                              pool_assignments.c.ended_at.is_(None))).one_or_none()
    return None if row is None else pool_of(row)


@dataclass(frozen=True, slots=True)
class PoolView:
    pool: Pool
    ips: tuple[SendingIp, ...]
    accounts: tuple[str, ...]


def list_pools(conn: Connection) -> list[PoolView]:
    """Every pool with its IPs and the accounts currently on it."""
    views = []
    for row in conn.execute(select(ip_pools).order_by(ip_pools.c.name)).all():
        slugs = conn.execute(select(accounts.c.slug).join(
            pool_assignments, pool_assignments.c.account_id == accounts.c.id,
        ).where(pool_assignments.c.pool_id == row.id, pool_assignments.c.ended_at.is_(None))
            .order_by(accounts.c.slug)).scalars().all()
        views.append(PoolView(pool_of(row), tuple(pool_ips(conn, row.id)), tuple(slugs)))
    return views


def accounts_on_ip(conn: Connection, ip_id: int, at: datetime) -> list[int]:
    """Accounts whose pool contained the IP at ``at`` (the IP's current pool)."""
    pool_id = conn.execute(select(sending_ips.c.pool_id).where(sending_ips.c.id == ip_id)).scalar_one()
    rows = conn.execute(select(pool_assignments.c.account_id).where(
        pool_assignments.c.pool_id == pool_id,
        pool_assignments.c.assigned_at <= at,
        or_(pool_assignments.c.ended_at.is_(None), pool_assignments.c.ended_at > at),
    ).distinct().order_by(pool_assignments.c.account_id))
    return [int(r) for r in rows.scalars()]
