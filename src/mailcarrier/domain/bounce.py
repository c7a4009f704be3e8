"""Read a bounce email: which recipients failed, why, and what to do about it.

:func:`parse_bounce` recognises, in order of authority:

1. ARF feedback reports (RFC 5965): one ``feedback`` record with the feedback type;
2. whatever the detectors of :mod:`mailcarrier.domain.detectors` read, tried in order:
   RFC 3464/6533 delivery status notifications, Amazon SES notifications, and the prose
   many MTAs still send (Exim, qmail, Sendmail, Exchange, Gmail, carriers ...);
3. auto-replies (RFC 3834 ``Auto-Submitted``, vacation wording): one ``vacation`` record.

It returns ``None`` for ordinary mail and raises :class:`ParseError` only for input that
cannot be an email at all. Each recipient's reason is decided by
:func:`mailcarrier.domain.bounce_reason.bounce_reason` from the status, the SMTP command
the quoted reply answered and its wording (``rules/reasons.toml``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mailcarrier.domain.addresses import find_mailboxes
from mailcarrier.domain.classify import classify_evidence
from mailcarrier.domain.detectors import BounceMail, Found, detect
from mailcarrier.domain.detectors.base import wording
from mailcarrier.domain.detectors.dsn import parse_fields
from mailcarrier.domain.detectors.mime import MimePart, normalise_newlines
from mailcarrier.domain.detectors.prose import BOUNCE_SENDER, says_failed
from mailcarrier.domain.errors import ParseError
from mailcarrier.domain.evidence import Evidence
from mailcarrier.domain.remote_hosts import host_of
from mailcarrier.domain.smtp_reply import SMTPStage, find_enhanced_status
from mailcarrier.domain.vocabulary import BounceType, Category, Reason, category_of

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
    #: Sisimai's "hardbounce": the address itself is bad (category 2); ``address_invalid``.
    hard_bounce: bool
    rule: str
    #: The SMTP command the quoted reply answered, when the report says.
    command: SMTPStage = SMTPStage.UNKNOWN
    #: Everything the classifier read for this recipient (``bounce parse --explain``).
    evidence: Evidence | None = field(default=None, compare=False, repr=False)
    #: The address the sender used when the report names a rewritten one as the recipient
    #: (RFC 3464 ``Original-Recipient``, "(expanded from x)"); None when the same or unsaid.
    original_recipient: str | None = None

    @property
    def address_invalid(self) -> bool:
        """Seed 001's "Email Invalid": category 2, the mailbox or domain does not exist."""
        return self.hard_bounce

    @property
    def bounce_type(self) -> BounceType | None:
        """Seed 001's hard (categories 1, 2) or soft (3, 4, 9); None for complaints and replies."""
        return BounceType.of(self.reason, self.category)



@dataclass(frozen=True, slots=True)
class BounceReport:
    """A parsed bounce, complaint or auto-reply."""

    kind: str  #: dsn | nonstandard | feedback | autoreply
    records: tuple[BounceRecord, ...]
    original_message_id: str | None = None
    #: ``X-Mailcarrier-*`` and ``Feedback-ID`` headers found in the returned message.
    original_headers: tuple[tuple[str, str], ...] = ()
    feedback_type: str | None = None


_REPLY_CODE = re.compile(r"(?<![\d.])([245]\d\d)(?:[ \-]|$)")
# A reply code where MTAs quote one inside prose: "...after end of data: 553 ...",
# "said: 550 ...", "<<< 554 ...", "reason: 550 ...".
_QUOTED_CODE = re.compile(r"(?:[:>]|said|reason)\s+([245]\d\d)(?:[ \-]|$)")
_CODE_WITH_STATUS = re.compile(r"(?<![\d.])([245]\d\d)[ \-][245]\.\d{1,3}\.\d{1,3}")
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (status )?(notification|failure|failed|report)|returned mail|"
    r"failure notice|mail delivery failed|could not be delivered|non[- ]?delivery|delivery problem|"
    r"rejected|nicht zustellbar|non remis|mail system error|warning: could not send|"
    r"message not delivered|delivery has failed|bounce", re.I)
_VACATION_SUBJECT = re.compile(
    r"out of (the )?office|auto(matic)?[- ]?(reply|response)|vacation|absence|abwesen|"
    r"r[ée]ponse automatique|risposta automatica|away from", re.I)
_OUR_HEADER = re.compile(r"^(x-mailcarrier-[a-z-]+|feedback-id)$", re.I)
def _addr(value: str | None) -> str:
    """The first valid address in a header or report field (``rfc822; <x@y>``, ``Name <x@y>``)."""
    found = find_mailboxes(value) if value else []
    return found[0] if found else ""



def _original_info(mail: BounceMail) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    original = mail.original
    if original is None:
        return None, ()
    ours = tuple((k, v) for k, v in original.headers() if _OUR_HEADER.match(k))
    mid = original.get("Message-ID").strip()
    return (mid or None), ours


_ORIGINAL_TYPES = ("message/rfc822", "message/global", "text/rfc822-headers", "message/rfc822-headers")
_FEEDBACK_FIELD = re.compile(r"^feedback-type[ \t]*:", re.I | re.M)
_ARF_FIELDS = re.compile(r"^(?:user-agent|version|original-rcpt-to|original-mail-from|arrival-date)[ \t]*:",
                         re.I | re.M)


def _feedback_fields(mail: BounceMail) -> dict[str, str] | None:
    """The fields of a feedback report (RFC 5965), wherever the report put them; else None.

    The standard place is a ``message/feedback-report`` part. Some reporters label that
    part otherwise inside a ``multipart/report; report-type=feedback-report``, or write the
    fields into the text part; Microsoft's JMRP sends no report part at all and marks the
    returned message with ``X-HmXmrOriginalRecipient``. All of them are complaints, never
    auto-replies.
    """
    part = mail.part("message/feedback-report")
    if part is not None:
        texts = [part.text()]
    elif mail.msg.content_type == "multipart/report" and \
            mail.msg.param("report-type").lower() == "feedback-report":
        texts = [p.text() for p in mail.notice_parts[1:]
                 if not p.children and p.content_type not in _ORIGINAL_TYPES]
    else:
        texts = [mail.text[:8000]] if "feedback-type" in mail.text[:8000].lower() else []
    for text in texts:
        if not _FEEDBACK_FIELD.search(text) or (part is None and not _ARF_FIELDS.search(text)):
            continue
        fields: dict[str, str] = {}
        for block in parse_fields(text):
            for key, value in block.items():
                fields.setdefault(key, value)
        return fields
    original = mail.original
    if original is not None and original.get("X-HmXmrOriginalRecipient"):
        return {"feedback-type": "abuse", "original-rcpt-to": original.get("X-HmXmrOriginalRecipient")}
    return None


def _parse_feedback(mail: BounceMail, fields: dict[str, str]) -> BounceReport:
    feedback_type = (fields.get("feedback-type", "").split() or ["other"])[0].lower()
    recipient = _addr(fields.get("original-rcpt-to"))
    mid, ours = _original_info(mail)
    if not recipient and mail.original is not None:
        recipient = _addr(mail.original.get("To"))
    record = BounceRecord(recipient, "feedback", None, None, None, feedback_type, Reason.FEEDBACK,
                          category_of(Reason.FEEDBACK), False, "arf")
    return BounceReport("feedback", (record,), mid, ours, feedback_type)


def _is_autoreply(mail: BounceMail) -> bool:
    if mail.msg.param("report-type").lower() in ("feedback-report", "delivery-status"):
        return False  # a report, whatever its subject says (RFC 6522)
    if mail.header("Auto-Submitted").lower().startswith("auto-replied"):
        return True
    if mail.header("X-Autoreply") or mail.header("X-Autorespond"):
        return True
    return bool(_VACATION_SUBJECT.search(mail.subject)) and not _BOUNCE_SUBJECT.search(mail.subject)


def _from_found(found: Found) -> BounceRecord:
    diagnostic = " ".join(found.diagnostic.split())
    code = found.reply_code
    if code is None:
        code_match = (_REPLY_CODE.match(diagnostic) or _CODE_WITH_STATUS.search(diagnostic)
                      or _REPLY_CODE.search(diagnostic[:40]) or _QUOTED_CODE.search(diagnostic))
        code = int(code_match.group(1)) if code_match else None
    if code is not None and f"{code}-" in diagnostic:
        # A multi-line reply quoted as one: drop the "550-5.7.1 " continuation prefixes.
        diagnostic = re.sub(rf"(?<=\s){code}[ \-](?:[245]\.\d{{1,3}}\.\d{{1,3}}[ \-])?", "", diagnostic)
    status = found.status
    if status is None or status.endswith(".0.0"):
        in_text = find_enhanced_status(diagnostic)
        status = str(in_text) if in_text and not str(in_text).endswith(".0.0") else status
    dtype = found.diagnostic_type
    evidence = Evidence(diagnostic, status, found.command, dtype.lower(), found.action, found.hint,
                        found.context, host_of(found.remote_mta), code)
    result = classify_evidence(evidence)
    if dtype:  # shown as the bounce wrote it ("smtp; 550 ...")
        diagnostic = f"{dtype}; {diagnostic}"
    return BounceRecord(found.recipient, found.action, status, code, found.remote_mta, diagnostic,
                        result.reason, result.category, result.address_invalid, result.rule,
                        found.command, evidence, found.original_recipient)


# Reasons that say the bounce did not tell why.
_UNEXPLAINED = frozenset({Reason.ONHOLD, Reason.UNDEFINED})


def _explained_by_forwarded_bounce(mail: BounceMail,
                                   records: tuple[BounceRecord, ...]) -> tuple[BounceRecord, ...]:
    """Records left unexplained, read again from the bounce the notice carries.

    Security gateways (Trend Micro InterScan, some Exchange and Domino relays) send their
    own short notice ("Unable to deliver message to <x>") and attach the bounce they got
    from the next hop as the "original message"; that attached bounce says why.
    """
    original = mail.original
    if original is None or not original.headers():
        return records
    inner = detect(BounceMail(original))
    if inner is None:
        return records
    by_recipient = {f.recipient: f for f in inner[1]}
    return tuple(
        _from_found(by_recipient[r.recipient])
        if r.reason in _UNEXPLAINED and r.recipient in by_recipient else r
        for r in records)


def parse_bounce(raw: bytes) -> BounceReport | None:
    """Parse one email; ``None`` when it is neither a bounce, a complaint nor an auto-reply."""
    if not isinstance(raw, (bytes, bytearray)):
        raise ParseError("a bounce is read from bytes")
    if not raw.strip():
        raise ParseError("empty input is not an email")
    msg = MimePart(normalise_newlines(bytes(raw)))
    if not msg.headers():
        raise ParseError("no header fields: not an email", excerpt=raw[:80].decode("latin-1"))
    mail = BounceMail(msg)
    feedback = _feedback_fields(mail)
    if feedback is not None:
        return _parse_feedback(mail, feedback)
    mid, ours = _original_info(mail)
    detected = detect(mail)
    from_daemon = bool(BOUNCE_SENDER.search(mail.sender))
    if detected is not None:
        kind, found = detected
        records = tuple(_from_found(f) for f in found)
        if any(r.reason in _UNEXPLAINED for r in records):
            records = _explained_by_forwarded_bounce(mail, records)
        if kind == "prose":
            # Prose from a person, or an auto-replied notice (RFC 3834) in none of the
            # known MTA wordings, is a bounce only where it carries an MTA's evidence: a
            # reply code, a status or a detector's fixed wording (not an address quoted
            # in a reply, nor "spam" in a sentence).
            replied = (mail.header("Auto-Submitted").lower().startswith("auto-replied")
                       and not mail.header("X-Failed-Recipients")
                       and wording().markers.search(mail.body[:4000]) is None)
            if replied or not from_daemon:
                # A notice that states the failure right before the recipient counts too
                # (gateways and webmail send no codes), unless it answers a message
                # (In-Reply-To): a person writing "my mail to x could not be delivered".
                stated = not mail.header("In-Reply-To")
                records = tuple(r for r in records if r.reply_code is not None or r.status is not None
                                or r.rule.startswith("detector:")
                                or (stated and says_failed(mail.body, r.recipient)))
        if records and all(r.reason is Reason.FEEDBACK for r in records):
            return BounceReport("feedback", records, mid, ours, records[0].diagnostic or "other")
        if records:
            return BounceReport("dsn" if kind == "rfc3464" else "nonstandard", records, mid, ours)
    if _is_autoreply(mail) and (detected is None or not from_daemon):
        who = _addr(mail.header("From"))
        subject = mail.subject
        record = BounceRecord(who, "autoreply", None, None, None, subject, Reason.VACATION,
                              category_of(Reason.VACATION), False, "rfc3834")
        return BounceReport("autoreply", (record,), mid, ours)
    return None
