"""List where ``parse_bounce`` disagrees with the labelled bounce corpus, to find causes.

Usage: ``python scripts/bounce_corpus_misses.py [CORPUS_DIR]`` (default ``../shared/corpus/bounces``).
Prints one block per disagreeing record (file, expected vs got reason and hard/soft, the
statuses, the rule that decided and the diagnostic), then the agreement per field as the
regression test ``tests/domain/test_bounce_corpus.py`` counts it. Group the misses by the
rule and the wording before changing anything: a fix must be a cause, never a file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from mailcarrier.domain.bounce import BounceRecord, parse_bounce
from mailcarrier.domain.errors import ParseError

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "bounces"


def _read(path: Path) -> list[BounceRecord]:
    try:
        report = parse_bounce(path.read_bytes())
    except ParseError:
        return []
    return list(report.records) if report else []


def _hs(hard: bool) -> str:
    return "hard" if hard else "soft"


def main(corpus: Path) -> None:
    labels: dict[str, list[dict[str, Any]]] = json.loads((corpus / "labels.json").read_text())["labels"]
    hits = {"reason": 0, "hard_bounce": 0, "recipient": 0, "record_count": 0}
    for rel, expected in labels.items():
        got = _read(corpus / rel)
        hits["record_count"] += len(got) == len(expected)
        if not expected:
            for key in ("reason", "hard_bounce", "recipient"):
                hits[key] += not got
            if got:
                print(f"{rel}: not a bounce, got {len(got)} record(s)")
            continue
        pairs = list(zip(expected, got, strict=False))
        hits["reason"] += bool(got) and all(e["reason"] == g.reason.value for e, g in pairs)
        hits["hard_bounce"] += bool(got) and all(bool(e["hard_bounce"]) == g.hard_bounce for e, g in pairs)
        hits["recipient"] += bool(got) and all((e["recipient"] or "").lower() == g.recipient
                                               for e, g in pairs)
        if len(got) != len(expected):
            print(f"{rel}: {len(expected)} record(s) expected, got {len(got)}")
        for e, g in pairs:
            same = (e["reason"] == g.reason.value and bool(e["hard_bounce"]) == g.hard_bounce
                    and (e["recipient"] or "").lower() == g.recipient)
            if same:
                continue
            print(f"{rel}: {e['reason']}/{_hs(bool(e['hard_bounce']))} expected, "
                  f"got {g.reason.value}/{_hs(g.hard_bounce)} by {g.rule}")
            print(f"    status {e['status'] or '-'} / {g.status or '-'}, code {e['reply_code'] or '-'} / "
                  f"{g.reply_code or '-'}, recipient {e['recipient']} / {g.recipient}")
            print(f"    {g.diagnostic[:240]}")
    print(", ".join(f"{k}={v / len(labels):.1%}" for k, v in hits.items()), f"of {len(labels)} files")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT)
