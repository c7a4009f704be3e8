"""Rejections sent as message disposition notifications (RFC 8098 MDN, RFC 5429 Sieve ``reject``).

A Sieve ``reject`` (Dovecot Pigeonhole, Cyrus, and other mail stores' filters) refuses a
message after the SMTP transaction accepted it. RFC 5429 section 2.2.1 has the mail store
say so with an MDN whose disposition is ``automatic-action/MDN-sent-automatically;
deleted`` and whose human-readable part gives the reason ("Your message to <x> was
automatically rejected: Quota exceeded"). That is a bounce of ``Final-Recipient``.

A read receipt (``displayed``) or a receipt the reader sent by hand (``manual-action``) is
not a failure; campaign mail asks for neither, so only the automatic ``deleted`` and
``denied`` dispositions are read here.
"""

from __future__ import annotations

import re

from mailcarrier.domain.detectors.base import BounceMail, Found, addresses
from mailcarrier.domain.detectors.dsn import field_blocks

__all__ = ["MDNDetector"]

_REJECTED = re.compile(r"automatic-action\s*/[^;]*;\s*(?:deleted|denied)\b", re.I)
_TEXT_LIMIT = 600


class MDNDetector:
    """Sieve ``reject`` and other automatic ``deleted`` dispositions (RFC 5429, RFC 8098)."""

    name = "mdn"

    def detect(self, mail: BounceMail) -> tuple[Found, ...] | None:
        part = mail.part("message/disposition-notification")
        if part is None:
            return None
        fields: dict[str, str] = {}
        for block in field_blocks(part):
            for key, value in block.items():
                fields.setdefault(key, value)
        if not _REJECTED.search(fields.get("disposition", "")):
            return None
        found = (addresses(fields.get("final-recipient", ""))
                 or addresses(fields.get("original-recipient", "")))
        if not found:
            return None
        reason = " ".join(mail.body.split())[:_TEXT_LIMIT] or fields.get("disposition", "")
        reporter = fields.get("reporting-ua", "").split(";", 1)[-1].strip() or None
        return (Found(found[0], reason, action="failed", diagnostic_type="mdn", context=reason,
                      reporting_mta=reporter),)
