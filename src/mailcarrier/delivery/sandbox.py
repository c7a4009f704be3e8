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
* ``aol*``       accepted with 250, then bounced later (the AOL case of seed 002): when
                 ``dsn_target`` is set, an RFC 3464 ``multipart/report`` DSN is mailed
                 after ``dsn_delay`` seconds to the message's return-path (the VERP
                 address) at that host:port, e.g. ``mailcarrier inbound``
* any address at a *filtering gateway* domain (one whose name starts with ``gateway``,
  e.g. ``gateway.example``, or one listed in ``filtering_domains``) except local parts
  starting with ``vip``: 550 5.1.1 user unknown, although the mailbox exists — the B2B
  appliance of seeds 002 and 004 that fakes "user unknown" to refuse bulk mail. Adding a
  domain to ``filtering_domains`` between two mailings plays a gateway that suddenly
  refuses addresses it accepted before.
* anything else  accepted

Unknown-user texts follow the provider of the recipient domain. The sandbox
advertises PIPELINING (RFC 2920) like real MXs. Everything accepted is recorded
(sender, recipient, Message-ID) so tests can compare what the server got with
what the store says.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import logging
import socket
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailcarrier.delivery.transport import SmtpSession

__all__ = ["Received", "Sandbox", "SandboxHandler", "build_dsn", "dsn_target_problem"]

_log = logging.getLogger("mailcarrier.sandbox")

_UNKNOWN_TEXT = {
    "gmail.com": "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n"
                 "550 5.1.1 double-checking the recipient's email address for typos.",
    "outlook.com": "550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302).",
    "hotmail.com": "550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302).",
    "yahoo.com": "554 delivery error: dd This user doesn't have a yahoo.com account ({address}) [0] - "
                 "mta1001.mail.gq1.yahoo.com",
    "gmx.net": "550 Requested action not taken: mailbox unavailable",
    "orange.fr": "550 5.1.1 <{address}>: Recipient address rejected: User unknown (in reply to RCPT TO)",
}
_DEFAULT_UNKNOWN = "550 5.1.1 <{address}>: Recipient address rejected: User unknown in virtual mailbox table"
#: What a filtering appliance answers for a real mailbox it refuses to deliver to.
_GATEWAY_UNKNOWN = "550 5.1.1 <{address}>: Recipient address rejected: User unknown"


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
    #: Where to mail asynchronous bounces (host, port); None keeps them in the list only.
    dsn_target: tuple[str, int] | None = None
    dsn_delay: float = 1.0
    dsns_sent: list[tuple[str, str]] = field(default_factory=list)
    dsn_errors: list[str] = field(default_factory=list)
    #: Domains playing a B2B filtering gateway (besides those named ``gateway*``).
    filtering_domains: set[str] = field(default_factory=set)
    _greylisted: set[str] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle_EHLO(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        reply = await self._answer_rcpt(server, envelope, address)
        _log.info("RCPT %s from %s: %s", address, envelope.mail_from, reply.splitlines()[-1],
                  extra={"event": "sandbox.rcpt"})
        return reply

    async def _answer_rcpt(self, server: SMTP, envelope: Envelope, address: str) -> str:
        local, _, domain = address.lower().partition("@")
        if (domain.startswith("gateway") or domain in self.filtering_domains) \
                and not local.startswith("vip"):
            return _GATEWAY_UNKNOWN.format(address=address)
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
            return "250 OK (connection dropped)"
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
                if self.dsn_target is None or not envelope.mail_from:
                    _log.info("%s: accepted; its late bounce is kept here (no bounce target or no "
                              "return path)", recipient, extra={"event": "sandbox.late_bounce_kept"})
                else:
                    _log.info("%s: accepted; a late bounce goes to %s at %s:%d in %.0f s", recipient,
                              envelope.mail_from, *self.dsn_target, self.dsn_delay,
                              extra={"event": "sandbox.late_bounce_planned"})
                    headers_only = content.split(b"\r\n\r\n", 1)[0] + b"\r\n"
                    task = asyncio.get_running_loop().create_task(
                        self._bounce_later(str(envelope.mail_from), recipient, headers_only))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        queue_id = f"SBX{len(self.received):06d}"
        _log.info("DATA %s from %s for %s: 250 queued as %s", message_id, envelope.mail_from,
                  ", ".join(envelope.rcpt_tos), queue_id, extra={"event": "sandbox.data"})
        return f"250 2.0.0 Ok: queued as {queue_id}"

    async def _bounce_later(self, return_path: str, recipient: str, headers: bytes) -> None:
        """Mail a DSN for ``recipient`` to ``return_path`` after the delay, like a real MX would."""
        await asyncio.sleep(self.dsn_delay)
        assert self.dsn_target is not None
        host, port = self.dsn_target
        domain = recipient.rpartition("@")[2] or "sandbox.localhost"
        dsn = build_dsn(return_path, recipient, headers, reporting_mta=f"mx.{domain}")
        try:
            session = await SmtpSession.open(host, port, helo_name=f"mx.{domain}", timeout=10)
            try:
                result = await session.send("", return_path, dsn)
            finally:
                await session.close()
            if result.reply is None or result.reply.code != 250:
                self.dsn_errors.append(f"{return_path}: {result.reply}")
                _log.warning("late bounce for %s refused by %s:%d: %s", recipient, host, port, result.reply,
                             extra={"event": "sandbox.late_bounce_refused"})
            else:
                self.dsns_sent.append((return_path, recipient))
                _log.info("late bounce for %s delivered to %s at %s:%d", recipient, return_path, host, port,
                          extra={"event": "sandbox.late_bounce_sent"})
        except Exception as error:  # a test double reports, never crashes the server
            self.dsn_errors.append(f"{return_path}: {error}")
            _log.warning("late bounce for %s could not be delivered to %s:%d (%s): is `mailcarrier "
                         "inbound` running there? The bounce is lost.", recipient, host, port, error,
                         extra={"event": "sandbox.late_bounce_failed"})


def dsn_target_problem(host: str, port: int, timeout: float = 2.0) -> str | None:
    """Why late bounces cannot reach ``host:port`` now (nothing listening...), or None.

    A probe connection, closed at once: the sandbox uses it to warn at start-up that its
    late bounces will be lost unless ``mailcarrier inbound`` runs there.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"nothing answers on {host}:{port} ({exc.strerror or exc})"


class Sandbox:
    """Runs the sandbox MX on a loopback port in a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, stall_seconds: float = 60.0,
                 tls_context: ssl.SSLContext | None = None, dsn_target: tuple[str, int] | None = None,
                 dsn_delay: float = 1.0) -> None:
        """``tls_context`` (a server context with a certificate) makes the sandbox offer STARTTLS;
        ``dsn_target`` (host, port) is where asynchronous bounces are mailed."""
        if port == 0:
            with socket.socket() as probe:
                probe.bind((host, 0))
                port = int(probe.getsockname()[1])
        self.handler = SandboxHandler(stall_seconds=stall_seconds, dsn_target=dsn_target, dsn_delay=dsn_delay)
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


def build_dsn(return_path: str, recipient: str, original_headers: bytes, *, reporting_mta: str,
              status: str = "5.1.1",
              diagnostic: str = "550 5.1.1 <{recipient}>: Recipient address rejected: User unknown") -> bytes:
    """An RFC 3464 delivery status notification (``multipart/report``) with CRLF line ends.

    Parts: a human-readable explanation, the ``message/delivery-status`` fields (per message:
    Reporting-MTA, Arrival-Date; per recipient: Final-Recipient, Action, Status, Remote-MTA,
    Diagnostic-Code) and the original headers as ``text/rfc822-headers``.
    """
    now = format_datetime(datetime.now(UTC))
    boundary = f"=_sandbox_dsn_{abs(hash((return_path, recipient, now))):x}"
    diagnostic_text = diagnostic.format(recipient=recipient)
    status_fields = (
        f"Reporting-MTA: dns; {reporting_mta}\r\n"
        f"Arrival-Date: {now}\r\n"
        "\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Original-Recipient: rfc822; {recipient}\r\n"
        "Action: failed\r\n"
        f"Status: {status}\r\n"
        f"Remote-MTA: dns; {reporting_mta}\r\n"
        f"Diagnostic-Code: smtp; {diagnostic_text}\r\n"
        f"Last-Attempt-Date: {now}\r\n"
    )
    head = (
        f"From: Mail Delivery Subsystem <MAILER-DAEMON@{reporting_mta}>\r\n"
        f"To: <{return_path}>\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Date: {now}\r\n"
        f"Message-ID: {make_msgid(domain=reporting_mta)}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
        "\r\n"
        "This is a MIME-encapsulated message.\r\n"
        "\r\n"
    )
    human = (
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"This is the mail system at host {reporting_mta}.\r\n\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients.\r\n\r\n"
        f"<{recipient}>: host {reporting_mta} said: {diagnostic_text}\r\n"
    )
    machine = (
        f"--{boundary}\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        f"{status_fields}"
    )
    original = f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n".encode("ascii")
    tail = f"\r\n--{boundary}--\r\n".encode("ascii")
    return (head + human + machine).encode("utf-8") + original + original_headers.rstrip(b"\r\n") + tail
