"""Source-IP routing for the worker: which pool IP carries a message, and what replies teach.

The worker asks :meth:`PoolRouting.choose` before each attempt and binds the SMTP
connection to the address it gets (127.0.0.x on a test machine). ``None`` means no IP of
the account's pool may send to that provider now (warm-up allowance used, hourly limit
reached, provider suspended): the message waits until :meth:`PoolRouting.retry_at`
without counting an attempt. After the attempt the reply goes to :meth:`PoolRouting.observe`,
which feeds the deferral automation, counts bounces against the IP's day (they hold the
warm-up ramp) and records listings or trap hits the reply names.

An account assigned to no pool sends from ``default_source`` (the ``source_ip`` setting;
empty: the system's choice), as without routing. :func:`routing_for` turns routing on
as soon as the store knows a sending IP.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Connection, Engine, select

from mailcarrier.config import Settings
from mailcarrier.domain.errors import ConfigurationError, NotFoundError
from mailcarrier.domain.pools import PoolKind
from mailcarrier.domain.smtp_reply import SMTPReply
from mailcarrier.domain.throttle_rules import ThrottleRules, load_throttle_rules
from mailcarrier.domain.warmup import WarmupLimits
from mailcarrier.services.policies import warmup_limits
from mailcarrier.services.pools import membership, reputation, source_ips
from mailcarrier.services.pools import throttling as pool_throttling
from mailcarrier.services.pools import values as pool_values
from mailcarrier.services.pools import warmup as pool_warmup
from mailcarrier.storage.engine import run_write
from mailcarrier.storage.pool_tables import sending_ips

__all__ = ["PoolRouting", "SourceRouting", "routing_for"]


class SourceRouting(Protocol):
    """What the worker needs from source-IP routing."""

    async def choose(self, account_id: int, domain: str, mx_host: str,
                     now: datetime) -> pool_values.SourcePick: ...

    async def observe(self, account_id: int, address: str, domain: str, mx_host: str, now: datetime,
                      reply: SMTPReply) -> None: ...

    def retry_at(self, now: datetime) -> datetime: ...

    async def flush(self) -> None: ...


@dataclass
class _Credit:
    """Messages reserved on one IP for (account, provider) and not handed out yet."""

    pick: pool_values.SourcePick
    left: int
    reserved_at: datetime


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


@dataclass
class PoolRouting:
    """Routing through the account's pool, backed by the store.

    Each trip to the store reserves up to ``batch`` messages on the chosen IP (never more
    than its room this hour) and hands them out locally, so the pool's row lock is taken
    once per batch, not per message. What is not handed out goes back to the counters
    when the hour turns, when the IP is deferred by the provider, and at :meth:`flush`
    (the worker calls it when it stops). Use one instance per event loop.
    """

    engine: Engine
    warmup_limits: WarmupLimits
    overflow_pool: str | None = None
    rules: ThrottleRules | None = None
    default_source: str = ""
    batch: int = 10
    _credits: dict[tuple[int, str], _Credit] = field(default_factory=dict, init=False, repr=False)
    _locks: dict[tuple[int, str], asyncio.Lock] = field(default_factory=dict, init=False, repr=False)
    #: (address, provider) pairs with automation state, as last seen by choose or a deferral
    _throttled: set[tuple[str, str]] = field(default_factory=set, init=False, repr=False)

    def _destination(self, domain: str, mx_host: str) -> str:
        """The recipient domain names the provider; the MX host when the domain is not a known one."""
        rules = self.rules or load_throttle_rules()
        return domain if rules.provider_for(domain).provider != "default" else mx_host

    def _release(self, conn: Connection, credit: _Credit) -> None:
        if credit.left > 0 and credit.pick.address:
            pool_warmup.release_reserved(conn, credit.pick.address, credit.pick.provider, credit.reserved_at,
                                   credit.left)

    def _choose(self, account_id: int, destination: str, now: datetime,
                stale: _Credit | None) -> pool_values.SourcePick:
        def unit(conn: Connection) -> pool_values.SourcePick:
            if stale is not None:
                self._release(conn, stale)
            return source_ips.choose_source_ip(conn, account_id, destination, now,
                                          warmup_limits=self.warmup_limits, rules=self.rules,
                                          overflow_pool=self.overflow_pool, batch=self.batch)

        return run_write(self.engine, unit, what="choosing a source IP")

    async def choose(self, account_id: int, domain: str, mx_host: str,
                     now: datetime) -> pool_values.SourcePick:
        destination = self._destination(domain, mx_host)
        key = (account_id, (self.rules or load_throttle_rules()).provider_for(destination).provider)
        async with self._locks.setdefault(key, asyncio.Lock()):
            credit = self._credits.get(key)
            if credit is not None and credit.left > 0 and _hour(credit.reserved_at) == _hour(now):
                credit.left -= 1
                return credit.pick
            stale = self._credits.pop(key, None)
            pick = await asyncio.to_thread(self._choose, account_id, destination, now, stale)
            if pick.pool is None:  # the account is on no pool: send as without routing
                return replace(pick, address=self.default_source)
            if pick.address is not None and pick.reserved > 1:
                self._credits[key] = _Credit(pick, pick.reserved - 1, now)
            self._throttled.difference_update({(a, p) for a, p in self._throttled if p == pick.provider})
            self._throttled.update((address, pick.provider) for address in pick.throttled)
            return pick

    def _observe(self, account_id: int, address: str, destination: str, now: datetime,
                 reply: SMTPReply, dropped: list[_Credit]) -> None:
        text = f"{reply.code} {reply.enhanced or ''} {reply.text}".replace("  ", " ")
        delivered = reply.is_positive
        def unit(conn: Connection) -> None:
            for credit in dropped:
                self._release(conn, credit)
            try:
                if delivered or reply.is_transient:
                    pool_throttling.record_reply_for_throttling(
                        conn, address, destination, now, delivered=delivered, text=text, rules=self.rules)
                else:
                    membership.ip_by_address(conn, address)
            except NotFoundError:  # the default source address, not one of a pool
                return
            if not delivered:
                reputation.record_reputation_signal(conn, text, address, account_id, now)
            if reply.code >= 500:
                pool_warmup.record_ip_outcome(conn, address, now.date(), bounced=1)

        run_write(self.engine, unit, what="recording a reply for throttling")

    async def observe(self, account_id: int, address: str, domain: str, mx_host: str, now: datetime,
                      reply: SMTPReply) -> None:
        destination = self._destination(domain, mx_host)
        normal = (self.rules or load_throttle_rules()).provider_for(destination)
        provider = normal.provider
        if reply.is_positive and (address, provider) not in self._throttled:
            return  # a clean delivery with nothing to relax: no trip to the store
        dropped: list[_Credit] = []
        if reply.is_transient:  # the provider pushes back: stop handing out this IP's reservations
            self._throttled.add((address, provider))
        for key, credit in list(self._credits.items()):
            # Reservations carry the limits in force when they were made: a deferral may start
            # a slow-down; a clean delivery may end one, so those made under it are chosen afresh.
            slowed = credit.pick.connections < normal.connections
            if key[1] == provider and credit.pick.address == address and (reply.is_transient or slowed):
                dropped.append(self._credits.pop(key))
        await asyncio.to_thread(self._observe, account_id, address, destination, now, reply, dropped)

    def _flush(self, credits: list[_Credit]) -> None:
        def unit(conn: Connection) -> None:
            for credit in credits:
                self._release(conn, credit)

        run_write(self.engine, unit, what="giving back source-IP reservations")

    async def flush(self) -> None:
        """Give back every reservation not handed out."""
        credits = list(self._credits.values())
        self._credits.clear()
        if credits:
            await asyncio.to_thread(self._flush, credits)

    def retry_at(self, now: datetime) -> datetime:
        """Allowances and hourly limits move on the hour: look again at the next one."""
        return now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def routing_for(engine: Engine, settings: Settings, *,
                overflow_pool: str | None = None) -> PoolRouting | None:
    """Pool routing when the store knows at least one sending IP; None (no routing) otherwise.

    Overflow goes to ``overflow_pool``, by default the ``pool_overflow`` setting (empty:
    what the account's pool may not carry now waits). A named pool that does not exist
    is a ConfigurationError at start, not a surprise at the first full warm-up day.
    """
    overflow = (overflow_pool if overflow_pool is not None else settings.pools.overflow).strip() or None
    with engine.connect() as conn:
        if conn.execute(select(sending_ips.c.id).limit(1)).first() is None:
            return None
        if overflow is not None:
            try:
                kind = membership.pool_by_name(conn, overflow).kind
            except NotFoundError as exc:
                raise ConfigurationError(f"overflow pool {overflow!r} (MAILCARRIER_POOL_OVERFLOW) does not "
                                         "exist: create it with `mailcarrier pools create` or clear the "
                                         "setting") from exc
            if kind is not PoolKind.SHARED:
                raise ConfigurationError(f"overflow pool {overflow!r} is {kind.value}: overflow goes to a "
                                         "warm shared pool, not another tenant's trusted or dedicated IPs")
    return PoolRouting(engine, warmup_limits(settings), overflow_pool=overflow,
                       default_source=settings.delivery.source_ip)
