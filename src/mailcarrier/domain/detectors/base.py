"""What every bounce detector shares: the mail view, the per-recipient finding, wording.

A detector looks at one :class:`BounceMail` and returns the recipients it can read
(:class:`Found`), or ``None`` when the mail is not in its format. The mail view parses
lazily: a detector that only needs the subject never decodes the body.
"""

from __future__ import annotations

import html
import re
import tomllib
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import resources
from typing import Protocol

from mailcarrier.domain.addresses import find_mailboxes
from mailcarrier.domain.detectors.mime import MimePart
from mailcarrier.domain.errors import RuleFileError
from mailcarrier.domain.family_filter import FamilyFilter
from mailcarrier.domain.patterns import family_parts, lowercase_pattern
from mailcarrier.domain.smtp_reply import SMTPStage
from mailcarrier.domain.vocabulary import Reason

__all__ = [
    "BounceMail",
    "Detector",
    "Found",
    "Wording",
    "addresses",
    "compile_wording",
    "split_diagnostic_type",
    "wording",
]

_TAG = re.compile(r"<[^<>]{0,2000}>")
_DAEMONS = ("mailer-daemon", "postmaster", "root", "mail-daemon", "maildaemon", "no-reply",
            "noreply", "post_master", "mailer")


@dataclass(frozen=True, slots=True)
class Found:
    """One recipient as a detector read it, before the reason is decided."""

    recipient: str
    diagnostic: str
    status: str | None = None
    command: SMTPStage = SMTPStage.UNKNOWN
    action: str = "failed"
    remote_mta: str | None = None
    hint: Reason | None = None
    diagnostic_type: str = ""
    reply_code: int | None = None
    #: The notification's own explanation, when it may say more than the diagnostic.
    context: str = ""
    #: The host that wrote the report: RFC 3464 ``Reporting-MTA``, the host a prose
    #: template names ("This is the mail system at host x"), else the notice's sender domain.
    reporting_mta: str | None = None
    #: The address the sender used, when the report names it beside a rewritten one (RFC 3464
    #: ``Original-Recipient``, "x (expanded from y)"): the contact to match.
    original_recipient: str | None = None


class Detector(Protocol):
    """Reads one bounce format; ``None`` when the mail is not in that format."""

    name: str

    def detect(self, mail: BounceMail) -> tuple[Found, ...] | None: ...


_DIAGNOSTIC_TYPE = re.compile(r"([A-Za-z][A-Za-z0-9-]{0,15})[ \t]*;[ \t]*")


def split_diagnostic_type(text: str) -> tuple[str, str]:
    """``"smtp; 550 ..."`` -> ``("smtp", "550 ...")``; ``("", text)`` when untyped (RFC 3464)."""
    m = _DIAGNOSTIC_TYPE.match(text)
    return (m.group(1), text[m.end():]) if m else ("", text)


def addresses(text: str) -> list[str]:
    """Valid addresses in ``text``, lowercased, in order, without repeats (see :mod:`addresses`)."""
    return find_mailboxes(text)


def is_daemon(address: str) -> bool:
    return address.split("@", 1)[0] in _DAEMONS


_BODY_LIMIT = 64_000
_ORIGINAL_TYPES = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers", "message/global",
                   "message/global-headers")


class BounceMail:
    """A parsed email with the parts detectors ask for, each computed on first use."""

    def __init__(self, msg: MimePart) -> None:
        self.msg = msg

    def header(self, name: str) -> str:
        return self.msg.get(name)

    @cached_property
    def subject(self) -> str:
        return self.header("Subject")

    @cached_property
    def sender(self) -> str:
        return self.header("From") + " " + self.header("Return-Path")

    @cached_property
    def parts(self) -> list[MimePart]:
        return list(self.msg.walk())

    def part(self, *types: str) -> MimePart | None:
        for part in self.parts:
            if part.content_type in types:
                return part
        return None

    @cached_property
    def original(self) -> MimePart | None:
        """The returned original message (or its headers), when the bounce carries it."""
        part = self.part(*_ORIGINAL_TYPES)
        if part is None:
            # Prose bounces often quote the original inline after a boundary line.
            m = wording().original.search(self.text)
            if m is None:
                return None
            start = self.text.find("\n", m.start())
            rest = self.text[start + 1:].lstrip("\n") if start >= 0 else ""
            return MimePart(rest.encode("utf-8", "replace"), depth=1) if rest else None
        if part.children:
            return part.children[0]
        return MimePart(part.payload().lstrip(b"\n"), depth=1)

    @cached_property
    def notice_parts(self) -> list[MimePart]:
        """The parts of the notice itself: every part except those inside the returned message.

        A returned message without a Content-Type of its own reads as text/plain; it is the
        sender's text, never the notice (an HTML-only notice would otherwise be read from it).
        """
        found: list[MimePart] = []
        stack = [self.msg]
        while stack:
            part = stack.pop()
            found.append(part)
            if part is not self.msg and part.content_type in _ORIGINAL_TYPES:
                continue
            stack.extend(reversed(part.children))
        return found

    @cached_property
    def text(self) -> str:
        """The human-readable part, line endings normalised to LF."""
        found = ""
        for part in self.notice_parts:
            if part.content_type == "text/plain" and not part.filename:
                found = part.text()
                break
        else:
            for part in self.notice_parts:
                if part.content_type == "text/html":
                    found = html.unescape(_TAG.sub(" ", part.text()).replace("&nbsp;", " "))
                    break
            else:
                if not self.msg.is_multipart:
                    found = self.msg.text()
        return found.replace("\r\n", "\n").replace("\r", "\n")

    @cached_property
    def body(self) -> str:
        """The human-readable part up to where the returned original message begins.

        Capped at :data:`_BODY_LIMIT` characters: every MTA states the failure near the
        top, and a huge part must not make the prose scan slow.
        """
        text = self.text[:_BODY_LIMIT]
        m = wording().original.search(text)
        return text[: m.start()] if m else text

    @cached_property
    def own_addresses(self) -> frozenset[str]:
        """Addresses the bounce itself is from or to: never the failed recipient."""
        return frozenset(addresses(self.header("From") + " " + self.header("To")))


@dataclass(frozen=True, slots=True, eq=False)
class Wording:
    """The compiled contents of ``rules/detectors.toml``."""

    commands: tuple[tuple[re.Pattern[str], SMTPStage], ...]
    hints: tuple[tuple[re.Pattern[str], Reason], ...]
    markers: re.Pattern[str]
    original: re.Pattern[str]
    recipient_hints: tuple[tuple[re.Pattern[str], Reason], ...] = ()
    #: All command (hint) patterns as one family (:func:`family_parts`): a text none of
    #: them matches is ruled out with one or two searches instead of one per pattern.
    command_gate: tuple[re.Pattern[str], ...] = ()
    hint_gate: tuple[re.Pattern[str], ...] = ()
    #: Before the gates: rules a text out in one pass from the words the patterns hold.
    command_filter: FamilyFilter[int] | None = None
    hint_filter: FamilyFilter[int] | None = None

    def command_in(self, text: str) -> SMTPStage:
        text = text.lower()  # patterns are lowercase: no case-folding per character
        if self.command_filter is not None and self.command_filter.rules_out(text):
            return SMTPStage.UNKNOWN
        if self.command_gate and not any(gate.search(text) for gate in self.command_gate):
            return SMTPStage.UNKNOWN
        for pattern, stage in self.commands:
            if pattern.search(text):
                return stage
        return SMTPStage.UNKNOWN

    def hint_in(self, text: str) -> Reason | None:
        text = text.lower()
        if self.hint_filter is not None and self.hint_filter.rules_out(text):
            return None
        if self.hint_gate and not any(gate.search(text) for gate in self.hint_gate):
            return None
        for pattern, reason in self.hints:
            if pattern.search(text):
                return reason
        return None

    def recipient_hint(self, recipient: str) -> Reason | None:
        for pattern, reason in self.recipient_hints:
            if pattern.search(recipient):
                return reason
        return None


def _any(patterns: object, where: str, flags: int = re.IGNORECASE) -> re.Pattern[str]:
    if not isinstance(patterns, list) or not patterns:
        raise RuleFileError(f"detectors.toml: {where} must be a non-empty list")
    return re.compile("|".join(f"(?:{p})" for p in patterns), flags)


@lru_cache(maxsize=1)
def wording() -> Wording:
    """The shipped detector wording, compiled on first use."""
    data = (resources.files("mailcarrier.domain") / "rules" / "detectors.toml").read_text(encoding="utf-8")
    return compile_wording(data)


def compile_wording(data: str) -> Wording:
    """Compile a detectors.toml-layout text; RuleFileError when it is invalid."""
    try:
        doc = tomllib.loads(data)
        commands = tuple((lowercase_pattern(str(c["pattern"])), SMTPStage(str(c["stage"])))
                         for c in doc.get("command", []))
        hints = tuple((lowercase_pattern(str(h["pattern"])), Reason(str(h["reason"])))
                      for h in doc.get("hint", []))
        recipient_hints = tuple((re.compile(str(h["pattern"]), re.IGNORECASE), Reason(str(h["reason"])))
                                for h in doc.get("recipient_hint", []))
        markers = _any(doc.get("markers", {}).get("body"), "[markers] body")
        original = _any(doc.get("boundaries", {}).get("original"), "[boundaries] original",
                        re.IGNORECASE | re.MULTILINE)
    except (tomllib.TOMLDecodeError, KeyError, ValueError, TypeError, AttributeError, re.error) as exc:
        raise RuleFileError(f"detectors.toml: {exc}") from None
    # The gates match wherever one of the patterns does (case-insensitive when one is).
    command_sources = tuple(p.pattern for p, _ in commands)
    hint_sources = tuple(p.pattern for p, _ in hints)
    return Wording(commands, hints, markers, original, recipient_hints,
                   family_parts(command_sources) if commands else (),
                   family_parts(hint_sources) if hints else (),
                   FamilyFilter({0: command_sources}), FamilyFilter({0: hint_sources}))
