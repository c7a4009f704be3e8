"""SMTP replies (RFC 5321 §4.2) and enhanced status codes (RFC 3463) as values.

A reply remembers the command it answered (:class:`SMTPStage`): the same ``452`` means
"too many recipients, send the rest later" after RCPT and "out of storage" after DATA,
and a ``554`` at connect time is a block of the sending host, not a bad address.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from mailcarrier.domain.errors import ParseError

__all__ = ["EnhancedStatus", "SMTPReply", "SMTPStage", "find_enhanced_status", "parse_reply",
           "status_in_text"]


class SMTPStage(enum.StrEnum):
    """The point of the SMTP dialogue a reply answered."""

    CONNECT = "connect"  #: the greeting banner
    EHLO = "ehlo"  #: EHLO/HELO
    STARTTLS = "starttls"  #: STARTTLS and the TLS handshake
    MAIL = "mail"  #: MAIL FROM
    RCPT = "rcpt"  #: RCPT TO
    DATA = "data"  #: the DATA command itself (before the content)
    EOD = "eod"  #: the final "." ending the content
    UNKNOWN = "unknown"  #: not known (e.g. a reply quoted in a bounce email)


@dataclass(frozen=True, slots=True, order=True)
class EnhancedStatus:
    """An RFC 3463 status code ``class.subject.detail``, e.g. ``5.1.1``."""

    klass: int
    subject: int
    detail: int

    def __str__(self) -> str:
        return f"{self.klass}.{self.subject}.{self.detail}"

    @classmethod
    def parse(cls, text: str) -> EnhancedStatus:
        """Read ``"5.1.1"``; raises :class:`ParseError` for anything else."""
        m = _STATUS_EXACT.fullmatch(text.strip())
        if m is None:
            raise ParseError(f"not an RFC 3463 status code: {text.strip()[:40]!r}", excerpt=text)
        return cls(int(m[1]), int(m[2]), int(m[3]))

    @property
    def is_permanent(self) -> bool:
        return self.klass == 5

    @property
    def is_transient(self) -> bool:
        return self.klass == 4


_STATUS_EXACT = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")
# An enhanced code inside free text: not part of a longer dotted number (an IP address).
_STATUS_IN_TEXT = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")


def find_enhanced_status(text: str) -> EnhancedStatus | None:
    """The first RFC 3463 code found in free text, or None."""
    m = _STATUS_IN_TEXT.search(text)
    if m is None:
        return None
    return EnhancedStatus(int(m[1]), int(m[2]), int(m[3]))


def status_in_text(text: str) -> str:
    """The first RFC 3463 code in free text as ``"5.1.1"``, or ``""`` (no object built)."""
    m = _STATUS_IN_TEXT.search(text)
    return m[0] if m else ""


@dataclass(frozen=True, slots=True)
class SMTPReply:
    """One complete (possibly multi-line) SMTP reply."""

    code: int
    text: str
    enhanced: EnhancedStatus | None = None
    stage: SMTPStage = SMTPStage.UNKNOWN

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return 500 <= self.code < 600

    def __str__(self) -> str:
        head = f"{self.code} {self.enhanced} " if self.enhanced else f"{self.code} "
        return head + self.text


_LINE = re.compile(r"\s*([2-5]\d\d)([ \-]|$)(.*)", re.DOTALL)
# "#5.1.0" is how Cisco Secure Email (IronPort) and qmail-style servers write the status.
_LEADING_STATUS = re.compile(r"#?([245]\.\d{1,3}\.\d{1,3})(?:\s+|$)")


def parse_reply(raw: str | bytes, stage: SMTPStage = SMTPStage.UNKNOWN) -> SMTPReply:
    """Parse a raw reply, single- or multi-line (``550-5.1.1 ...`` / ``550 5.1.1 ...``).

    The enhanced code is taken from the first line that carries one at its start (RFC
    2034 puts it after the reply code on every line); the text joins the lines without
    their code prefixes. Raises :class:`ParseError` when no line starts with a reply code.
    """
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    code: int | None = None
    enhanced: EnhancedStatus | None = None
    parts: list[str] = []
    for line in raw.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m is None:
            if code is None:
                raise ParseError("an SMTP reply starts with a three-digit code", excerpt=line)
            parts.append(line.strip())  # a continuation some servers send without a code
            continue
        if code is None:
            code = int(m[1])
        body = m[3].strip()
        sm = _LEADING_STATUS.match(body)
        if sm is not None:
            if enhanced is None:
                enhanced = EnhancedStatus.parse(sm[1])
            body = body[sm.end():]
        if body:
            parts.append(body)
    if code is None:
        raise ParseError("empty SMTP reply", excerpt=raw)
    return SMTPReply(code=code, text=" ".join(parts), enhanced=enhanced, stage=stage)
