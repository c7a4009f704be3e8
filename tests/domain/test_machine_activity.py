"""Machine activity rules: scanner bursts are machines, a person's later click is human."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailcarrier.domain.machine_activity import (
    Hit,
    VerdictKind,
    classify_hit,
    load_networks,
    upgrade,
)

NETWORKS = load_networks()
DELIVERED = 1_000_000.0


def click(link: int, at: float, ip: str = "198.51.100.7", delivery: int = 1, **kw: object) -> Hit:
    return Hit(True, ip, 10, delivery, link, at, delivered_at=DELIVERED, links_in_message=5, **kw)  # type: ignore[arg-type]


def test_scanner_burst_replayed_is_machine() -> None:
    burst = [click(link, DELIVERED + 30 + link * 0.2) for link in range(1, 6)]
    verdicts = [classify_hit(h, burst[:i], NETWORKS) for i, h in enumerate(burst)]
    assert verdicts[-1].kind is VerdictKind.MACHINE
    assert "several links hit together" in verdicts[-1].reasons


def test_person_clicking_ten_minutes_later_is_human_and_upgrades() -> None:
    early = classify_hit(click(1, DELIVERED + 2), [], NETWORKS)
    assert early.kind is VerdictKind.MACHINE
    later = classify_hit(click(1, DELIVERED + 600), [], NETWORKS)
    assert later.kind is VerdictKind.HUMAN
    assert upgrade(early, later).kind is VerdictKind.HUMAN


def test_known_networks_and_request_shape() -> None:
    assert classify_hit(click(1, DELIVERED + 600, ip="40.107.1.2"), [], NETWORKS).kind is VerdictKind.MACHINE
    opened = Hit(False, "17.58.1.1", 10, 1, 0, DELIVERED + 600)
    assert classify_hit(opened, [], NETWORKS).kind is VerdictKind.APPLE_MPP
    proxied = Hit(False, "66.249.84.1", 10, 1, 0, DELIVERED + 600)
    assert classify_hit(proxied, [], NETWORKS).kind is VerdictKind.PRIVACY_PROXY
    assert classify_hit(click(1, DELIVERED + 600, method="HEAD"), [], NETWORKS).kind is VerdictKind.MACHINE
    assert classify_hit(click(1, DELIVERED + 600, prefetch=True), [], NETWORKS).kind is VerdictKind.MACHINE


def test_one_ip_clicking_for_many_recipients() -> None:
    hits = [click(1, DELIVERED + 600 + d, delivery=d) for d in range(1, 4)]
    assert classify_hit(hits[2], hits[:2], NETWORKS).kind is VerdictKind.MACHINE
    assert classify_hit(hits[1], hits[:1], NETWORKS).kind is VerdictKind.HUMAN


@given(st.text(max_size=50))
def test_any_ip_text_is_handled(ip: str) -> None:
    assert classify_hit(click(1, DELIVERED + 600, ip=ip), [], NETWORKS).kind in set(VerdictKind)
