"""Throughput of ``parse_bounce`` over the bounce corpus, against flufl.bounce.

Every file under ``<repo>/../shared/corpus/bounces/maildir`` is loaded into memory first.
Each round parses all of them; the figure is emails per second (min and median of the
rounds). flufl.bounce needs an ``email.message.Message``, so its timing includes
``email.message_from_bytes`` — parsing the message is part of the work for both sides.
flufl.bounce only lists failed addresses; ours also classifies reason, category and hard/soft.
"""

from __future__ import annotations

import contextlib
import email
import statistics
import sys
import time
from pathlib import Path

from flufl.bounce import all_failures

from mailcarrier.domain.bounce import parse_bounce
from mailcarrier.domain.classify import clear_cache
from mailcarrier.domain.errors import ParseError

# CPU seconds of this process: the machine is shared (2 cores, other jobs running), and
# "per second on one core" is what the target asks. Ours and the peer are timed alike.
_clock = time.process_time

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "bounces" / "maildir"


def ours(raws: list[bytes]) -> float:
    clear_cache()  # every round decides every reason afresh, as for unseen bounces
    start = _clock()
    for raw in raws:
        with contextlib.suppress(ParseError):
            parse_bounce(raw)
    return len(raws) / (_clock() - start)


def flufl(raws: list[bytes]) -> float:
    start = _clock()
    for raw in raws:
        # the peer may raise on malformed mail; the work done still counts
        with contextlib.suppress(Exception):
            all_failures(email.message_from_bytes(raw))
    return len(raws) / (_clock() - start)


def main(rounds: int = 5) -> None:
    raws = [p.read_bytes() for p in sorted(CORPUS.rglob("*")) if p.is_file()]
    if not raws:
        sys.exit(f"no corpus at {CORPUS}")
    ours(raws)  # warm-up, not counted: rule files compile and caches fill on first use
    flufl(raws)
    a, b = [], []
    for _ in range(rounds):
        a.append(ours(raws))
        b.append(flufl(raws))
    print(f"{len(raws)} emails, {rounds} rounds")
    for name, values in (("mailcarrier", a), ("flufl.bounce", b)):
        print(f"{name:13s} min={min(values):,.0f} median={statistics.median(values):,.0f} emails/s")
    x, y = statistics.median(a), statistics.median(b)
    print(f"RESULT bounce_parse={x:.0f} emails/s flufl_bounce={y:.0f} ratio={x / y:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
