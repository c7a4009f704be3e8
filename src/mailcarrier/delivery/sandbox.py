"""The sandbox MX: a local SMTP server that plays many recipient domains.

Tests and the demo send real SMTP to it instead of the Internet. The
behaviour is chosen by the recipient's local part, so one audience can mix
every case a real sending day brings:

* ``unknown*``   550 5.1.1 user unknown, worded like the big providers
* ``full*``      452 4.2.2 mailbox full
* ``grey*``      451 4.7.1 greylisted on the first try, accepted afterwards
* ``throttle*``  421 4.7.0 too many connections (the server closes the session)
* ``slowrcpt*``  no answer to RCPT (a timeout before the final ".")
* ``slowdata*``  no answer after the final "." (outcome unknown)
* ``drop*``      the connection is dropped at RCPT
* ``aol*``       accepted with 250 and listed in ``asynchronous_bounces`` (return-path,
                 recipient) for a later bounce DSN; sending that DSN is not built yet
* anything else  accepted

Everything accepted is recorded (sender, recipient, Message-ID) so tests can
compare what the server got with what the store says.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["Received", "Sandbox", "SandboxHandler"]

_UNKNOWN_TEXT = {
    "gmail.com": "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n"
                 "550 5.1.1 double-checking the recipient's email address for typos.",
    "outlook.com": "550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302).",
}
_DEFAULT_UNKNOWN = "550 5.1.1 <{address}>: Recipient address rejected: User unknown in virtual mailbox table"


@dataclass(frozen=True, slots=True)
class Received:
    mail_from: str
    recipient: str
    message_id: str | None
    size: int


@dataclass
class SandboxHandler:
    """aiosmtpd handler with the behaviours listed in the module docstring."""

    stall_seconds: float = 60.0
    received: list[Received] = field(default_factory=list)
    asynchronous_bounces: list[tuple[str, str]] = field(default_factory=list)
    _greylisted: set[str] = field(default_factory=set)

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        local, _, domain = address.lower().partition("@")
        if local.startswith("unknown"):
            return _UNKNOWN_TEXT.get(domain, _DEFAULT_UNKNOWN).format(address=address)
        if local.startswith("full"):
            return "452 4.2.2 The email account that you tried to reach is over quota."
        if local.startswith("grey") and address.lower() not in self._greylisted:
            self._greylisted.add(address.lower())
            return "451 4.7.1 Greylisted, please try again later"
        if local.startswith("throttle"):
            return "421 4.7.0 Too many concurrent SMTP connections; please try again later"
        if local.startswith("slowrcpt"):
            await asyncio.sleep(self.stall_seconds)
        if local.startswith("drop"):
            assert server.transport is not None
            server.transport.close()
            return "250 OK"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        content = envelope.original_content or b""
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(content)
        message_id = headers.get("Message-ID")
        for recipient in envelope.rcpt_tos:
            local = recipient.lower().partition("@")[0]
            if local.startswith("slowdata"):
                await asyncio.sleep(self.stall_seconds)
            self.received.append(Received(str(envelope.mail_from), recipient, message_id, len(content)))
            if local.startswith("aol"):
                self.asynchronous_bounces.append((str(envelope.mail_from), recipient))
        return f"250 2.0.0 Ok: queued as SBX{len(self.received):06d}"


class Sandbox:
    """Runs the sandbox MX on a loopback port in a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, stall_seconds: float = 60.0,
                 tls_context: ssl.SSLContext | None = None) -> None:
        """``tls_context`` (a server context with a certificate) makes the sandbox offer STARTTLS."""
        if port == 0:
            with socket.socket() as probe:
                probe.bind((host, 0))
                port = int(probe.getsockname()[1])
        self.handler = SandboxHandler(stall_seconds=stall_seconds)
        self.host, self.port = host, port
        self._controller = Controller(self.handler, hostname=host, port=port, tls_context=tls_context)

    def __enter__(self) -> Sandbox:
        self._controller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._controller.stop()

    @property
    def received(self) -> list[Received]:
        return self.handler.received
