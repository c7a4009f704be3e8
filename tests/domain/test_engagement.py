"""Request verdicts and how later hits revise earlier ones (pure rules)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailcarrier.domain.engagement import (
    burst_partners,
    classify_request,
    prefetch_requested,
    upgrade_targets,
)
from mailcarrier.domain.machine_activity import Hit, Thresholds, Verdict, VerdictKind

LIMITS = Thresholds(after_delivery_seconds=60)


def _click(link: int, at: float, *, ip: str = "192.0.2.1", delivery: int = 1) -> Hit:
    return Hit(True, ip, 7, delivery, link, at, delivered_at=0.0, links_in_message=5)


def test_prefetch_headers() -> None:
    assert prefetch_requested({"Sec-Purpose": "prefetch;prerender"})
    assert prefetch_requested({"X-MOZ": "prefetch"}) and prefetch_requested({"Purpose": "preview"})
    assert not prefetch_requested({"User-Agent": "prefetch", "Accept": "*/*"})


@given(st.dictionaries(st.text(max_size=30), st.text(max_size=60), max_size=12))
def test_prefetch_never_crashes(headers: dict[str, str]) -> None:
    assert prefetch_requested(headers) in (True, False)


def test_apple_mpp_user_agent_for_opens_only() -> None:
    open_hit = Hit(False, "192.0.2.9", 7, 1, 0, 600.0, delivered_at=0.0)
    assert classify_request(open_hit, [], (), LIMITS, user_agent="Mozilla/5.0").kind is VerdictKind.APPLE_MPP
    assert classify_request(open_hit, [], (), LIMITS, user_agent="Mozilla/5.0 (Mac)").kind is VerdictKind.HUMAN
    click = _click(1, 600.0)
    assert classify_request(click, [], (), LIMITS, user_agent="Mozilla/5.0").kind is VerdictKind.HUMAN


def test_burst_partners_are_the_burst_only() -> None:
    earlier = [_click(1, 300.0), _click(2, 300.5), _click(3, 200.0), _click(2, 300.2, ip="198.51.100.1")]
    hit = _click(4, 301.0)
    verdict = classify_request(hit, earlier, (), LIMITS, user_agent="x")
    assert verdict.kind is VerdictKind.MACHINE and "several links hit together" in verdict.reasons
    assert burst_partners(hit, verdict, earlier, LIMITS) == (0, 1)
    assert burst_partners(hit, Verdict(VerdictKind.HUMAN, ()), earlier, LIMITS) == ()


def test_person_upgrades_same_link_and_opens_of_the_message() -> None:
    earlier = [_click(1, 40.0), _click(2, 40.3), Hit(False, "192.0.2.1", 7, 1, 0, 41.0),
               _click(1, 40.0, delivery=2)]
    person = _click(1, 600.0, ip="198.51.100.5")
    human = Verdict(VerdictKind.HUMAN, ())
    assert upgrade_targets(person, human, earlier) == (0, 2)
    assert upgrade_targets(person, Verdict(VerdictKind.MACHINE, ("x",)), earlier) == ()
