"""Tell people from machines in open and click hits.

Security gateways fetch every link of a message seconds after delivery,
and Apple Mail Privacy Protection prefetches every image.  Counting those
as engagement would make every mailing look brilliant, so each hit gets a
verdict with the reasons behind it.  The rules are pure: the caller passes
the hit plus the recent hits it has seen, and the known networks as data.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources

__all__ = [
    "Hit",
    "Network",
    "Thresholds",
    "Verdict",
    "VerdictKind",
    "classify_hit",
    "load_networks",
    "upgrade",
]


class VerdictKind(StrEnum):
    HUMAN = "human"
    MACHINE = "machine"
    APPLE_MPP = "apple_mpp"
    PRIVACY_PROXY = "privacy_proxy"


@dataclass(frozen=True, slots=True)
class Network:
    name: str
    kind: VerdictKind
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Defaults follow the observed behaviour of gateway scanners."""

    burst_seconds: float = 5.0
    burst_links: int = 2
    shared_ip_seconds: float = 60.0
    shared_ip_recipients: int = 2
    after_delivery_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class Hit:
    """One request to an open or click URL; times are unix seconds."""

    is_click: bool
    ip: str
    mailing_id: int
    delivery_id: int
    link_id: int
    at: float
    method: str = "GET"
    prefetch: bool = False  # Purpose/Sec-Purpose/X-Moz: prefetch headers
    delivered_at: float | None = None
    links_in_message: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: VerdictKind
    reasons: tuple[str, ...]


def load_networks(text: str | None = None) -> tuple[Network, ...]:
    """Parse the scanner network table (the bundled one unless text is given)."""
    if text is None:
        text = resources.files("mailcarrier.domain.data").joinpath("scanner_networks.toml").read_text()
    data = tomllib.loads(text)
    return tuple(
        Network(
            name=str(entry["name"]),
            kind=VerdictKind(entry["kind"]),
            networks=tuple(ipaddress.ip_network(c, strict=False) for c in entry["cidrs"]),
        )
        for entry in data.get("network", [])
    )


def _network_of(ip: str, networks: Iterable[Network]) -> Network | None:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    for network in networks:
        if any(address in cidr for cidr in network.networks):
            return network
    return None


def _behaviour_reasons(hit: Hit, recent: Sequence[Hit], limits: Thresholds) -> list[str]:
    reasons = []
    if hit.method.upper() == "HEAD":
        reasons.append("HEAD request")
    if hit.prefetch:
        reasons.append("prefetch header")
    if hit.delivered_at is not None and 0 <= hit.at - hit.delivered_at < limits.after_delivery_seconds:
        reasons.append("hit right after delivery")
    if hit.is_click:
        same_source = {
            h.link_id
            for h in recent
            if h.is_click and h.delivery_id == hit.delivery_id and h.ip == hit.ip
            and abs(hit.at - h.at) <= limits.burst_seconds
        } | {hit.link_id}
        if len(same_source) > limits.burst_links or (
            hit.links_in_message > 1 and len(same_source) >= hit.links_in_message
        ):
            reasons.append("several links hit together")
        recipients = {
            h.delivery_id
            for h in recent
            if h.is_click and h.mailing_id == hit.mailing_id and h.ip == hit.ip
            and abs(hit.at - h.at) <= limits.shared_ip_seconds
        } | {hit.delivery_id}
        if len(recipients) > limits.shared_ip_recipients:
            reasons.append("one address clicking for several recipients")
    return reasons


def classify_hit(
    hit: Hit, recent: Sequence[Hit], networks: Sequence[Network], limits: Thresholds = Thresholds()
) -> Verdict:
    """Classify one hit, given the recent hits of the same mailing."""
    network = _network_of(hit.ip, networks)
    if network is not None and (network.kind is VerdictKind.MACHINE or not hit.is_click):
        return Verdict(network.kind, (f"known network: {network.name}",))
    reasons = _behaviour_reasons(hit, recent, limits)
    if reasons:
        return Verdict(VerdictKind.MACHINE, tuple(reasons))
    return Verdict(VerdictKind.HUMAN, ())


def upgrade(earlier: Verdict, later: Verdict) -> Verdict:
    """A person's later hit proves the earlier engagement was theirs too."""
    if later.kind is VerdictKind.HUMAN and earlier.kind is not VerdictKind.HUMAN:
        return Verdict(VerdictKind.HUMAN, ("upgraded by a later human hit", *earlier.reasons))
    return earlier
