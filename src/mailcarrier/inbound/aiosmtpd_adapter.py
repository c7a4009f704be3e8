"""The one place that reaches into aiosmtpd's internals: DATA read in blocks, sessions admitted.

aiosmtpd's public surface (handler hooks such as ``handle_RCPT`` and ``handle_DATA``) is
enough for everything the inbound server decides, except two things that need its private
parts: reading DATA in blocks (for speed and for long lines) replaces ``smtp_DATA`` and uses
the session's ``_reader``/``_writer`` streams, ``_call_handler_hook`` and
``_set_post_data_state``; refusing a session before the greeting wraps ``_handle_client``.
Those can change in any release, so they are confined to this module, which offers the
inbound server plain hooks instead (``open_session``/``close_session`` on its handler), the
dependency is bounded in pyproject.toml, and ``tests/inbound/test_aiosmtpd_adapter.py``
fails when the installed aiosmtpd is not :data:`ADAPTED_AIOSMTPD` or lacks one of
:data:`PRIVATE_NAMES`: re-read aiosmtpd's ``smtp.py`` (``SMTP.smtp_DATA``,
``SMTP._handle_client``) against this module before raising them.
"""

from __future__ import annotations

import asyncio
import logging

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, syntax

__all__ = ["ADAPTED_AIOSMTPD", "LINE_LIMIT", "PRIVATE_NAMES", "BlockDataController", "BlockDataSMTP"]

log = logging.getLogger("mailcarrier.inbound.smtp_server")

#: The aiosmtpd release whose ``smtp_DATA`` and private attributes this module was checked against.
ADAPTED_AIOSMTPD = "1.4.6"
#: aiosmtpd's private names this module uses (attributes of ``SMTP`` or set on its instances).
PRIVATE_NAMES = ("_reader", "_writer", "_call_handler_hook", "_set_post_data_state", "_handle_client")
#: RFC 5321 caps lines at 1000 octets, but bounce generators (and the originals they quote)
#: break it; refusing a bounce over a long line would lose exactly the evidence we want.
LINE_LIMIT = 65536


class BlockDataSMTP(SMTP):
    """aiosmtpd's SMTP with a DATA phase read in blocks.

    Its handler may also admit or refuse each session before the greeting (``open_session``
    and ``close_session``, see :meth:`_handle_client`).

    aiosmtpd reads DATA one line at a time (about a hundred event-loop steps for a typical
    bounce); this reads up to each ``.<CRLF>`` and checks whether the dot starts a line, which
    is the end marker (RFC 5321 4.1.1.4). Replies, size limit (552) and dot-unstuffing
    (RFC 5321 4.5.2) are as in aiosmtpd; lines longer than 1000 octets are accepted.
    """

    line_length_limit = LINE_LIMIT

    async def _handle_client(self) -> None:
        """Ask the handler's ``open_session(peer)`` before the greeting: a reason is answered
        421 and the connection closed; an admitted session ends with ``close_session(peer)``."""
        assert self.session is not None
        peer = self.session.peer
        open_session = getattr(self.event_handler, "open_session", None)
        close_session = getattr(self.event_handler, "close_session", None)
        if callable(open_session):
            refusal = open_session(peer)
            if refusal is not None:
                await self.push(f"421 4.7.0 {self.hostname} {refusal}")
                assert self.transport is not None
                self.transport.close()
                return
        try:
            await super()._handle_client()
        finally:
            if callable(open_session) and callable(close_session):
                close_session(peer)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 (aiosmtpd's command hook name)
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            body = await self._read_data()
        except asyncio.CancelledError:
            log.info("connection lost during DATA", extra={"event": "inbound.data_lost"})
            self._writer.close()
            raise
        except asyncio.IncompleteReadError:
            return
        if body is None:
            await self.push("552 Error: Too much mail data")
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        self.envelope.content = self.envelope.original_content = body
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)

    async def _read_data(self) -> bytes | None:
        """The message up to the end marker, unstuffed; None (all read) when over the limit."""
        limit = self.data_size_limit
        parts: list[bytes] = []
        size = 0
        too_much = False
        line_start = True
        while True:
            try:
                piece = await self._reader.readuntil(b".\r\n")
            except asyncio.LimitOverrunError as exc:  # no dot-CRLF within the buffer limit
                piece = await self._reader.readexactly(exc.consumed)
            else:
                head = piece[:-3]
                if (not head and line_start) or head.endswith(b"\r\n"):
                    parts.append(head)
                    too_much = too_much or bool(limit and size + len(head) > limit)
                    break
            size += len(piece)
            if limit and size > limit:
                too_much = True
                parts.clear()
            elif not too_much:
                parts.append(piece)
            line_start = piece.endswith(b"\r\n")
        if too_much:
            return None
        body = b"".join(parts)
        if body.startswith(b"."):
            body = body[1:]
        return body.replace(b"\r\n.", b"\r\n")


class BlockDataController(Controller):
    """aiosmtpd's threaded controller serving :class:`BlockDataSMTP` sessions."""

    def factory(self) -> SMTP:
        return BlockDataSMTP(self.handler, **self.SMTP_kwargs)
