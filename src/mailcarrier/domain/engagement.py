"""Verdicts for tracking requests, and how one hit revises the verdicts of earlier ones.

:mod:`mailcarrier.domain.machine_activity` judges one hit against the hits before it. Two
things it cannot see are decided here, still without I/O:

* the request itself: prefetch headers and the bare ``Mozilla/5.0`` user agent Apple's
  Mail Privacy Protection proxy sends for opens;
* the past: the first click of a scanner burst looks like a person until the second
  arrives, so when a hit is judged part of a burst the earlier hits of that burst are
  judged machine too (:func:`burst_partners`); and a person's later hit proves the
  earlier engagement on the same message was theirs (:func:`upgrade_targets`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mailcarrier.domain.machine_activity import (
    Hit,
    Network,
    Thresholds,
    Verdict,
    VerdictKind,
    classify_hit,
)

__all__ = [
    "APPLE_MPP_USER_AGENT",
    "BURST_REASON",
    "SHARED_IP_REASON",
    "burst_partners",
    "classify_request",
    "prefetch_requested",
    "upgrade_targets",
]

#: Apple's image proxy announces itself with exactly this, nothing more.
APPLE_MPP_USER_AGENT = "Mozilla/5.0"
BURST_REASON = "several links hit together"
SHARED_IP_REASON = "one address clicking for several recipients"
PARTNER_REASON = "part of a burst recognised later"

#: Header name -> values (lower case) meaning "fetched ahead of the user, not by them".
_PREFETCH_HEADERS: Mapping[str, tuple[str, ...]] = {
    "purpose": ("prefetch", "preview"),
    "sec-purpose": ("prefetch", "prefetch;prerender", "prefetch;anonymous-client-ip"),
    "x-purpose": ("prefetch", "preview"),
    "x-moz": ("prefetch",),
}


def prefetch_requested(headers: Mapping[str, str]) -> bool:
    """True when a header says the request is a prefetch (names matched case-insensitively)."""
    lowered = {name.lower(): value.strip().lower() for name, value in headers.items()}
    for name, values in _PREFETCH_HEADERS.items():
        value = lowered.get(name)
        if value is not None and (value in values or value.startswith("prefetch")):
            return True
    return False


def classify_request(hit: Hit, recent: Sequence[Hit], networks: Sequence[Network],
                     limits: Thresholds, *, user_agent: str) -> Verdict:
    """The verdict for one request: network and behaviour rules, then Apple MPP's user agent."""
    verdict = classify_hit(hit, recent, networks, limits)
    if (verdict.kind is VerdictKind.HUMAN and not hit.is_click
            and user_agent.strip() == APPLE_MPP_USER_AGENT):
        return Verdict(VerdictKind.APPLE_MPP, ("Apple Mail Privacy Protection user agent",))
    return verdict


def burst_partners(hit: Hit, verdict: Verdict, earlier: Sequence[Hit],
                   limits: Thresholds) -> tuple[int, ...]:
    """Indexes of ``earlier`` hits that belong to the burst ``verdict`` recognised in ``hit``.

    Uses the same windows as the rules that produced the verdict, so a hit is only ever
    re-judged for the burst it was actually part of.
    """
    if not hit.is_click or verdict.kind is not VerdictKind.MACHINE:
        return ()
    links_burst = BURST_REASON in verdict.reasons
    shared_ip = SHARED_IP_REASON in verdict.reasons
    partners = []
    for index, other in enumerate(earlier):
        if not other.is_click or other.ip != hit.ip or other.mailing_id != hit.mailing_id:
            continue
        gap = abs(hit.at - other.at)
        same_message = other.delivery_id == hit.delivery_id
        if (links_burst and same_message and gap <= limits.burst_seconds) or (
            shared_ip and gap <= limits.shared_ip_seconds
        ):
            partners.append(index)
    return tuple(partners)


def upgrade_targets(hit: Hit, verdict: Verdict, earlier: Sequence[Hit]) -> tuple[int, ...]:
    """Indexes of ``earlier`` hits a person's ``hit`` proves were theirs.

    A human click upgrades earlier clicks on the same link and earlier opens of the same
    message (clicking implies having opened it); a human open upgrades earlier opens.
    Clicks on other links stay machine: a scanner fetching every link is not the reader.
    """
    if verdict.kind is not VerdictKind.HUMAN:
        return ()
    targets = []
    for index, other in enumerate(earlier):
        if other.delivery_id != hit.delivery_id or other.at > hit.at:
            continue
        if not other.is_click or (hit.is_click and other.link_id == hit.link_id):
            targets.append(index)
    return tuple(targets)
