"""``mailcarrier inbound``: the SMTP server of the bounce domain (aiosmtpd).

It takes mail only for this installation's signed VERP return-paths, ``postmaster``,
``unsubscribe`` (the ``mailto:`` of every message's ``List-Unsubscribe``) and the configured
feedback-loop addresses; every other recipient gets a 550 at RCPT, so it can never
relay. DATA above the size limit gets 552 (aiosmtpd's ``data_size_limit``). STARTTLS is offered
when a certificate is configured.

Each accepted email is written raw to the database before the 250 is sent. Writes are grouped:
emails arriving while a write is running are committed together by the next one, so many
concurrent senders cost one commit per group, not per email. Processing (parse, match, act)
runs in a background thread on what was stored, in batches; a crash between the two steps
loses nothing because the emails stay ``pending``.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.process
import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import Engine

from mailcarrier.config import Settings
from mailcarrier.domain.verp import decode_return_path
from mailcarrier.inbound.aiosmtpd_adapter import BlockDataController
from mailcarrier.inbound.peer_limits import PeerLimits, PeerQuota
from mailcarrier.inbound.processor import run_processor
from mailcarrier.services.inbound import (
    InboundContext,
    IncomingEmail,
    pending_count,
    process_all,
    store_incoming,
)

__all__ = ["InboundHandler", "InboundServer", "accepted_addresses"]

log = logging.getLogger(__name__)

_GROUP_MAX = 1000
def _utcnow() -> datetime:
    return datetime.now(UTC)


def _peer_ip(peer: object) -> str | None:
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


def accepted_addresses(settings: Settings) -> frozenset[str]:
    """The fixed addresses besides VERP: postmaster (RFC 5321 4.5.1) and the configured ones."""
    fixed = {"postmaster", f"postmaster@{settings.inbound.bounce_domain.lower()}"}
    fixed.update(settings.inbound.accept_addresses)  # lower-case addresses, checked at load
    return frozenset(fixed)


class InboundHandler:
    """aiosmtpd handler: recipient check at RCPT, raw store (grouped commits) at DATA."""

    def __init__(self, engine: Engine, ctx: InboundContext, accept: frozenset[str], *,
                 on_stored: Callable[[], None] = lambda: None,
                 clock: Callable[[], datetime] = _utcnow, limits: PeerLimits | None = None) -> None:
        self._engine, self._ctx, self._accept = engine, ctx, accept
        #: per-peer and total session, connection and message limits
        self.limits = limits if limits is not None else PeerLimits(PeerQuota())
        self._suffix = "@" + ctx.bounce_domain.lower()
        self._on_stored, self._clock = on_stored, clock
        self._waiting: list[tuple[IncomingEmail, asyncio.Future[None]]] = []
        self._writing = False

    def open_session(self, peer: object) -> str | None:
        """Admit a new session (None) or say why not: over the per-peer or total limits.

        Called by the SMTP session before its greeting (``aiosmtpd_adapter``); a refusal is
        answered 421 and the connection closed.
        """
        peer_ip = _peer_ip(peer)
        refusal = self.limits.open_session(peer_ip)
        if refusal is not None:
            log.info("refused a session from %s: %s", peer_ip, refusal,
                     extra={"event": "inbound.session_refused"})
        return refusal

    def close_session(self, peer: object) -> None:
        """The end of a session :meth:`open_session` admitted."""
        self.limits.close_session(_peer_ip(peer))

    def accepts(self, address: str) -> bool:
        """Ours: a signed VERP return-path of the bounce domain, the unsubscribe address, or a fixed one."""
        address = address.strip().strip("<>").lower()
        if address in self._accept or address == self._ctx.unsubscribe_address:
            return True
        return address.endswith(self._suffix) and decode_return_path(address, key=self._ctx.key) is not None

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if not self.accepts(address):
            log.info("refused RCPT %s from %s", address[:200], session.peer,
                     extra={"event": "inbound.rcpt_refused"})
            return f"550 5.1.1 <{address[:200]}>: not a bounce address of this server; relaying denied"
        if not envelope.rcpt_tos and not self.limits.allow_message(_peer_ip(session.peer)):
            log.info("deferred a message from %s: over the per-minute message limit", session.peer,
                     extra={"event": "inbound.message_rate_limited"})
            return "451 4.7.1 too many messages from your address in the last minute; try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        raw = envelope.original_content or b""
        peer = session.peer
        origin = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer or "")
        mail_from = envelope.mail_from if isinstance(envelope.mail_from, str) else None
        peer_ip = _peer_ip(peer)
        helo = session.host_name if isinstance(session.host_name, str) else None
        email = IncomingEmail(raw, "smtp", origin, mail_from, tuple(envelope.rcpt_tos),
                              peer_ip=peer_ip, helo=helo)
        try:
            await self._store(email)
        except Exception:
            log.exception("could not store an inbound email", extra={"event": "inbound.store_failed"})
            return "451 4.3.0 could not store the message; try again later"
        self._on_stored()
        return "250 2.0.0 stored"

    async def _store(self, email: IncomingEmail) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((email, future))
        if not self._writing:
            self._writing = True
            asyncio.get_running_loop().create_task(self._write_groups())
        await future

    async def _write_groups(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting[:_GROUP_MAX], self._waiting[_GROUP_MAX:]
                try:
                    await asyncio.to_thread(store_incoming, self._engine, [e for e, _ in group],
                                            self._clock())
                except Exception as exc:
                    for _, future in group:
                        future.set_exception(exc)
                else:
                    for _, future in group:
                        future.set_result(None)
        finally:
            self._writing = False


class InboundServer:
    """The inbound SMTP server plus its background processor, in threads (start/stop)."""

    def __init__(self, engine: Engine, ctx: InboundContext, *, accept: frozenset[str],
                 host: str = "127.0.0.1", port: int = 0, max_bytes: int = 10_000_000,
                 tls_context: ssl.SSLContext | None = None, process: bool = True,
                 processors: int = 0, batch: int = 500,
                 clock: Callable[[], datetime] = _utcnow, quota: PeerQuota = PeerQuota()) -> None:
        """``processors`` > 0 runs processing in that many separate processes (see
        :mod:`mailcarrier.inbound.processor`); 0 runs it in a thread of this process."""
        if port == 0:
            with socket.socket() as probe:
                probe.bind((host, 0))
                port = int(probe.getsockname()[1])
        self.host, self.port = host, port
        self._engine, self._ctx, self._batch, self._clock = engine, ctx, batch, clock
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._idle = threading.Condition()
        self._busy = False
        self._process = process
        self._processors = processors if process else 0
        self._thread: threading.Thread | None = None
        self._spawn = multiprocessing.get_context("spawn")
        self._mp_stop = self._spawn.Event()
        self._mp_wake = self._spawn.Event()
        self._children: list[multiprocessing.process.BaseProcess] = []
        self.handler = InboundHandler(engine, ctx, accept, on_stored=self._stored, clock=clock,
                                      limits=PeerLimits(quota))
        self._controller = BlockDataController(
            self.handler, hostname=host, port=port, tls_context=tls_context, require_starttls=False,
            data_size_limit=max_bytes, server_hostname=ctx.bounce_domain, ident="mailcarrier inbound")

    @classmethod
    def from_settings(cls, engine: Engine, settings: Settings, **kwargs: Any) -> InboundServer:
        tls = None
        if settings.inbound.tls_cert is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(settings.inbound.tls_cert, settings.inbound.tls_key)
        return cls(engine, InboundContext.from_settings(settings), accept=accepted_addresses(settings),
                   host=settings.inbound.host, port=settings.inbound.port,
                   max_bytes=settings.inbound.max_bytes, tls_context=tls,
                   quota=PeerQuota(settings.inbound.max_sessions, settings.inbound.max_sessions_per_peer,
                                   settings.inbound.peer_connections_per_minute,
                                   settings.inbound.peer_messages_per_minute,
                                   settings.inbound.unlimited_peers), **kwargs)

    def _stored(self) -> None:
        if self._processors:
            self._mp_wake.set()
            return
        with self._idle:  # under the lock, so the processor cannot declare idle in between
            self._busy = True
            self._wake.set()

    def start(self) -> None:
        url = self._engine.url.render_as_string(hide_password=False)
        for number in range(self._processors):
            child = self._spawn.Process(target=run_processor, name=f"inbound-processor-{number}",
                                        args=(url, self._ctx, self._mp_stop, self._mp_wake, self._batch),
                                        daemon=True)
            child.start()
            self._children.append(child)
        self._controller.start()
        if self._process and not self._processors:
            self._thread = threading.Thread(target=self._run, name="inbound-processor", daemon=True)
            self._thread.start()
            self._wake.set()  # emails left pending by an earlier run

    def stop(self) -> None:
        self._controller.stop()
        self._stopping.set()
        self._wake.set()
        self._mp_stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        for child in self._children:
            child.join(timeout=60)

    def __enter__(self) -> InboundServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until everything stored so far was processed (tests, benchmarks, shutdown)."""
        if self._processors:
            deadline = time.monotonic() + timeout
            while pending_count(self._engine):
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.01)
            return True
        with self._idle:
            return self._idle.wait_for(lambda: not self._busy, timeout=timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(timeout=5.0)
            self._wake.clear()
            with self._idle:
                self._busy = True
            try:
                process_all(self._engine, self._ctx, self._clock(), batch=self._batch)
            except Exception:
                log.exception("inbound processing failed; emails stay pending",
                              extra={"event": "inbound.process_failed"})
                self._stopping.wait(1.0)
                continue
            with self._idle:
                if not self._wake.is_set():
                    self._busy = False
                    self._idle.notify_all()
