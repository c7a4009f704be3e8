"""RFC 3464 delivery status notifications (and RFC 6533 ``message/global-delivery-status``).

One record per per-recipient block that names a ``Final-Recipient`` (or an
``Original-Recipient``). The machine-readable fields say who and which status; the
human-readable part often says more: the SMTP command the reply answered ("in reply to
RCPT TO command", a Sendmail ``>>> RCPT To:`` transcript), or the whole reason when the
block has no ``Diagnostic-Code``.
"""

from __future__ import annotations

import re
from email import message_from_bytes
from email.message import Message
from email.policy import compat32

from mailcarrier.domain.detectors.base import BounceMail, Found, addresses, wording
from mailcarrier.domain.detectors.prose import address_paragraphs
from mailcarrier.domain.smtp_reply import SMTPStage, find_enhanced_status

__all__ = ["DSNDetector", "field_blocks"]

_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_BLANK = re.compile(r"\n[ \t]*\n")


def _payload_bytes(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload
    raw = part.get_payload()
    return raw.encode("utf-8", "replace") if isinstance(raw, str) else b""


def field_blocks(part: Message) -> list[Message]:
    """The header-like blocks of a status or feedback part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = _payload_bytes(part).decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    return [message_from_bytes(block.strip().encode("utf-8") + b"\n", policy=compat32)
            for block in _BLANK.split(text) if block.strip()]


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
        if part is None:
            return None
        words = wording()
        paragraphs: dict[str, str] | None = None
        found: list[Found] = []
        for block in field_blocks(part):
            recipient = (_first_address(str(block.get("Final-Recipient", "")))
                         or _first_address(str(block.get("Original-Recipient", ""))))
            if not recipient:
                continue
            action = str(block.get("Action", "failed") or "failed").strip().lower() or "failed"
            status_value = str(block.get("Status", "") or "").strip()
            enhanced = find_enhanced_status(status_value)
            status = str(enhanced) if enhanced else None
            diagnostic = " ".join(str(block.get("Diagnostic-Code", "") or "").split())
            dtype = ""
            if ";" in diagnostic[:16]:
                dtype, diagnostic = (s.strip() for s in diagnostic.split(";", 1))
                dtype = dtype.lower()
            remote = str(block.get("Remote-MTA", "") or "").split(";", 1)[-1].strip() or None
            if paragraphs is None:
                paragraphs = {}
                for address, text in address_paragraphs(mail.body):
                    if len(text) > len(paragraphs.get(address, "")):
                        paragraphs[address] = text
            prose = paragraphs.get(recipient) or _sentence(mail.body, recipient)
            if not diagnostic:
                diagnostic = prose
            command = words.command_in(diagnostic)
            if command is SMTPStage.UNKNOWN:
                command = words.command_in(prose)
            if command is SMTPStage.UNKNOWN:
                command = _transcript_command(mail.body, recipient)
            hint = None if dtype == "smtp" and diagnostic else words.hint_in(prose)
            found.append(Found(recipient, diagnostic, status, command, action, remote, hint, dtype))
        return tuple(found) or None
