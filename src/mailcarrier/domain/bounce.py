"""Read a bounce email: which recipients failed, why, and what to do about it.

:func:`parse_bounce` recognises, in order of authority:

1. ARF feedback reports (RFC 5965): one ``feedback`` record with the feedback type;
2. delivery status notifications (RFC 3464, and RFC 6533 ``message/global-delivery-status``):
   one record per ``Final-Recipient`` block;
3. auto-replies (RFC 3834 ``Auto-Submitted``, vacation wording): one ``vacation`` record;
4. the non-standard reports many MTAs still send (Postfix/Exim/qmail/Sendmail/Exchange
   prose): recipients and diagnostics read from the human-readable part.

It returns ``None`` for ordinary mail and raises :class:`ParseError` only for input that
cannot be an email at all. Reasons come from :func:`mailcarrier.domain.classify.classify`,
so replies and bounces share one rule set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.policy import compat32

from mailcarrier.domain.classify import classify
from mailcarrier.domain.errors import ParseError
from mailcarrier.domain.smtp_reply import SMTPStage, find_enhanced_status
from mailcarrier.domain.vocabulary import Category, Reason, category_of

__all__ = ["BounceRecord", "BounceReport", "parse_bounce"]


@dataclass(frozen=True, slots=True)
class BounceRecord:
    """What one recipient's delivery came to, as the bounce tells it."""

    recipient: str
    action: str
    status: str | None
    reply_code: int | None
    remote_mta: str | None
    diagnostic: str
    reason: Reason
    category: Category
    hard_bounce: bool
    rule: str


@dataclass(frozen=True, slots=True)
class BounceReport:
    """A parsed bounce, complaint or auto-reply."""

    kind: str  #: dsn | nonstandard | feedback | autoreply
    records: tuple[BounceRecord, ...]
    original_message_id: str | None = None
    #: ``X-Mailcarrier-*`` and ``Feedback-ID`` headers found in the returned message.
    original_headers: tuple[tuple[str, str], ...] = ()
    feedback_type: str | None = None


_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
_REPLY_CODE = re.compile(r"(?<![\d.])([245]\d\d)(?:[ \-]|$)")
_STAGE_HINT = re.compile(
    r"(?:in reply to|after|while sending|during)\s+(?:the\s+)?"
    r"(rcpt to|end of data|data|mail from|ehlo|helo|initial connection|connect)", re.I)
_STAGES = {"rcpt to": SMTPStage.RCPT, "end of data": SMTPStage.EOD, "data": SMTPStage.DATA,
           "mail from": SMTPStage.MAIL, "ehlo": SMTPStage.EHLO, "helo": SMTPStage.EHLO,
           "initial connection": SMTPStage.CONNECT, "connect": SMTPStage.CONNECT}
_CODE_WITH_STATUS = re.compile(r"(?<![\d.])([245]\d\d)[ \-][245]\.\d{1,3}\.\d{1,3}")
_BOUNCE_SENDER = re.compile(r"mailer-daemon|postmaster|mail delivery (sub)?system|mdaemon|mailer@", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (status )?(notification|failure|failed|report)|returned mail|"
    r"failure notice|mail delivery failed|could not be delivered|non[- ]?delivery|delivery problem|"
    r"rejected|nicht zustellbar|non remis|mail system error|warning: could not send|"
    r"message not delivered|delivery has failed|bounce", re.I)
_VACATION_SUBJECT = re.compile(
    r"out of (the )?office|auto(matic)?[- ]?(reply|response)|vacation|absence|abwesen|"
    r"r[ée]ponse automatique|risposta automatica|away from", re.I)
_OUR_HEADER = re.compile(r"^(x-mailcarrier-[a-z-]+|feedback-id)$", re.I)
_ORIGINAL_MARKERS = re.compile(
    r"^(-+ ?(original message|this is a copy|the header of the original|below this line)|"
    r"content-type: message/rfc822|received: |return-path: |--- below this line)", re.I | re.M)


def _decode(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def _addr(value: str | None) -> str:
    if not value:
        return ""
    value = value.split(";", 1)[-1] if ";" in value else value
    m = _ADDRESS.search(value)
    return m.group(0).strip(".").lower() if m else ""


def _record(recipient: str, action: str, status: str | None, diagnostic: str,
            remote_mta: str | None, permanent_hint: bool | None) -> BounceRecord:
    diagnostic = " ".join(diagnostic.split())
    text = diagnostic
    if text.lower().startswith(("smtp;", "x-unix;", "x-postfix;", "x-local;")):
        text = text.split(";", 1)[1].strip()
    code_match = (_REPLY_CODE.match(text) or _CODE_WITH_STATUS.search(text)
                  or _REPLY_CODE.search(text[:40]))
    code = int(code_match.group(1)) if code_match else None
    if status is None or status.endswith(".0.0") or status in ("5.0.0", "4.0.0"):
        found = find_enhanced_status(text)
        status = str(found) if found and not str(found).endswith(".0.0") else status
    stage_match = _STAGE_HINT.search(text)
    stage = _STAGES[stage_match.group(1).lower()] if stage_match else SMTPStage.UNKNOWN
    result = classify(text or (status or ""), code=code if code and code >= 400 else None,
                      status=status, stage=stage, permanent_hint=permanent_hint)
    return BounceRecord(recipient, action, status, code, remote_mta, diagnostic, result.reason,
                        result.category, result.hard_bounce, result.rule)


def _original_info(msg: Message) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers", "message/global"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                original = inner[0]
            else:
                original = message_from_bytes(_raw_payload(part), policy=compat32)
            ours = tuple((k, str(v)) for k, v in original.items() if _OUR_HEADER.match(k))
            mid = original.get("Message-ID")
            return (str(mid).strip() if mid else None), ours
    return None, ()


def _raw_payload(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload
    raw = part.get_payload()
    return raw.encode("utf-8", "replace") if isinstance(raw, str) else b""


def _field_blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = _raw_payload(part).decode("utf-8", "replace").replace("\r\n", "\n")
    return [message_from_bytes(block.strip().encode("utf-8") + b"\n", policy=compat32)
            for block in re.split(r"\n\s*\n", text) if block.strip()]


def _parse_dsn(msg: Message, status_part: Message) -> tuple[BounceRecord, ...]:
    records: list[BounceRecord] = []
    blocks = _field_blocks(status_part)
    for block in blocks:
        recipient = _addr(block.get("Final-Recipient")) or _addr(block.get("Original-Recipient"))
        if not recipient:
            continue
        action = str(block.get("Action", "failed")).strip().lower() or "failed"
        status_value = str(block.get("Status", "")).strip()
        found = find_enhanced_status(status_value)
        status = str(found) if found else None
        diagnostic = str(block.get("Diagnostic-Code", "") or "").strip()
        remote = str(block.get("Remote-MTA", "") or "").split(";", 1)[-1].strip() or None
        if not diagnostic:
            diagnostic = _prose_diagnostic(_human_text(msg), recipient)
        hint = {"failed": True, "delayed": False}.get(action)
        records.append(_record(recipient, action, status, diagnostic, remote, hint))
    return tuple(records)


def _human_text(msg: Message) -> str:
    for part in msg.walk():
        if part.get_content_type() == "text/plain" and not part.get_filename():
            return _decode(part)
    if not msg.is_multipart():
        return _decode(msg)
    return ""


def _prose_diagnostic(text: str, recipient: str) -> str:
    """The lines that talk about ``recipient`` in a human-readable bounce."""
    lowered = text.lower()
    at = lowered.find(recipient)
    if at < 0:
        return ""
    window = text[at: at + 1000]
    lines = [ln.strip() for ln in window.splitlines() if ln.strip()]
    return " ".join(lines[:8])


def _body_before_original(text: str) -> str:
    m = _ORIGINAL_MARKERS.search(text)
    return text[: m.start()] if m else text


def _parse_prose(msg: Message, from_daemon: bool) -> tuple[BounceRecord, ...]:
    text = _body_before_original(_human_text(msg))
    own = {_addr(str(msg.get("From", ""))), _addr(str(msg.get("To", "")))}
    # Exim and Google name the failed recipients in a header: more reliable than prose.
    seen = list(dict.fromkeys(
        m.group(0).strip(".").lower() for m in _ADDRESS.finditer(str(msg.get("X-Failed-Recipients", "")))))
    for m in _ADDRESS.finditer("" if seen else text):
        address = m.group(0).strip(".").lower()
        local = address.split("@", 1)[0]
        if address in own or address in seen or local in ("mailer-daemon", "postmaster", "root"):
            continue
        seen.append(address)
    if not seen:
        return ()
    records = []
    for address in seen[:50]:
        diagnostic = _prose_diagnostic(text, address) or text.strip()[:600]
        record = _record(address, "failed", None, diagnostic, None, True)
        # From a person, prose naming an address with no code, status or known wording
        # is no evidence of a failure (a reply quoting an address, say).
        if (not from_daemon and record.reason is Reason.UNDEFINED and record.reply_code is None
                and record.status is None):
            continue
        records.append(record)
    return tuple(records)


def _parse_feedback(msg: Message, part: Message) -> BounceReport:
    fields: dict[str, str] = {}
    for block in _field_blocks(part):
        for key, value in block.items():
            fields.setdefault(key.lower(), str(value).strip())
    feedback_type = fields.get("feedback-type", "other").lower()
    recipient = _addr(fields.get("original-rcpt-to"))
    mid, ours = _original_info(msg)
    if not recipient:
        for sub in msg.walk():
            if sub.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
                inner = sub.get_payload()
                original = inner[0] if isinstance(inner, list) and inner else \
                    message_from_bytes(_raw_payload(sub), policy=compat32)
                if isinstance(original, Message):
                    recipient = _addr(str(original.get("To", "")))
                break
    record = BounceRecord(recipient, "feedback", None, None, None, feedback_type, Reason.FEEDBACK,
                          category_of(Reason.FEEDBACK), False, "arf")
    return BounceReport("feedback", (record,), mid, ours, feedback_type)


def _is_autoreply(msg: Message) -> bool:
    submitted = str(msg.get("Auto-Submitted", "")).lower()
    if submitted.startswith("auto-replied"):
        return True
    if msg.get("X-Autoreply") or msg.get("X-Autorespond"):
        return True
    subject = str(msg.get("Subject", ""))
    return bool(_VACATION_SUBJECT.search(subject)) and not _BOUNCE_SUBJECT.search(subject)


def parse_bounce(raw: bytes) -> BounceReport | None:
    """Parse one email; ``None`` when it is neither a bounce, a complaint nor an auto-reply."""
    if not isinstance(raw, (bytes, bytearray)):
        raise ParseError("a bounce is read from bytes")
    if not raw.strip():
        raise ParseError("empty input is not an email")
    try:
        msg = message_from_bytes(bytes(raw), policy=compat32)
    except Exception as exc:  # the stdlib parser is lenient; anything it raises is malformed input
        raise ParseError(f"unreadable email: {exc}", excerpt=raw[:80].decode("latin-1")) from None
    if not msg.keys():
        raise ParseError("no header fields: not an email", excerpt=raw[:80].decode("latin-1"))
    status_part = feedback_part = None
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/delivery-status", "message/global-delivery-status") and status_part is None:
            status_part = part
        elif ctype == "message/feedback-report" and feedback_part is None:
            feedback_part = part
    if feedback_part is not None:
        return _parse_feedback(msg, feedback_part)
    mid, ours = _original_info(msg)
    if status_part is not None:
        records = _parse_dsn(msg, status_part)
        if records:
            return BounceReport("dsn", records, mid, ours)
    sender = str(msg.get("From", "")) + " " + str(msg.get("Return-Path", ""))
    subject = str(msg.get("Subject", ""))
    looks_bounce = bool(_BOUNCE_SENDER.search(sender) or _BOUNCE_SUBJECT.search(subject)
                        or status_part is not None)
    if looks_bounce:
        records = _parse_prose(msg, bool(_BOUNCE_SENDER.search(sender)))
        # An auto-replied notice (RFC 3834; real bounces are auto-generated) in which no
        # recipient carries a code, a status or known wording says nothing of a failure.
        replied = str(msg.get("Auto-Submitted", "")).lower().startswith("auto-replied")
        if replied and all(r.reason is Reason.UNDEFINED and r.reply_code is None
                           and r.status is None for r in records):
            records = ()
        if records:
            return BounceReport("nonstandard", records, mid, ours)
        return None
    if _is_autoreply(msg):
        who = _addr(str(msg.get("From", "")))
        record = BounceRecord(who, "autoreply", None, None, None, subject, Reason.VACATION,
                              category_of(Reason.VACATION), False, "rfc3834")
        return BounceReport("autoreply", (record,), mid, ours)
    return None
