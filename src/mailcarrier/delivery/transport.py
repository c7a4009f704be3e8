"""A lean asyncio SMTP client that keeps the evidence of every attempt.

Written on asyncio streams rather than aiosmtplib because each attempt must
record the whole dialogue (without the body), the stage of the deciding
reply, the socket's local and peer addresses and the TLS parameters, and
because the per-message CPU cost matters for bulk sending. One session
carries many messages (RSET between them). Network failures become
``TransportError`` with our internal codes: 160/161/162 when connecting,
146/150 before the final ".", 147/148 after it (outcome unknown), 180 when
the TLS handshake fails, 190 for replies that are not SMTP.

A failure keeps every fact the connection had (seed 000: the recipient's IT needs them to
find the session in its logs): the error carries the local and remote address and port,
the MX host, TLS and the dialogue so far. Every dialogue line starts with its UTC time
(``HH:MM:SS.mmm``) and the first one says when and between which addresses the
connection was made, so each step of a session can be matched against the receiver's log.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mailcarrier.domain.errors import DeliveryError, ParseError
from mailcarrier.domain.smtp_reply import SMTPReply, SMTPStage, parse_reply

__all__ = ["ConnectionFacts", "RejectedError", "SendResult", "SmtpSession", "TransportError",
           "queue_id_of"]

#: How receiving servers name their queue id in the 250 reply to the final ".".
_QUEUE_ID = (
    re.compile(r"queued as ([A-Za-z0-9][\w.\-]*)", re.IGNORECASE),
    re.compile(r"\bid=([A-Za-z0-9][\w.\-]*)"),
    re.compile(r"^(?:[\d.]+ )?OK ([A-Za-z0-9][\w.\-]{5,})", re.IGNORECASE),
)


def queue_id_of(text: str) -> str | None:
    for pattern in _QUEUE_ID:
        found = pattern.search(text)
        if found:
            return found[1]
    return None


@dataclass(frozen=True, slots=True)
class ConnectionFacts:
    """What is known of a connection, even one that failed: its two ends and TLS."""

    mx_host: str
    local_ip: str | None = None
    local_port: int | None = None
    peer_ip: str | None = None
    peer_port: int | None = None
    tls_version: str | None = None
    tls_cipher: str | None = None


def _clock() -> str:
    """The current UTC time of day to the millisecond, for dialogue lines."""
    now = time.time()
    return time.strftime("%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}"


class TransportError(DeliveryError):
    """A network-level failure, with the internal code that classifies it and the facts of
    the connection so far."""

    def __init__(self, internal_code: int, stage: SMTPStage, detail: str, dialogue: str = "",
                 facts: ConnectionFacts | None = None) -> None:
        super().__init__(f"{internal_code} at {stage}: {detail}")
        self.internal_code = internal_code
        self.stage = stage
        self.dialogue = dialogue
        self.facts = facts


@dataclass(slots=True)
class SendResult:
    """The evidence of one message's attempt on a session."""

    reply: SMTPReply | None
    local_ip: str
    peer_ip: str
    mx_host: str
    tls_version: str | None
    tls_cipher: str | None
    dialogue: str
    queue_id: str | None = None
    internal_code: int | None = None
    stage: SMTPStage = SMTPStage.UNKNOWN
    extensions: frozenset[str] = field(default_factory=frozenset)


class SmtpSession:
    """One SMTP connection to one MX host; ``send`` may be called many times."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mx_host: str,
                 timeout: float) -> None:
        self._reader, self._writer, self.mx_host, self._timeout = reader, writer, mx_host, timeout
        self._log: list[str] = []
        #: Banner, EHLO and STARTTLS exchange, repeated in front of each message's dialogue.
        self._opening: list[str] = []
        self.extensions: frozenset[str] = frozenset()
        self.tls_version: str | None = None
        self.tls_cipher: str | None = None
        self.usable = True

    @classmethod
    async def open(cls, host: str, port: int, *, helo_name: str, timeout: float = 30.0,
                   tls_context: ssl.SSLContext | None = None, mx_host: str | None = None,
                   source_ip: str | None = None) -> SmtpSession:
        """Connect (from ``source_ip`` when given), read the banner, EHLO, STARTTLS when offered."""
        local_addr = (source_ip, 0) if source_ip else None
        started = datetime.now(UTC).isoformat(timespec="milliseconds")
        target = ConnectionFacts(mx_host or host, source_ip or None, None, host, port)

        def failed(code: int, detail: str) -> TransportError:
            note = f"{_clock()} (connecting {started} to {host}:{port} as {mx_host or host}: {detail})"
            return TransportError(code, SMTPStage.CONNECT, detail, note, target)

        try:
            connecting = asyncio.open_connection(host, port, local_addr=local_addr)
            reader, writer = await asyncio.wait_for(connecting, timeout)
        except TimeoutError as error:
            raise failed(160, f"connect to {host}:{port} timed out after {timeout:g} s") from error
        except ConnectionRefusedError as error:
            raise failed(161, f"{host}:{port} refused the connection") from error
        except OSError as error:
            raise failed(162, f"{host}:{port} unreachable: {error}") from error
        session = cls(reader, writer, mx_host or host, timeout)
        local, peer = session._ends()
        session._log.append(f"{_clock()} (connected {started}: {local} -> {peer}, MX {session.mx_host})")
        try:
            await session._handshake(helo_name, tls_context, host)
            session._opening = list(session._log)
        except BaseException:
            session.abort()
            raise
        return session

    @property
    def local_ip(self) -> str:
        return str(self._writer.get_extra_info("sockname")[0])

    @property
    def peer_ip(self) -> str:
        return str(self._writer.get_extra_info("peername")[0])

    def _ends(self) -> tuple[str, str]:
        local, peer = self._address("sockname"), self._address("peername")
        return (f"{local[0]}:{local[1]}" if local else "?", f"{peer[0]}:{peer[1]}" if peer else "?")

    def _address(self, name: str) -> tuple[str, int] | None:
        info = self._writer.get_extra_info(name)
        if not info:
            return None
        return str(info[0]), int(info[1])

    def facts(self) -> ConnectionFacts:
        """The connection's ends and TLS, as far as the socket still tells them."""
        local, peer = self._address("sockname"), self._address("peername")
        return ConnectionFacts(self.mx_host, local[0] if local else None, local[1] if local else None,
                               peer[0] if peer else None, peer[1] if peer else None,
                               self.tls_version, self.tls_cipher)

    def _fail(self, code: int, stage: SMTPStage, detail: str) -> TransportError:
        self._log.append(f"{_clock()} ({detail})")
        return TransportError(code, stage, detail, self.dialogue(), self.facts())

    async def _handshake(self, helo_name: str, tls_context: ssl.SSLContext | None, host: str) -> None:
        self._expect(await self._read(SMTPStage.CONNECT, after_dot=False), 220)
        await self._ehlo(helo_name)
        if tls_context is not None and "STARTTLS" in self.extensions:
            self._expect(await self._command("STARTTLS", SMTPStage.STARTTLS), 220)
            try:
                handshake = self._writer.start_tls(tls_context, server_hostname=host)
                await asyncio.wait_for(handshake, self._timeout)
            except (ssl.SSLError, OSError, TimeoutError) as error:
                raise self._fail(180, SMTPStage.STARTTLS, f"TLS handshake failed: {error}") from error
            ssl_object = self._writer.get_extra_info("ssl_object")
            if ssl_object is not None:
                self.tls_version = ssl_object.version()
                cipher = ssl_object.cipher()
                self.tls_cipher = cipher[0] if cipher else None
            self._log.append(f"{_clock()} (TLS established) {self.tls_version} {self.tls_cipher}")
            await self._ehlo(helo_name)

    async def _ehlo(self, helo_name: str) -> None:
        reply, lines = await self._command_lines(f"EHLO {helo_name}", SMTPStage.EHLO)
        self._expect(reply, 250)
        self.extensions = frozenset(line[4:].split(" ")[0].upper() for line in lines[1:])

    def _expect(self, reply: SMTPReply, code: int) -> None:
        if reply.code != code:
            self.usable = False
            raise RejectedError(reply, self.dialogue(), self.facts())

    def dialogue(self) -> str:
        return "\n".join(self._log)

    async def _read_lines(self, stage: SMTPStage, *, after_dot: bool) -> list[str]:
        lines: list[str] = []
        while True:
            try:
                # asyncio.timeout, not wait_for: wait_for wraps every read in a new task,
                # which is a noticeable share of the per-message CPU cost at bulk rates.
                async with asyncio.timeout(self._timeout):
                    raw = await self._reader.readline()
            except TimeoutError as error:
                self.usable = False
                code = 147 if after_dot else 146
                raise self._fail(code, stage, f"no answer within {self._timeout:g} s") from error
            except OSError as error:
                self.usable = False
                raise self._fail(148 if after_dot else 150, stage, str(error)) from error
            if not raw.endswith(b"\n"):
                self.usable = False
                code = 148 if after_dot else 150
                raise self._fail(code, stage, "connection closed by the server")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self._log.append(f"{_clock()} S: {line}")
            lines.append(line)
            if line[3:4] != "-":
                return lines

    def _parse(self, lines: list[str], stage: SMTPStage) -> SMTPReply:
        try:
            return parse_reply("\r\n".join(lines), stage)
        except ParseError as error:
            self.usable = False
            detail = f"not an SMTP reply: {lines[-1][:80]!r}"
            raise self._fail(190, stage, detail) from error

    async def _read(self, stage: SMTPStage, *, after_dot: bool) -> SMTPReply:
        return self._parse(await self._read_lines(stage, after_dot=after_dot), stage)

    async def _command_lines(self, command: str, stage: SMTPStage) -> tuple[SMTPReply, list[str]]:
        self._log.append(f"{_clock()} C: {command}")
        self._writer.write(command.encode("utf-8") + b"\r\n")
        lines = await self._read_lines(stage, after_dot=False)
        return self._parse(lines, stage), lines

    async def _command(self, command: str, stage: SMTPStage) -> SMTPReply:
        return (await self._command_lines(command, stage))[0]

    async def send(self, sender: str, recipient: str, data: bytes) -> SendResult:
        """Send one message; a refusal is a result (with its reply), a network failure raises.

        With PIPELINING (RFC 2920) MAIL, RCPT and DATA go out in one write and their
        replies are read afterwards: one round trip per message instead of three.
        """
        self._log = list(self._opening)
        mail_from = f"MAIL FROM:<{sender}>"
        if not (sender.isascii() and recipient.isascii()):
            # RFC 6531: a UTF-8 address may only be sent in an SMTPUTF8 transaction. Without
            # the extension nothing is sent; the caller records our internal code 191 (a
            # technical limit of that server, not a verdict on the address).
            if "SMTPUTF8" not in self.extensions:
                self._log.append(f"(not sent: the server does not offer SMTPUTF8, needed for "
                                 f"<{sender}> -> <{recipient}>)")
                return SendResult(None, self.local_ip, self.peer_ip, self.mx_host, self.tls_version,
                                  self.tls_cipher, self.dialogue(), None, 191, SMTPStage.MAIL,
                                  self.extensions)
            mail_from += " SMTPUTF8"
            if "8BITMIME" in self.extensions:
                mail_from += " BODY=8BITMIME"
        if "PIPELINING" in self.extensions:
            reply = await self._envelope_pipelined(mail_from, recipient)
        else:
            reply = await self._command(mail_from, SMTPStage.MAIL)
            if reply.code == 250:
                reply = await self._command(f"RCPT TO:<{recipient}>", SMTPStage.RCPT)
            if reply.code in (250, 251):
                reply = await self._command("DATA", SMTPStage.DATA)
        if reply.code == 354:
            stamp = _clock()
            self._log.append(f"{stamp} C: <{len(data)} bytes of message>")
            self._log.append(f"{stamp} C: .")
            self._writer.write(_dot_stuffed(data))
            reply = await self._read(SMTPStage.EOD, after_dot=True)
        elif reply.code != 421 and (reply.code < 400 or reply.stage is not SMTPStage.MAIL):
            await self._command("RSET", SMTPStage.UNKNOWN)
        queue = queue_id_of(reply.text) if reply.stage is SMTPStage.EOD and reply.code == 250 else None
        if reply.code == 421:
            self.usable = False
        return SendResult(reply, self.local_ip, self.peer_ip, self.mx_host, self.tls_version, self.tls_cipher,
                          self.dialogue(), queue, None, reply.stage, self.extensions)

    async def _envelope_pipelined(self, mail_from: str, recipient: str) -> SMTPReply:
        """MAIL, RCPT and DATA in one write; the first refusal is the answer (354 if all passed)."""
        commands = ((mail_from, SMTPStage.MAIL), (f"RCPT TO:<{recipient}>", SMTPStage.RCPT),
                    ("DATA", SMTPStage.DATA))
        stamp = _clock()
        for command, _stage in commands:
            self._log.append(f"{stamp} C: {command}")
        self._writer.write(b"".join(command.encode("utf-8") + b"\r\n" for command, _ in commands))
        replies: list[SMTPReply] = []
        for _command, stage in commands:
            reply = await self._read(stage, after_dot=False)
            replies.append(reply)
            if reply.code == 421:  # the server is closing the session: no further replies come
                return reply
        mail, rcpt, data = replies
        refusal = next((r for r in (mail, rcpt) if r.code not in (250, 251)), None)
        if refusal is None:
            return data
        if data.code == 354:
            # The server took DATA although the envelope failed (RFC 2920 section 3.1):
            # end the empty message so the session stays in step, then report the refusal.
            self._log.append(f"{_clock()} C: .")
            self._writer.write(b".\r\n")
            await self._read(SMTPStage.EOD, after_dot=False)
        return refusal

    async def close(self) -> None:
        """QUIT politely; errors on the way out do not matter."""
        try:
            if self.usable:
                self._writer.write(b"QUIT\r\n")
                await asyncio.wait_for(self._reader.readline(), 5)
        except (OSError, TimeoutError):
            pass
        self.abort()

    def abort(self) -> None:
        self.usable = False
        self._writer.close()


class RejectedError(DeliveryError):
    """The server refused the session before any message (banner or EHLO not accepted)."""

    def __init__(self, reply: SMTPReply, dialogue: str, facts: ConnectionFacts | None = None) -> None:
        super().__init__(f"{reply.code} at {reply.stage}: {reply.text}")
        self.reply = reply
        self.dialogue = dialogue
        self.facts = facts


def _dot_stuffed(data: bytes) -> bytes:
    """RFC 5321 section 4.5.2 transparency, plus the final ``.`` line."""
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"
