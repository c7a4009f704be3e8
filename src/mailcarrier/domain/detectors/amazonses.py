"""Amazon SES notifications delivered by email (SNS): a JSON document in the body.

``notificationType`` is ``Bounce`` (``bouncedRecipients`` with status and diagnostic),
``Complaint`` (a feedback report) or ``Delivery`` (a success). SNS folds long lines by
inserting ``!`` + newline + space, which is undone before decoding.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mailcarrier.domain.detectors.base import BounceMail, Found, addresses, split_diagnostic_type
from mailcarrier.domain.smtp_reply import find_enhanced_status
from mailcarrier.domain.vocabulary import Reason

__all__ = ["AmazonSESDetector"]

_FOLD = re.compile(r"![ \t]*\r?\n ")


def _json_document(text: str) -> dict[str, Any] | None:
    start = text.find('{"notificationType"')
    if start < 0:
        start = text.find("{\"")
    if start < 0 or "notificationType" not in text:
        return None
    candidate = _FOLD.sub("", text[start:])
    end = candidate.rfind("}")
    try:
        doc = json.loads(candidate[: end + 1])
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _emails(items: object) -> list[dict[str, Any]]:
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


class AmazonSESDetector:
    """SES bounce, complaint and delivery notifications."""

    name = "amazonses"

    def detect(self, mail: BounceMail) -> tuple[Found, ...] | None:
        if "notificationType" not in mail.text:
            return None
        doc = _json_document(mail.text)
        if doc is None:
            return None
        kind = str(doc.get("notificationType", "")).lower()
        if kind == "bounce":
            bounce = doc.get("bounce") or {}
            permanent = str(bounce.get("bounceType", "")).lower() == "permanent"
            reporting = str(bounce.get("reportingMTA", "") or "").split(";", 1)[-1].strip() or None
            out = []
            for r in _emails(bounce.get("bouncedRecipients")):
                recipient = next(iter(addresses(str(r.get("emailAddress", "")))), "")
                if not recipient:
                    continue
                diagnostic = str(r.get("diagnosticCode", "") or "")
                dtype, diagnostic = split_diagnostic_type(diagnostic)
                status = find_enhanced_status(str(r.get("status", "") or diagnostic))
                action = str(r.get("action", "") or ("failed" if permanent else "delayed"))
                out.append(Found(recipient, diagnostic, str(status) if status else None, action=action,
                                 remote_mta=str(bounce.get("remoteMtaIp", "") or "") or None,
                                 diagnostic_type=dtype,
                                 reporting_mta=reporting))
            return tuple(out) or None
        if kind == "complaint":
            complaint = doc.get("complaint") or {}
            return tuple(Found(a, str(complaint.get("complaintFeedbackType", "") or "abuse"),
                               action="feedback", hint=Reason.FEEDBACK)
                         for r in _emails(complaint.get("complainedRecipients"))
                         for a in addresses(str(r.get("emailAddress", "")))[:1]) or None
        if kind == "delivery":
            delivery = doc.get("delivery") or {}
            reply = str(delivery.get("smtpResponse", "") or "250 2.0.0 OK")
            status = find_enhanced_status(reply)
            rcpts = delivery.get("recipients")
            listed = " ".join(map(str, rcpts)) if isinstance(rcpts, list) else ""
            return tuple(Found(a, reply, str(status) if status else "2.0.0", action="delivered",
                               remote_mta=str(delivery.get("reportingMTA", "") or "") or None)
                         for a in addresses(listed)) or None
        return None
