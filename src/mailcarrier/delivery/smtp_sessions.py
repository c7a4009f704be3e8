"""SMTP connections kept open and shared per (MX host, source IP).

Receiving providers judge senders by how many connections they open and
how many messages each carries (Gmail and Microsoft: about 5 x 50), so
the pool caps both per destination: a semaphore bounds open connections,
and a session is retired after ``messages_per_connection`` messages or as
soon as it becomes unusable (421, timeout, dropped). The limits passed with each
borrow apply from then on, so a worker can shrink its share of a destination's
connections when other workers start, or when the deferral automation slows a provider
down to one connection from a source IP (see ``mailcarrier.delivery.worker``); idle
sessions beyond a lowered cap are closed at the next borrow.

Idle sessions are not kept forever: like Postfix's connection cache, a session idle for
more than ``idle_seconds`` is closed instead of reused, and at most ``max_idle`` sessions
are kept idle across all destinations (the oldest is closed first). A campaign touches
thousands of domains once or twice each; holding a connection open to every one of them
exhausts the receiving side's (and our own) descriptors and stalls new connections.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
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
        self.idle: list[tuple[SmtpSession, int, float]] = []  #: (session, messages sent, idle since)


class SmtpPool:
    """Lends sessions per (host, port, source IP); opens them lazily."""

    def __init__(
        self, *, helo_name: str, timeout: float = 30.0, tls_context: ssl.SSLContext | None = None,
        max_idle: int = 200, idle_seconds: float = 5.0,
    ) -> None:
        self._helo, self._timeout, self._tls = helo_name, timeout, tls_context
        self._destinations: dict[tuple[str, int, str], _Destination] = {}
        self._max_idle, self._idle_seconds = max_idle, idle_seconds
        #: Idle sessions in the order they went idle (entries of sessions since reused are stale).
        self._idle_order: deque[tuple[_Destination, SmtpSession]] = deque()
        self._idle_count = 0
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
        await self._shrink(destination)
        async with destination.turn:
            await destination.turn.wait_for(lambda: destination.lent < destination.limits.connections)
            destination.lent += 1
        try:
            session, used = await self._take_idle(destination)
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
                destination.idle.append((session, used, time.monotonic()))
                self._idle_order.append((destination, session))
                self._idle_count += 1
                await self._trim_idle()
            else:
                await session.close()
        finally:
            async with destination.turn:
                destination.lent -= 1
                destination.turn.notify()

    async def _shrink(self, destination: _Destination) -> None:
        """Close idle sessions (oldest first) that no longer fit under a lowered connection cap.

        A slow-down to one connection must mean one open connection, not one in use plus
        the idle ones kept from before the cap dropped.
        """
        while destination.idle and destination.lent + len(destination.idle) > destination.limits.connections:
            session, _used, _since = destination.idle.pop(0)
            self._idle_count -= 1
            await session.close()

    async def _take_idle(self, destination: _Destination) -> tuple[SmtpSession | None, int]:
        """The most recently idled usable session of the destination; stale ones are closed."""
        horizon = time.monotonic() - self._idle_seconds
        while destination.idle:
            session, used, since = destination.idle.pop()
            self._idle_count -= 1
            if since >= horizon and session.usable:
                return session, used
            await session.close()
        return None, 0

    async def _trim_idle(self) -> None:
        """Close the oldest idle sessions beyond ``max_idle``; drop stale order entries."""
        if len(self._idle_order) > 4 * self._idle_count + 1_000:
            live = sorted(((since, destination, session) for destination in self._destinations.values()
                           for session, _used, since in destination.idle), key=lambda entry: entry[0])
            self._idle_order = deque((destination, session) for _since, destination, session in live)
        while self._idle_count > self._max_idle and self._idle_order:
            destination, session = self._idle_order.popleft()
            for index, (candidate, _used, _since) in enumerate(destination.idle):
                if candidate is session:
                    del destination.idle[index]
                    self._idle_count -= 1
                    await session.close()
                    break

    async def close(self) -> None:
        for destination in self._destinations.values():
            while destination.idle:
                await destination.idle.pop()[0].close()
        self._idle_order.clear()
        self._idle_count = 0
