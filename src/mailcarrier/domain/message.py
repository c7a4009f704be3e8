"""Compose the MIME message of one delivery from pre-rendered parts.

Building with ``email.message.EmailMessage`` costs milliseconds per message;
here the bytes are joined directly, because the bodies arrive already
personalised and only a handful of headers differ per recipient. The result
is a ``multipart/alternative`` (text + HTML) with CRLF line ends, ready for
DKIM signing and the SMTP DATA phase.

The VERP return-path is the envelope sender (MAIL FROM); it is not written
as a ``Return-Path`` header, which RFC 5321 section 4.4 reserves for the
final delivery server.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime

__all__ = ["ComposedMessage", "MessageParts", "compose_message"]

_MAX_LINE = 998  # RFC 5322 section 2.1.1


@dataclass(frozen=True, slots=True)
class MessageParts:
    """Everything that goes into one message; values are already rendered."""

    from_header: str  #: e.g. ``Shop <news@shop.example>``
    to: str
    subject: str
    text: str
    html: str
    message_id: str  #: without angle brackets
    date: datetime  #: timezone-aware
    return_path: str
    unsubscribe_url: str  #: https one-click URL (RFC 8058)
    unsubscribe_mailto: str  #: address for mail-based unsubscribe
    feedback_id: str  #: Gmail Feedback-ID, ``a:b:c:sender``
    delivery_token: str  #: our own header to tie replies and bounces to the delivery
    boundary: str  #: unique per message; passed in because the domain core draws no random numbers


@dataclass(frozen=True, slots=True)
class ComposedMessage:
    envelope_from: str
    envelope_to: str
    data: bytes  #: CRLF line ends, no trailing dot-stuffing (the transport does that)


def _clean(name: str, value: str) -> str:
    """Refuse header values that would inject headers or break the message."""
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"header {name} contains a line break or NUL: {value[:60]!r}")
    return value


def _header_text(value: str) -> str:
    """ASCII stays as is; anything else becomes RFC 2047 encoded-words."""
    if value.isascii():
        return value
    return Header(value, "utf-8").encode(linesep="\r\n")


def _body(text: str) -> tuple[str, bytes]:
    """Plain 7bit when safe, else base64 (fast C code, always valid)."""
    # Text line breaks are CRLF on the wire (RFC 2046 4.1.1), whatever the template used.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if text.isascii() and "\0" not in text and all(len(line) <= _MAX_LINE for line in lines):
        return "7bit", "\r\n".join(lines).encode("ascii")
    encoded = base64.encodebytes("\r\n".join(lines).encode("utf-8"))
    return "base64", encoded.replace(b"\n", b"\r\n").rstrip(b"\r\n")


def _part(content_type: str, text: str) -> bytes:
    encoding, body = _body(text)
    head = f"Content-Type: {content_type}; charset=utf-8\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n"
    return head.encode("ascii") + body + b"\r\n"


def compose_message(parts: MessageParts) -> ComposedMessage:
    """Join headers and bodies into the bytes to send.

    Raises ValueError for header values with line breaks (header injection)
    and for a naive ``date``.
    """
    if parts.date.tzinfo is None:
        raise ValueError("message date must be timezone-aware")
    boundary = _clean("boundary", parts.boundary)
    if not boundary or len(boundary) > 70 or not boundary.isascii() or " " in boundary:
        raise ValueError(f"invalid MIME boundary {boundary!r}")
    headers = [
        ("From", _header_text(_clean("From", parts.from_header))),
        ("To", _clean("To", parts.to)),
        ("Subject", _header_text(_clean("Subject", parts.subject))),
        ("Date", format_datetime(parts.date)),
        ("Message-ID", f"<{_clean('Message-ID', parts.message_id)}>"),
        ("MIME-Version", "1.0"),
        ("List-Unsubscribe",
         f"<{_clean('List-Unsubscribe', parts.unsubscribe_url)}>, "
         f"<mailto:{_clean('List-Unsubscribe', parts.unsubscribe_mailto)}>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("Feedback-ID", _clean("Feedback-ID", parts.feedback_id)),
        ("X-Mailcarrier-Delivery", _clean("X-Mailcarrier-Delivery", parts.delivery_token)),
        ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
    ]
    head = "".join(f"{name}: {value}\r\n" for name, value in headers).encode("utf-8")
    marker = f"--{boundary}\r\n".encode("ascii")
    body = (
        marker + _part("text/plain", parts.text)
        + marker + _part("text/html", parts.html)
        + f"--{boundary}--\r\n".encode("ascii")
    )
    envelope_from = _clean("return path", parts.return_path)
    return ComposedMessage(envelope_from, _clean("To", parts.to), head + b"\r\n" + body)
