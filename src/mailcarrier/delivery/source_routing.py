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
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Engine, select

from mailcarrier.config import Settings
from mailcarrier.domain.errors import NotFoundError
from mailcarrier.domain.smtp_reply import SMTPReply
from mailcarrier.domain.throttle_rules import ThrottleRules, load_throttle_rules
from mailcarrier.domain.warmup import WarmupLimits
from mailcarrier.services import pools
from mailcarrier.services.policies import warmup_limits
from mailcarrier.storage.outbox import write_transaction
from mailcarrier.storage.pool_tables import sending_ips

__all__ = ["PoolRouting", "SourceRouting", "routing_for"]


class SourceRouting(Protocol):
    """What the worker needs from source-IP routing."""

    async def choose(self, account_id: int, domain: str, mx_host: str, now: datetime) -> pools.SourcePick: ...

    async def observe(self, account_id: int, address: str, domain: str, mx_host: str, now: datetime,
                      reply: SMTPReply) -> None: ...

    def retry_at(self, now: datetime) -> datetime: ...


@dataclass
class PoolRouting:
    """Routing through the account's pool, backed by the store (one short transaction per call)."""

    engine: Engine
    warmup_limits: WarmupLimits
    overflow_pool: str | None = None
    rules: ThrottleRules | None = None
    default_source: str = ""

    def _destination(self, domain: str, mx_host: str) -> str:
        """The recipient domain names the provider; the MX host when the domain is not a known one."""
        rules = self.rules or load_throttle_rules()
        return domain if rules.provider_for(domain).provider != "default" else mx_host

    def _choose(self, account_id: int, destination: str, now: datetime) -> pools.SourcePick:
        with write_transaction(self.engine) as conn:
            return pools.choose_source_ip(conn, account_id, destination, now,
                                          warmup_limits=self.warmup_limits, rules=self.rules,
                                          overflow_pool=self.overflow_pool)

    async def choose(self, account_id: int, domain: str, mx_host: str, now: datetime) -> pools.SourcePick:
        pick = await asyncio.to_thread(self._choose, account_id, self._destination(domain, mx_host), now)
        if pick.pool is None:  # the account is on no pool: send as without routing
            return replace(pick, address=self.default_source)
        return pick

    def _observe(self, account_id: int, address: str, destination: str, now: datetime,
                 reply: SMTPReply) -> None:
        text = f"{reply.code} {reply.enhanced or ''} {reply.text}".replace("  ", " ")
        delivered = reply.is_positive
        with write_transaction(self.engine) as conn:
            try:
                if delivered or reply.is_transient:
                    pools.record_reply_for_throttling(conn, address, destination, now, delivered=delivered,
                                                      text=text, rules=self.rules)
                else:
                    pools.ip_by_address(conn, address)
            except NotFoundError:  # the default source address, not one of a pool
                return
            if not delivered:
                pools.record_reputation_signal(conn, text, address, account_id, now)
            if reply.code >= 500:
                pools.record_ip_outcome(conn, address, now.date(), bounced=1)

    async def observe(self, account_id: int, address: str, domain: str, mx_host: str, now: datetime,
                      reply: SMTPReply) -> None:
        await asyncio.to_thread(self._observe, account_id, address, self._destination(domain, mx_host), now,
                                reply)

    def retry_at(self, now: datetime) -> datetime:
        """Allowances and hourly limits move on the hour: look again at the next one."""
        return now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def routing_for(engine: Engine, settings: Settings, *,
                overflow_pool: str | None = None) -> PoolRouting | None:
    """Pool routing when the store knows at least one sending IP; None (no routing) otherwise."""
    with engine.connect() as conn:
        if conn.execute(select(sending_ips.c.id).limit(1)).first() is None:
            return None
    return PoolRouting(engine, warmup_limits(settings), overflow_pool=overflow_pool,
                       default_source=settings.source_ip)
