"""RFC 3464 delivery status notifications (and RFC 6533 ``message/global-delivery-status``).

One record per per-recipient block that names a ``Final-Recipient`` (or an
``Original-Recipient``). The machine-readable fields say who and which status; the
human-readable part often says more: the SMTP command the reply answered ("in reply to
RCPT TO command", a Sendmail ``>>> RCPT To:`` transcript), or the whole reason when the
block has no ``Diagnostic-Code``.
"""

from __future__ import annotations

import re
from dataclasses import replace

from mailcarrier.domain.detectors.base import BounceMail, Found, addresses, split_diagnostic_type, wording
from mailcarrier.domain.detectors.mime import MimePart
from mailcarrier.domain.detectors.prose import address_paragraphs
from mailcarrier.domain.smtp_reply import SMTPStage, find_enhanced_status

__all__ = ["DSNDetector", "field_blocks"]

_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_BLANK = re.compile(r"\n[ \t]*\n")
_ORIGINAL_PARTS = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers", "message/global",
                   "message/global-headers")
# MTAs explain a failure near the top of the notification; the rest is boilerplate.
_NOTICE_LIMIT = 4000


_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")
_STARTS_RECIPIENT = frozenset({"final-recipient", "original-recipient"})


def parse_fields(text: str) -> list[dict[str, str]]:
    """The header-like blocks of a status or feedback report, field names lowercased.

    Blocks are separated by blank lines; a ``Final-Recipient`` (or ``Original-Recipient``)
    in a block that already names a recipient starts a new one, because some MTAs leave
    out the blank line between recipients (a field already in the block starts the next).
    Folded lines continue the previous field.
    """
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
                current, last = {}, ""
            continue
        if line[0] in " \t" and last:
            current[last] += " " + line.strip()
            continue
        m = _FIELD.match(line)
        if m is None:
            continue
        name = m.group(1).lower()
        if name in _STARTS_RECIPIENT and "final-recipient" in current and name in current:
            blocks.append(current)
            current = {}
        if name not in current:
            current[name] = m.group(2).strip()
            last = name
        else:
            last = ""
    if current:
        blocks.append(current)
    return blocks


def field_blocks(part: MimePart) -> list[dict[str, str]]:
    """The blocks of a ``message/delivery-status`` or ``message/feedback-report`` part."""
    return parse_fields(part.text())


_INLINE_DSN = re.compile(r"^(?:reporting-mta|final-recipient)[ \t]*:", re.I | re.M)


def _without(prose: str, reply: str) -> str:
    """``prose`` less the quoted ``reply`` (both read with runs of whitespace as one space, as
    MTAs wrap a long reply over lines); "" when the reply is not quoted there."""
    flat = " ".join(prose.split())
    return flat.replace(reply, " ") if reply and reply in flat else ""


def _first_address(value: str) -> str:
    value = value.split(";", 1)[-1] if ";" in value else value
    found = addresses(value)
    return found[0] if found else ""


def _transcript_command(text: str, recipient: str) -> SMTPStage:
    """The command of a Sendmail-style transcript (``>>> RCPT To:<x>`` then ``<<< 550``)."""
    lowered = text.lower()
    at = lowered.find(">>> rcpt to:<" + recipient)
    if at < 0:
        at = lowered.find("rcpt to:<" + recipient)
    if at >= 0:
        rest = lowered[at: at + 600]
        if "<<< 5" in rest or "<<< 4" in rest or "\n5" in rest or "\n4" in rest:
            return SMTPStage.RCPT
    if ">>> data" in lowered:
        return SMTPStage.DATA
    return SMTPStage.UNKNOWN


def _sentence(text: str, recipient: str) -> str:
    """The sentence naming ``recipient`` ("... wasn't delivered to x because ...")."""
    at = text.lower().find(recipient)
    if at < 0:
        return ""
    start = max(text.rfind(". ", 0, at), text.rfind("\n\n", 0, at)) + 1
    end = text.find("\n\n", at)
    return " ".join(text[start: end if end > 0 else at + 400].split())


class DSNDetector:
    """RFC 3464 / RFC 6533 delivery status notifications."""

    name = "rfc3464"

    def detect(self, mail: BounceMail) -> tuple[Found, ...] | None:
        part = mail.part(*_STATUS_TYPES)
        if part is not None:
            blocks = field_blocks(part)
        else:
            # Some MTAs write the DSN fields inline in the text part.
            inline = _INLINE_DSN.search(mail.text)
            if inline is None or "final-recipient" not in mail.text[inline.start():].lower():
                return None
            blocks = parse_fields(mail.text[inline.start():])
        words = wording()
        reporting = next((b["reporting-mta"].split(";", 1)[-1].strip() for b in blocks
                          if b.get("reporting-mta", "").strip()), None) or None
        paragraphs: dict[str, str] | None = None
        found: list[Found] = []
        for block in blocks:
            recipient = (_first_address(block.get("final-recipient", ""))
                         or _first_address(block.get("original-recipient", "")))
            if not recipient:
                continue
            original = _first_address(block.get("original-recipient", ""))
            action = block.get("action", "failed").strip().lower() or "failed"
            enhanced = find_enhanced_status(block.get("status", ""))
            status = str(enhanced) if enhanced else None
            diagnostic = " ".join(block.get("diagnostic-code", "").split())
            dtype, diagnostic = split_diagnostic_type(diagnostic)
            remote = block.get("remote-mta", "").split(";", 1)[-1].strip() or None
            if paragraphs is None:
                paragraphs = {}
                for address, text in address_paragraphs(mail.body):
                    if len(text) > len(paragraphs.get(address, "")):
                        paragraphs[address] = text
            prose = paragraphs.get(recipient) or _sentence(mail.body, recipient)
            if not diagnostic:
                diagnostic = prose
            # The MTA's own words around the quoted reply ("after HELO", "in reply to RCPT TO
            # command") name the command; the reply's words ("must issue a STARTTLS command
            # first") only when the MTA says nothing.
            command = words.command_in(_without(prose, diagnostic)) if diagnostic else SMTPStage.UNKNOWN
            if command is SMTPStage.UNKNOWN:
                command = words.command_in(diagnostic)
            if command is SMTPStage.UNKNOWN:
                command = words.command_in(prose)
            if command is SMTPStage.UNKNOWN:
                command = _transcript_command(mail.body, recipient)
            hint = None if dtype.lower() == "smtp" and diagnostic else words.hint_in(prose)
            found.append(Found(recipient, diagnostic, status, command, action, remote, hint, dtype,
                               reporting_mta=reporting,
                               original_recipient=original if original and original != recipient else None))
        if len(found) == 1 and part is not None:
            # With one recipient, the notification's prose is about that recipient: pass it
            # on, its explanation may be more specific than the Diagnostic-Code.
            # When the returned message travels in a part of its own, the whole text part
            # is the notice, even below a quoted "Return-Path:" (amavis quotes the
            # offending header lines there, then says what is wrong with them).
            notice = mail.text if mail.part(*_ORIGINAL_PARTS) is not None else mail.body
            found[0] = replace(found[0], context=notice[:_NOTICE_LIMIT])
        return tuple(found) or None
