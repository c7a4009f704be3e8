"""Delivery evidence: "it says delivered — where is my email?" (seeds 000 and 002).

For one recipient (and optionally one mailing) this gathers every attempt with the facts a
receiving IT department needs to find the message in its own logs — timestamp in UTC,
return-path, sending IP, receiving IP and MX host, TLS, the reply and queue id, the SMTP
dialogue — plus any later bounce or complaint, and plain-language guidance on what to look
for and how to safelist. It renders as JSON, plain text and PDF for forwarding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from fpdf import FPDF
from sqlalchemy import Engine, select

from mailcarrier.domain.errors import NotFoundError
from mailcarrier.domain.reason_help import describe_attempt, explain, guidance, provider_for
from mailcarrier.domain.vocabulary import INTERNAL_CODES
from mailcarrier.storage.tables import activities, attempts, contacts, deliveries, mailings

__all__ = [
    "AttemptEvidence",
    "DeliveryEvidence",
    "EvidenceReport",
    "LaterEvent",
    "collect_evidence",
    "to_json",
    "to_pdf",
    "to_text",
]

LATER_TYPES = ("hard_bounce", "soft_bounce", "complaint", "unsubscribe")


@dataclass(frozen=True, slots=True)
class AttemptEvidence:
    number: int
    started_at: datetime
    ended_at: datetime | None
    return_path: str | None
    local_ip: str | None
    remote_ip: str | None
    mx_host: str | None
    tls_version: str | None
    tls_cipher: str | None
    reply_code: int | None
    enhanced_status: str | None
    reply_text: str | None
    queue_id: str | None
    internal_code: int | None
    internal_meaning: str | None
    reason: str | None
    category: int | None
    outcome: str
    explanation: str | None
    dialogue: str | None


@dataclass(frozen=True, slots=True)
class LaterEvent:
    """Something that happened after the attempts: an asynchronous bounce, a complaint."""

    type: str
    occurred_at: datetime
    reason: str | None
    category: int | None
    reply_code: int | None
    enhanced_status: str | None
    diagnostic: str | None
    remote_mta: str | None
    explanation: str | None


@dataclass(frozen=True, slots=True)
class DeliveryEvidence:
    delivery_id: int
    mailing_id: int
    mailing_name: str
    subject: str
    from_address: str
    sending_domain: str
    message_id: str | None
    return_path: str | None
    email: str
    state: str
    outcome_unknown: bool
    suspected_filtering: bool
    provider: str | None
    postmaster: str | None
    attempts: list[AttemptEvidence]
    later: list[LaterEvent]
    guidance: list[str]


@dataclass(frozen=True, slots=True)
class EvidenceReport:
    email: str
    contact_id: int
    contact_status: str
    generated_at: datetime
    deliveries: list[DeliveryEvidence]


def _utc(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") + " (UTC)" if value is not None else "-"


def collect_evidence(engine: Engine, account_id: int, email: str, now: datetime, *,
                     mailing_id: int | None = None, limit: int = 20) -> EvidenceReport:
    """Evidence for the account's contact ``email``; NotFoundError if there is none to show."""
    c, d, m = contacts.c, deliveries.c, mailings.c
    address = email.strip().lower()
    if "\x00" in address:  # no stored address has one (and PostgreSQL text cannot)
        raise NotFoundError("no contact with that address in this account")
    with engine.connect() as conn:
        contact = conn.execute(select(c.id, c.email, c.status).where(
            c.account_id == account_id, c.email == address)).one_or_none()
        if contact is None:
            raise NotFoundError(f"no contact {address} in this account")
        query = (select(deliveries, m.name.label("mailing_name"),
                        m.subject.label("template_subject"), m.from_address, m.sending_domain)
                 .join(mailings, mailings.c.id == d.mailing_id)
                 .where(d.account_id == account_id, d.contact_id == contact.id)
                 .order_by(d.id.desc()).limit(max(1, min(limit, 200))))
        if mailing_id is not None:
            query = query.where(d.mailing_id == mailing_id)
        rows = list(conn.execute(query))
        if mailing_id is not None and not rows:
            raise NotFoundError(f"{address} was not a recipient of mailing {mailing_id} in this account")
        ids = [r.id for r in rows]
        attempt_rows = list(conn.execute(select(attempts).where(attempts.c.delivery_id.in_(ids))
                                         .order_by(attempts.c.delivery_id, attempts.c.number))) \
            if ids else []
        a = activities.c
        later_rows = list(conn.execute(
            select(activities).where(a.account_id == account_id, a.contact_id == contact.id,
                                     a.type.in_(LATER_TYPES),
                                     a.mailing_id.in_([r.mailing_id for r in rows]))
            .order_by(a.occurred_at))) if rows else []
    by_delivery: dict[int, list[AttemptEvidence]] = {}
    for t in attempt_rows:
        internal = INTERNAL_CODES.get(t.internal_code) if t.internal_code is not None else None
        by_delivery.setdefault(t.delivery_id, []).append(AttemptEvidence(
            t.number, t.started_at, t.ended_at, t.return_path, t.local_ip, t.remote_ip, t.mx_host,
            t.tls_version, t.tls_cipher, t.reply_code, t.enhanced_status, t.reply_text, t.queue_id,
            t.internal_code, internal.meaning if internal else None, t.reason, t.category,
            t.outcome, describe_attempt(reason=t.reason, category=t.category, reply_code=t.reply_code,
                                        reply_text=t.reply_text,
                                        internal_meaning=internal.meaning if internal else None,
                                        outcome=t.outcome), t.dialogue))
    later_by_mailing: dict[int, list[LaterEvent]] = {}
    accepted = {d for d, tried in by_delivery.items() if any(t.outcome == "delivered" for t in tried)}
    delivery_of = {r.mailing_id: r.id for r in rows}
    for e in later_rows:
        if not _is_later(e, accepted, delivery_of):
            continue  # the activity that recorded a refusal already shown as an attempt
        later_by_mailing.setdefault(e.mailing_id, []).append(LaterEvent(
            e.type, e.occurred_at, e.reason, e.category, e.reply_code, e.enhanced_status,
            e.diagnostic, e.remote_mta, explain(e.reason) if e.reason else None))
    out = [_delivery(r, by_delivery.get(r.id, []), later_by_mailing.get(r.mailing_id, []))
           for r in rows]
    return EvidenceReport(contact.email, contact.id, contact.status, now, out)


def _is_later(event: Any, accepted: set[int], delivery_of: dict[int, int]) -> bool:
    """Complaints and opt-outs always; a bounce only when it arrived after acceptance (late)."""
    if event.type not in ("hard_bounce", "soft_bounce"):
        return True
    late = bool((event.details or {}).get("late"))
    return late or delivery_of.get(event.mailing_id) in accepted


def reply_line(code: int | None, enhanced: str | None, text: str | None) -> str:
    """``550 5.1.1 text``: the reply as the server wrote it, enhanced status kept."""
    body = text or ""
    if enhanced and not body.startswith(enhanced):
        body = f"{enhanced} {body}".strip()
    return " ".join(str(x) for x in (code, body) if x)


def _outcome(state: str, outcome_unknown: bool, tried: list[AttemptEvidence],
             later: list[LaterEvent] | None = None) -> str:
    if not tried:
        return "not_sent"
    if outcome_unknown or tried[-1].outcome == "unknown":
        return "unknown"
    if tried[-1].outcome == "delivered" and any(e.type.endswith("bounce") for e in later or ()):
        return "bounced_later"  # a 250, then a bounce email: the refusal came after acceptance
    if state == "delivered":
        return "delivered"
    if state == "bounced_soft":
        return "gave_up"  # temporary failures until the retries ran out: never refused for good
    if state == "bounced_hard" or tried[-1].outcome == "bounced":
        return "bounced"
    return "deferred"


_NO_MAIL_HOST = (170, 172, 173)
_DNS_FAILED = (171,)
_UNREACHABLE = (160, 161, 162)
_NOT_OFFERED = (191,)


def _guidance_key(outcome: str, last: AttemptEvidence | None) -> str:
    """The guidance to print: a failure before any server answered is not worded as a reply
    ("your mail server refused" / "asked us to try again" would be untrue)."""
    if last is None or last.reply_code is not None or last.internal_code is None:
        return outcome
    for codes, key in ((_NO_MAIL_HOST, "no_mail_host"), (_DNS_FAILED, "dns_failed"),
                       (_UNREACHABLE, "unreachable"), (_NOT_OFFERED, "not_offered")):
        if last.internal_code in codes:
            return key
    return outcome


def _delivery(r: Any, tried: list[AttemptEvidence], later: list[LaterEvent]) -> DeliveryEvidence:
    last = tried[-1] if tried else None
    reply = reply_line(last.reply_code, last.enhanced_status, last.reply_text) if last else ""
    if last and last.reply_code is None and last.internal_meaning:
        reply = f"no reply ({last.internal_code}: {last.internal_meaning})"
    bounce = next((e for e in later if e.type.endswith("bounce")), None)
    facts = {
        "email": r.email, "mx_host": last.mx_host if last else None,
        "remote_ip": last.remote_ip if last else None, "local_ip": last.local_ip if last else None,
        "return_path": (last.return_path if last else None) or r.return_path,
        "queue_id": last.queue_id if last else None, "message_id": r.message_id,
        "when": _utc(last.ended_at or last.started_at) if last else None, "reply": reply or None,
        "sending_domain": r.sending_domain,
        "bounce_when": _utc(bounce.occurred_at) if bounce else None,
        "bounce_reply": reply_line(bounce.reply_code, bounce.enhanced_status, bounce.diagnostic)
        if bounce else None,
        "bounce_mta": bounce.remote_mta if bounce else None,
    }
    provider = provider_for(last.mx_host if last else None, r.domain)
    return DeliveryEvidence(
        r.id, r.mailing_id, r.mailing_name, r.subject or r.template_subject, r.from_address,
        r.sending_domain,
        r.message_id, r.return_path, r.email, r.state, bool(r.outcome_unknown),
        bool(r.suspected_filtering), provider.name if provider else None,
        provider.postmaster if provider else None, tried, later,
        guidance(_guidance_key(_outcome(r.state, bool(r.outcome_unknown), tried, later), last), facts))


def to_json(report: EvidenceReport) -> dict[str, Any]:
    """A JSON-ready dict; datetimes as ISO 8601 with their +00:00 offset."""
    def convert(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value
    result: dict[str, Any] = convert(asdict(report))
    return result


def to_text(report: EvidenceReport) -> str:
    """Plain text a marketer can paste into an email to the recipient's IT department."""
    lines = [f"Delivery evidence for {report.email}",
             f"Generated {_utc(report.generated_at)}; contact status: {report.contact_status}", ""]
    if not report.deliveries:
        lines.append("No mailing has been addressed to this contact yet.")
    for dv in report.deliveries:
        lines += [f"== Mailing {dv.mailing_id}: {dv.mailing_name} ==",
                  f"Subject: {dv.subject}", f"From: {dv.from_address}",
                  f"Message-ID: {dv.message_id or '-'}", f"Return-path: {dv.return_path or '-'}",
                  f"Result: {dv.state}" + (" (outcome unknown)" if dv.outcome_unknown else "")
                  + (" (suspected filtering by the receiving gateway)" if dv.suspected_filtering else "")]
        if dv.provider:
            lines.append(f"Receiving provider: {dv.provider} - {dv.postmaster}")
        for t in dv.attempts:
            tls = " ".join(x for x in (t.tls_version, t.tls_cipher) if x) or "none"
            reply = reply_line(t.reply_code, t.enhanced_status, t.reply_text) or "-"
            lines += ["", f"-- Attempt {t.number} at {_utc(t.started_at)} -> {t.outcome}",
                      f"   Return-path:   {t.return_path or '-'}",
                      f"   Sending IP:    {t.local_ip or '-'}",
                      f"   Receiving IP:  {t.remote_ip or '-'}  MX host: {t.mx_host or '-'}",
                      f"   TLS:           {tls}",
                      f"   Reply:         {reply}",
                      f"   Queue id:      {t.queue_id or '-'}"]
            if t.internal_code is not None:
                lines.append(f"   Internal code: {t.internal_code} - {t.internal_meaning or ''}")
            if t.explanation:
                lines.append(f"   Meaning:       {t.explanation}")
            if t.dialogue:
                lines.append("   SMTP dialogue:")
                lines += [f"     {line}" for line in t.dialogue.splitlines()]
        for e in dv.later:
            lines += ["", f"-- Later: {e.type} at {_utc(e.occurred_at)} "
                          f"({e.reason or '-'}, category {e.category or '-'})",
                      f"   {' '.join(str(x) for x in (e.reply_code, e.enhanced_status, e.diagnostic) if x)}"]
            if e.explanation:
                lines.append(f"   Meaning: {e.explanation}")
        lines += ["", "What the receiving side can check:"]
        lines += [f"  * {p}" for p in dv.guidance]
        lines.append("")
    return "\n".join(lines) + "\n"


def _latin1(text: str) -> str:
    """The PDF core fonts are Latin-1; anything else prints as '?' rather than failing."""
    return text.encode("latin-1", "replace").decode("latin-1")


def to_pdf(report: EvidenceReport) -> bytes:
    """A one-page A4 document the marketer can forward to the recipient's IT department.

    The most recent delivery: a table of the facts seed 000 names (time, return-path, sending
    and receiving IP, MX, TLS, reply, queue id, Message-ID), one row per attempt, the SMTP
    dialogue of the deciding attempt in a framed box, later bounces, and what to check. Text
    wraps at word boundaries; whatever would not fit on the page is left out with a note
    pointing to the text or JSON export, which have everything.
    """
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=False)
    pdf.set_margins(14, 12, 14)
    pdf.add_page()
    pdf.set_title(_latin1(f"Delivery evidence for {report.email}"))
    bottom = pdf.h - 14
    pdf.set_font("Helvetica", style="B", size=14)
    pdf.cell(0, 8, _latin1(f"Delivery evidence for {report.email}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=8)
    pdf.cell(0, 4, _latin1(f"Generated {_utc(report.generated_at)}; contact status: "
                           f"{report.contact_status}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    if not report.deliveries:
        pdf.set_font("Helvetica", size=10)
        pdf.multi_cell(0, 5, "No mailing has been addressed to this contact yet.")
        return bytes(pdf.output())
    dv = report.deliveries[0]
    result = dv.state + (" (outcome unknown)" if dv.outcome_unknown else "") + \
        (" (suspected filtering by the receiving gateway)" if dv.suspected_filtering else "")
    rows = [("Mailing", f"{dv.mailing_id}: {dv.mailing_name}"), ("Subject", dv.subject),
            ("From", dv.from_address), ("Message-ID", dv.message_id or "-"),
            ("Return-path", dv.return_path or "-"), ("Result", result)]
    if dv.provider:
        rows.append(("Receiving provider", f"{dv.provider} - {dv.postmaster}"))
    _pdf_fields(pdf, rows)
    pdf.ln(2)
    _pdf_heading(pdf, "Attempts")
    with pdf.table(col_widths=(7, 27, 24, 34, 16, 60, 14), text_align="LEFT", line_height=3.6,
                   first_row_as_headings=True) as table:
        pdf.set_font("Helvetica", size=7)
        table.row(["#", "When (UTC)", "Sending IP", "Receiving IP / MX", "TLS", "Reply", "Queue id"])
        for t in dv.attempts[-6:]:
            table.row([str(t.number), t.started_at.isoformat(timespec="seconds").replace("+00:00", ""),
                       t.local_ip or "-", f"{t.remote_ip or '-'} / {t.mx_host or '-'}",
                       t.tls_version or "none",
                       _latin1(reply_line(t.reply_code, t.enhanced_status, t.reply_text)
                               or f"no reply ({t.internal_code})"), t.queue_id or "-"])
    last = dv.attempts[-1] if dv.attempts else None
    if last is not None and last.explanation:
        pdf.set_font("Helvetica", style="I", size=8)
        pdf.multi_cell(0, 4, _latin1(f"Meaning: {last.explanation}"), new_x="LMARGIN", new_y="NEXT")
    for e in dv.later[:3]:
        pdf.set_font("Helvetica", size=8)
        pdf.multi_cell(0, 4, _latin1(f"Later {e.type.replace('_', ' ')} at {_utc(e.occurred_at)} from "
                                     f"{e.remote_mta or '-'}: "
                                     f"{reply_line(e.reply_code, e.enhanced_status, e.diagnostic)}"),
                       new_x="LMARGIN", new_y="NEXT")
    guidance_height = 5 + sum(4 * (1 + len(p) // 120) for p in dv.guidance)
    if last is not None and last.dialogue:
        pdf.ln(2)
        _pdf_heading(pdf, f"SMTP dialogue of attempt {last.number} (times in UTC; message body not shown)")
        _pdf_dialogue(pdf, last.dialogue, bottom - guidance_height)
    pdf.ln(2)
    _pdf_heading(pdf, "What the receiving side can check")
    pdf.set_font("Helvetica", size=8)
    for paragraph in dv.guidance:
        if pdf.get_y() + 8 > bottom:
            break
        pdf.multi_cell(0, 4, _latin1(f"- {paragraph}"), new_x="LMARGIN", new_y="NEXT")
    if len(report.deliveries) > 1 and pdf.get_y() + 4 <= bottom:
        pdf.set_font("Helvetica", style="I", size=7)
        pdf.cell(0, 4, f"{len(report.deliveries) - 1} earlier mailing(s) to this address: see the "
                       "text or JSON export.", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _pdf_heading(pdf: FPDF, text: str) -> None:
    pdf.set_font("Helvetica", style="B", size=9)
    pdf.cell(0, 5, _latin1(text), new_x="LMARGIN", new_y="NEXT")


def _pdf_fields(pdf: FPDF, rows: list[tuple[str, str]]) -> None:
    with pdf.table(col_widths=(30, 152), text_align="LEFT", line_height=4,
                   first_row_as_headings=False) as table:
        for label, value in rows:
            pdf.set_font("Helvetica", size=8)
            row = table.row()
            row.cell(_latin1(label))
            row.cell(_latin1(value))


def _pdf_dialogue(pdf: FPDF, dialogue: str, limit_y: float) -> None:
    """The transcript in a frame, lines wrapped at spaces, cut (with a note) at ``limit_y``."""
    pdf.set_font("Courier", size=6.5)
    top, x, width, height = pdf.get_y(), pdf.l_margin, pdf.epw, 2.9
    pdf.set_y(top + 1)
    lines = dialogue.splitlines()
    for index, line in enumerate(lines):
        if pdf.get_y() + 2 * height > limit_y:
            pdf.set_x(x + 1.5)
            pdf.cell(width - 3, height, f"... {len(lines) - index} more line(s) in the text export",
                     new_x="LMARGIN", new_y="NEXT")
            break
        pdf.set_x(x + 1.5)
        pdf.multi_cell(width - 3, height, _latin1(line) or " ", new_x="LMARGIN", new_y="NEXT")
    pdf.rect(x, top, width, pdf.get_y() + 1 - top)
    pdf.set_y(pdf.get_y() + 1)
