"""Limits of the inbound SMTP server: sessions at once (per peer, in total), connections, messages.

The bounce domain's MX is open to the whole Internet. Without limits one host can hold
hundreds of sessions (each may buffer a message up to ``inbound_max_bytes``: about 10 MB per
concurrent message), or flood the store with forged bounces. A peer over a limit gets a
temporary refusal (421 at connect, 451 at RCPT): a real MTA retries later, nothing is lost.

Peers are counted by address; IPv6 peers by their /64, which one host or customer usually
holds whole. The sliding windows keep at most ``max_keys`` peers, forgetting idle ones first.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["PeerLimits", "PeerQuota", "peer_key"]


_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[_Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass(frozen=True, slots=True)
class PeerQuota:
    """The limits (0 = unlimited)."""

    max_sessions: int = 100
    max_sessions_per_peer: int = 10
    connections_per_minute: int = 120
    messages_per_minute: int = 300
    #: peers the per-peer limits do not apply to (a relay in front of us sends everything);
    #: the total session limit still does. Default: loopback.
    exempt: tuple[_Network, ...] = LOOPBACK

    def exempts(self, peer_ip: str | None) -> bool:
        if not peer_ip or not self.exempt:
            return False
        try:
            address = ipaddress.ip_address(peer_ip.split("%", 1)[0])
        except ValueError:
            return False
        return any(address in net for net in self.exempt)


def peer_key(peer_ip: str | None) -> str:
    """What a peer is counted as: its IPv4 address, or the /64 of its IPv6 address."""
    if not peer_ip:
        return "unknown"
    try:
        address = ipaddress.ip_address(peer_ip.split("%", 1)[0])
    except ValueError:
        return peer_ip[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


class PeerLimits:
    """Counters shared by every session of one server (thread-safe; the event loop is one thread)."""

    def __init__(self, quota: PeerQuota, *, clock: Callable[[], float] = time.monotonic,
                 window: float = 60.0, max_keys: int = 100_000) -> None:
        self.quota = quota
        self._clock, self._window, self._max_keys = clock, window, max_keys
        self._lock = threading.Lock()
        self._sessions: dict[str, int] = {}
        self._total = 0
        self._connections: dict[str, deque[float]] = {}
        self._messages: dict[str, deque[float]] = {}

    @property
    def sessions(self) -> int:
        return self._total

    def open_session(self, peer_ip: str | None) -> str | None:
        """Count a new session; a refusal text (for a 421) if over a limit, else None."""
        key = peer_key(peer_ip)
        q = self.quota
        exempt = q.exempts(peer_ip)
        with self._lock:
            if q.max_sessions and self._total >= q.max_sessions:
                return "too many connections; try again later"
            if not exempt and q.max_sessions_per_peer \
                    and self._sessions.get(key, 0) >= q.max_sessions_per_peer:
                return "too many connections from your address; try again later"
            if not exempt and not self._take(self._connections, key, q.connections_per_minute):
                return "too many connections from your address in the last minute; try again later"
            self._sessions[key] = self._sessions.get(key, 0) + 1
            self._total += 1
            return None

    def close_session(self, peer_ip: str | None) -> None:
        key = peer_key(peer_ip)
        with self._lock:
            left = self._sessions.get(key, 0) - 1
            if left > 0:
                self._sessions[key] = left
            else:
                self._sessions.pop(key, None)
            self._total = max(0, self._total - 1)

    def allow_message(self, peer_ip: str | None) -> bool:
        """Count one message (at its first accepted recipient); False if over the per-minute limit."""
        if self.quota.exempts(peer_ip):
            return True
        with self._lock:
            return self._take(self._messages, peer_key(peer_ip), self.quota.messages_per_minute)

    def _take(self, windows: dict[str, deque[float]], key: str, limit: int) -> bool:
        if not limit:
            return True
        now = self._clock()
        events = windows.get(key)
        if events is None:
            if len(windows) >= self._max_keys:
                self._forget_idle(windows, now)
            events = windows[key] = deque()
        while events and events[0] <= now - self._window:
            events.popleft()
        if len(events) >= limit:
            return False
        events.append(now)
        return True

    def _forget_idle(self, windows: dict[str, deque[float]], now: float) -> None:
        for key in [k for k, v in windows.items() if not v or v[-1] <= now - self._window]:
            del windows[key]
        if len(windows) >= self._max_keys:  # all busy: drop the oldest half rather than grow
            for key in sorted(windows, key=lambda k: windows[k][-1])[: len(windows) // 2]:
                del windows[key]
