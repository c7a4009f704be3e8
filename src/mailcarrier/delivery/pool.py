"""SMTP connections kept open and shared per (MX host, source IP).

Receiving providers judge senders by how many connections they open and
how many messages each carries (Gmail and Microsoft: about 5 x 50), so
the pool caps both per destination: a semaphore bounds open connections,
and a session is retired after ``messages_per_connection`` messages or as
soon as it becomes unusable (421, timeout, dropped). The limits passed with each
borrow apply from then on, so a worker can shrink its share of a destination's
connections when other workers start (see ``mailcarrier.delivery.worker``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from mailcarrier.delivery.transport import SmtpSession

__all__ = ["ConnectionLimits", "SmtpPool"]


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    connections: int = 5
    messages_per_connection: int = 50

    def __post_init__(self) -> None:
        if self.connections < 1 or self.messages_per_connection < 1:
            raise ValueError("connection limits must be at least 1")


class _Destination:
    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.lent = 0  #: sessions in use right now
        #: A condition rather than a semaphore: the connection cap may change between borrows.
        self.turn = asyncio.Condition()
        self.idle: list[tuple[SmtpSession, int]] = []


class SmtpPool:
    """Lends sessions per (host, port, source IP); opens them lazily."""

    def __init__(
        self, *, helo_name: str, timeout: float = 30.0, tls_context: ssl.SSLContext | None = None
    ) -> None:
        self._helo, self._timeout, self._tls = helo_name, timeout, tls_context
        self._destinations: dict[tuple[str, int, str], _Destination] = {}
        self.opened = 0

    @asynccontextmanager
    async def session(self, host: str, port: int, limits: ConnectionLimits, *, mx_host: str | None = None,
                      source_ip: str = "") -> AsyncIterator[SmtpSession]:
        """Borrow a session; it goes back to the pool if still usable and not used up."""
        key = (host, port, source_ip)
        destination = self._destinations.get(key)
        if destination is None:
            destination = self._destinations[key] = _Destination(limits)
        destination.limits = limits
        async with destination.turn:
            await destination.turn.wait_for(lambda: destination.lent < destination.limits.connections)
            destination.lent += 1
        try:
            session, used = destination.idle.pop() if destination.idle else (None, 0)
            if session is None:
                session = await SmtpSession.open(host, port, helo_name=self._helo, timeout=self._timeout,
                                                 tls_context=self._tls, mx_host=mx_host,
                                                 source_ip=source_ip or None)
                self.opened += 1
            try:
                yield session
            except BaseException:
                session.abort()
                raise
            used += 1
            room = destination.lent + len(destination.idle) <= destination.limits.connections
            if session.usable and used < destination.limits.messages_per_connection and room:
                destination.idle.append((session, used))
            else:
                await session.close()
        finally:
            async with destination.turn:
                destination.lent -= 1
                destination.turn.notify()

    async def close(self) -> None:
        for destination in self._destinations.values():
            while destination.idle:
                await destination.idle.pop()[0].close()
