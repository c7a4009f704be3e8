"""Throughput of ``classify`` on a mixed set of SMTP reply lines.

The set is built from common provider templates filled with many distinct addresses and IP
addresses, as a real send sees them. Two passes are reported: cold (every text is new to the
classifier cache) and warm (the same texts again).

Peer: flufl.bounce has no reply classifier, so the baseline is the same classifier with
every cache emptied before each reply (the rules evaluated afresh each time, as a
straightforward implementation would). The RESULT line compares the cold figure, the
honest one for a send of unique replies.
"""

from __future__ import annotations

import random
import statistics
import sys
import time

from mailcarrier.domain.classify import classify, clear_cache
from mailcarrier.domain.smtp_reply import SMTPStage

# CPU seconds of this process: the machine is shared (2 cores, other jobs running), and
# "per second on one core" is what the target asks. Ours and the peer are timed alike.
_clock = time.process_time

TEMPLATES = [
    (SMTPStage.RCPT, "550 5.1.1 <{a}>: Recipient address rejected: User unknown in virtual mailbox table"),
    (SMTPStage.RCPT, "550-5.1.1 The email account that you tried to reach does not exist. {a} gsmtp"),
    (SMTPStage.RCPT, "452 4.2.2 The email account that you tried to reach is over quota. {a}"),
    (SMTPStage.CONNECT, "554 5.7.1 Service unavailable; Client host [{ip}] blocked using zen.spamhaus.org"),
    (SMTPStage.RCPT, "421 4.7.0 [TSS04] Messages from {ip} temporarily deferred due to user complaints"),
    (SMTPStage.EOD, "550 5.7.515 Access denied, sending domain {d} does not meet the required "
                    "authentication level."),
    (SMTPStage.RCPT, "450 4.2.0 <{a}>: Recipient address rejected: Greylisted, try again later"),
    (SMTPStage.MAIL, "550 5.7.1 Unfortunately, messages from [{ip}] weren't sent. (S3150)"),
    (SMTPStage.RCPT, "552 5.2.2 <{a}> mailbox full"),
    (SMTPStage.EOD, "554 5.7.1 Message rejected as spam by Content Filtering {ip}"),
]


def build_replies(count: int, seed: int = 7) -> list[tuple[SMTPStage, str, int]]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        stage, template = TEMPLATES[i % len(TEMPLATES)]
        ip = ".".join(str(rng.randrange(1, 255)) for _ in range(4))
        text = template.format(a=f"user{rng.randrange(10**9)}@host{i % 977}.example",
                               ip=ip, d=f"sender{i % 331}.example")
        out.append((stage, text, int(text[:3])))
    return out


def ours(replies: list[tuple[SMTPStage, str, int]]) -> float:
    start = _clock()
    for stage, text, code in replies:
        classify(text[4:], code=code, stage=stage)
    return len(replies) / (_clock() - start)


def naive(replies: list[tuple[SMTPStage, str, int]]) -> float:
    start = _clock()
    for stage, text, code in replies:
        clear_cache()
        classify(text[4:], code=code, stage=stage)
    return len(replies) / (_clock() - start)


def main(count: int = 100_000, rounds: int = 3) -> None:
    cold, warm, peer = [], [], []
    for r in range(rounds):
        replies = build_replies(count, seed=r)
        cold.append(ours(replies))
        warm.append(ours(replies))
        peer.append(naive(replies))
    for name, values in (("ours cold", cold), ("ours warm", warm), ("uncached", peer)):
        print(f"{name:12s} min={min(values):,.0f} median={statistics.median(values):,.0f} replies/s")
    x, y = statistics.median(cold), statistics.median(peer)
    print(f"RESULT classify_replies={x:.0f} replies/s uncached={y:.0f} ratio={x / y:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
