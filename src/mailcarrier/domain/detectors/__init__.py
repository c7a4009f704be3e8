"""Bounce detectors: one per bounce format, tried in order; the first that reads a mail wins.

Each detector implements :class:`Detector` (``detect(mail) -> tuple[Found, ...] | None``)
and returns ``None`` when the mail is not in its format. Order matters: the standard DSN
is the most reliable, then formats recognisable by structure (a Sieve reject's MDN, Amazon
SES JSON), then a list manager's refusal of a post, then prose. Reasons are decided
afterwards, from what the detector found, by
:func:`mailcarrier.domain.bounce_reason.bounce_reason`.
"""

from __future__ import annotations

from dataclasses import replace

from mailcarrier.domain.detectors.amazonses import AmazonSESDetector
from mailcarrier.domain.detectors.base import BounceMail, Detector, Found, wording
from mailcarrier.domain.detectors.dsn import DSNDetector
from mailcarrier.domain.detectors.listserver import ListServerDetector
from mailcarrier.domain.detectors.mdn import MDNDetector
from mailcarrier.domain.detectors.prose import ProseDetector

__all__ = ["DETECTORS", "BounceMail", "Detector", "Found", "detect"]

#: The registry, in the order detectors are tried.
DETECTORS: tuple[Detector, ...] = (DSNDetector(), MDNDetector(), AmazonSESDetector(), ListServerDetector(),
                                   ProseDetector())


def detect(mail: BounceMail,
           detectors: tuple[Detector, ...] = DETECTORS) -> tuple[str, tuple[Found, ...]] | None:
    """The first detector's name and findings, or None when no detector reads the mail."""
    hints = wording()
    for detector in detectors:
        found = detector.detect(mail)
        if found:
            # Copied only where the recipient's domain settles the reason (rarely).
            return detector.name, tuple(
                f if (hint := hints.recipient_hint(f.recipient)) is None else replace(f, hint=hint)
                for f in found)
    return None
