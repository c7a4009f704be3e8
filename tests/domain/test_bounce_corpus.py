"""Agreement of parse_bounce with the labelled real-world bounce corpus.

The corpus lives in ``<repo>/../shared/corpus/bounces`` and is not shipped with the product;
without it the test is skipped. Floors only go up: they record what the parser reaches.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mailcarrier.domain.bounce import BounceRecord, parse_bounce
from mailcarrier.domain.errors import ParseError

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "bounces"
FLOORS = {"reason": 0.97, "hard_bounce": 0.99, "recipient": 0.98, "record_count": 0.995}

pytestmark = pytest.mark.skipif(
    not (CORPUS / "labels.json").is_file(),
    reason=f"bounce corpus not found at {CORPUS} (expected ../shared next to the repo)")


def _read(path: Path) -> list[BounceRecord]:
    try:
        report = parse_bounce(path.read_bytes())
    except ParseError:
        return []
    return list(report.records) if report else []


def _agreement() -> dict[str, float]:
    labels: dict[str, list[dict[str, Any]]] = json.loads(
        (CORPUS / "labels.json").read_text())["labels"]
    hits = {key: 0 for key in FLOORS}
    for rel, expected in labels.items():
        got = _read(CORPUS / rel)
        pairs = list(zip(expected, got, strict=False))
        same_count = len(got) == len(expected)
        hits["record_count"] += same_count
        if not expected:
            for key in ("reason", "hard_bounce", "recipient"):
                hits[key] += same_count
            continue
        hits["reason"] += bool(got) and all(e["reason"] == g.reason.value for e, g in pairs)
        hits["hard_bounce"] += bool(got) and all(bool(e["hard_bounce"]) == g.hard_bounce
                                                 for e, g in pairs)
        hits["recipient"] += bool(got) and all((e["recipient"] or "").lower() == g.recipient
                                               for e, g in pairs)
    return {key: value / len(labels) for key, value in hits.items()}


def test_agreement_with_labels_meets_floors() -> None:
    agreement = _agreement()
    print("bounce corpus agreement: " + ", ".join(f"{k}={v:.1%}" for k, v in agreement.items()))
    for key, floor in FLOORS.items():
        assert agreement[key] >= floor, f"{key} agreement {agreement[key]:.1%} below {floor:.1%}"


def test_not_bounces_give_no_records() -> None:
    for path in sorted((CORPUS / "maildir" / "not").glob("*")):
        assert _read(path) == [], path.name


def test_malformed_and_multi_message_inputs_do_not_crash() -> None:
    for folder in ("maildir/err", "mailbox"):
        for path in sorted((CORPUS / folder).rglob("*")):
            if path.is_file():
                _read(path)
