"""Delivery throughput: mailcarrier's full pipeline against a local Postfix, same batch, same sinks.

    sudo .venv/bin/python bench/delivery.py [--messages 20000] [--rounds 3] [--sign]

Runs inside a private network namespace with only ``lo`` (created here; needs root and
``ip``), so sinks can listen on every loopback address and nothing leaves the machine.
World (see ``support/delivery_peer.py``): 1,000 domains, each its own loopback MX; 5% of recipients
get 4xx at RCPT, 3% get 5xx; ~30 KB HTML with personalisation.

- **mailcarrier**: a fresh SQLite store, an audience of N contacts, one mailing sent
  (enqueue) and ``run_worker(..., until_idle=True)`` timed from the first claim to the last
  recorded result: claim, render, (sign), send, classify, record.
- **Postfix**: the same N personalised messages injected with ``X-Bench-Hold: yes`` (parked in
  the hold queue), then released; timed until nothing is left but the deferred 4xx.
- **ceiling**: ``smtp-source`` → ``smtp-sink`` on loopback, for scale.

Rounds interleave the two sides; medians are reported. The RESULT line compares
mailcarrier's messages/second with Postfix's (unsigned); with ``--sign`` ours signs every
message with RSA-2048 DKIM.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

import delivery_peer as peer
from delivery_ours import run_ours

HTML_FILLER = "<p>" + ("Our autumn collection is here, with free delivery this week only. " * 6) + "</p>\n"


def html_body(size: int = 30_000) -> str:
    """A ~30 KB HTML newsletter with a few personalised spots and links."""
    head = "<html><body><h1>Hello {{ contact.first_name }}</h1>\n"
    links = "".join(f'<p><a href="https://shop.example.com/item/{i}">Item {i}</a></p>\n' for i in range(8))
    body = head + links
    while len(body) < size:
        body += HTML_FILLER
    return body + "<p>Sent to {{ contact.email }}</p></body></html>\n"


def recipients(n: int) -> list[tuple[str, str]]:
    """(email, first name) spread evenly over the 1,000 domains."""
    return [(f"user{k}@{peer.domain_name(k % peer.DOMAINS + 1)}", f"Name{k}") for k in range(n)]


def expected_soft(rcpts: list[tuple[str, str]]) -> int:
    return sum(1 for email, _ in rcpts
               if peer.domain_port(int(email.split("@d")[1][:4])) == peer.PORT_SOFT)


def postfix_round(rcpts: list[tuple[str, str]], html: str) -> peer.PeerRun:
    """Inject the personalised batch into the hold queue, then time the drain."""
    messages = []
    for email, name in rcpts:
        body = html.replace("{{ contact.first_name }}", name).replace("{{ contact.email }}", email)
        data = (f"From: News <news@bench.test>\r\nTo: {email}\r\nSubject: Autumn\r\n"
                f"X-Bench-Hold: yes\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
                f"\r\n{body}").replace("\n", "\r\n").replace("\r\r\n", "\r\n").encode()
        messages.append(("news@bench.test", email, data))
    with peer.postfix():
        peer.inject(messages)
        return peer.drain(len(messages), expected_soft(rcpts))


def ours_round(rcpts: list[tuple[str, str]], html: str, *, sign: bool,
               processes: int) -> tuple[float, float]:
    """Run mailcarrier's whole pipeline on a fresh SQLite store; (messages/s, CPU ms/message)."""
    with tempfile.TemporaryDirectory(prefix="mc-bench-") as tmp:
        seconds, cpu = run_ours(Path(tmp), rcpts, html, routes=peer.static_routes(), sign=sign,
                                processes=processes)
    return len(rcpts) / seconds, cpu * 1000 / len(rcpts)


def enter_namespace() -> None:
    """Re-run this script inside a fresh network namespace that has only loopback."""
    if peer.in_namespace():
        return
    if os.geteuid() != 0 or not shutil.which("ip"):
        sys.exit("bench/delivery.py needs root and iproute2 to create its private network namespace")
    name = f"mcbench{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        env = dict(os.environ, MC_BENCH_NETNS="1")
        code = subprocess.run(["ip", "netns", "exec", name, sys.executable, *sys.argv], env=env,
                              check=False).returncode
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
    sys.exit(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sign", action="store_true", help="DKIM-sign (RSA-2048) every message")
    parser.add_argument("--processes", type=int, default=2, help="mailcarrier worker processes")
    parser.add_argument("--peer-only", action="store_true", help="measure Postfix and the ceiling only")
    args = parser.parse_args()
    enter_namespace()

    rcpts = recipients(args.messages)
    html = html_body()
    ours: list[float] = []
    ours_cpu: list[float] = []
    theirs: list[float] = []
    with peer.sinks():
        top = peer.ceiling(min(args.messages, 10_000), len(html))
        print(f"loopback ceiling (smtp-source -> smtp-sink, {len(html)} bytes): {top:,.0f} msg/s")
        for r in range(args.rounds):
            run = postfix_round(rcpts, html)
            theirs.append(run.rate)
            print(f"round {r + 1}: postfix {run.rate:,.0f} msg/s ({run.seconds:.1f} s, "
                  f"{run.deferred} deferred)", flush=True)
            if not args.peer_only:
                rate, cpu_ms = ours_round(rcpts, html, sign=args.sign, processes=args.processes)
                ours.append(rate)
                ours_cpu.append(cpu_ms)
                print(f"round {r + 1}: mailcarrier {rate:,.0f} msg/s, {cpu_ms:.2f} ms CPU/msg "
                      f"(all worker processes)", flush=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    theirs_m = statistics.median(theirs)
    print(f"postfix median {theirs_m:,.0f} msg/s over {args.rounds} rounds of {args.messages}")
    if args.peer_only:
        print(f"RESULT postfix_delivery={theirs_m:.0f} msg/s smtp_source_ceiling={top:.0f} "
              f"ratio={theirs_m / top:.2f}")
        return
    ours_m = statistics.median(ours)
    metric = "delivery_signed" if args.sign else "delivery_unsigned"
    print(f"mailcarrier median {ours_m:,.0f} msg/s, {statistics.median(ours_cpu):.2f} ms CPU/msg, "
          f"peak RSS {peak_mb:.0f} MB")
    print(f"RESULT {metric}={ours_m:.0f} msg/s postfix={theirs_m:.0f} ratio={ours_m / theirs_m:.2f}")


if __name__ == "__main__":
    main()
