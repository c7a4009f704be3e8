"""The world of the delivery benchmark: smtp-sink destinations, the Postfix peer, the ceiling.

Everything runs inside a private network namespace that has only ``lo`` (created by
``bench/delivery.py`` when it runs as root), so the sinks can listen on every loopback
address and nothing can leave the machine. 1,000 test domains ``d0001.test`` …
``d1000.test`` each have their own loopback "MX" ``127.1.X.Y``; the last 5% of domains
answer RCPT with 4xx, the 3% before them with 5xx (smtp-sink ``-r``/``-f``), on their own
ports, so Postfix and mailcarrier see exactly the same destinations and the same replies.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import smtplib
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

DOMAINS = 1000
PORT_OK, PORT_HARD, PORT_SOFT = 2525, 2526, 2527
SOFT_SHARE, HARD_SHARE = 0.05, 0.03
TRANSPORT_MAP = Path("/etc/postfix/bench_transport")


def domain_name(i: int) -> str:
    """The i-th test domain, 1-based."""
    return f"d{i:04d}.test"


def domain_address(i: int) -> str:
    """The loopback address playing the i-th domain's MX (as in the peer's transport map)."""
    x, y = divmod(i - 1, 200)
    return f"127.1.{x}.{y + 1}"


def domain_port(i: int) -> int:
    """Which sink answers for domain i: the last 5% soft-fail, the 3% before hard-fail."""
    soft_from = DOMAINS - round(DOMAINS * SOFT_SHARE) + 1
    hard_from = soft_from - round(DOMAINS * HARD_SHARE)
    if i >= soft_from:
        return PORT_SOFT
    if i >= hard_from:
        return PORT_HARD
    return PORT_OK


def static_routes() -> str:
    """mailcarrier's static routing table for the same 1,000 destinations."""
    return ",".join(f"{domain_name(i)}={domain_address(i)}:{domain_port(i)}"
                    for i in range(1, DOMAINS + 1))


@contextlib.contextmanager
def sinks() -> Iterator[None]:
    """Three smtp-sink processes: accept all, 5xx at RCPT, 4xx at RCPT."""
    exe = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"

    # One sink serves every destination's connections: with the default 1,024 descriptors it
    # runs out and new connections wait unaccepted (the senders then time out). The sinks
    # inherit this process's limit.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    procs = [
        subprocess.Popen([exe, "-u", "nobody", f"0.0.0.0:{PORT_OK}", "4096"]),
        subprocess.Popen([exe, "-u", "nobody", "-f", "RCPT", f"0.0.0.0:{PORT_HARD}", "1024"]),
        subprocess.Popen([exe, "-u", "nobody", "-r", "RCPT", f"0.0.0.0:{PORT_SOFT}", "1024"]),
    ]
    time.sleep(0.5)
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(5)


def ceiling(n: int, size: int) -> float:
    """Loopback ceiling: ``smtp-source`` blasting n messages of ``size`` bytes at the sink."""
    exe = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    start = time.perf_counter()
    subprocess.run([exe, "-s", "20", "-l", str(size), "-m", str(n), "-f", "bench@bench.test",
                    "-t", "user@d0001.test", f"{domain_address(1)}:{PORT_OK}"], check=True)
    return n / (time.perf_counter() - start)


@dataclass(frozen=True)
class PeerRun:
    """Postfix's figures for one batch."""

    messages: int
    seconds: float
    deferred: int

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def _write_transport_map() -> None:
    lines = [f"{domain_name(i)}\tsmtp:[{domain_address(i)}]:{domain_port(i)}"
             for i in range(1, DOMAINS + 1)]
    lines += ["bench.test\tdiscard:", ".bench.test\tdiscard:",
              "*\terror:5.7.1 benchmark instance: outside delivery disabled"]
    TRANSPORT_MAP.write_text("\n".join(lines) + "\n", encoding="ascii")
    subprocess.run(["postmap", str(TRANSPORT_MAP)], check=True)


def _queue() -> list[dict[str, object]]:
    out = subprocess.run(["postqueue", "-j"], capture_output=True, text=True, check=False).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@contextlib.contextmanager
def postfix() -> Iterator[None]:
    """Postfix configured by ../shared/peers/postfix-setup.sh, with our three-port transport map."""
    if not Path("/etc/postfix/bench_header_checks").exists():
        raise SystemExit("Postfix peer not configured: run ../shared/peers/postfix-setup.sh as root")
    _write_transport_map()
    subprocess.run(["postfix", "stop"], capture_output=True, check=False)
    subprocess.run(["postsuper", "-d", "ALL"], capture_output=True, check=False)
    subprocess.run(["postfix", "start"], check=True, capture_output=True)
    time.sleep(1.0)
    try:
        yield
    finally:
        subprocess.run(["postsuper", "-d", "ALL"], capture_output=True, check=False)
        subprocess.run(["postfix", "stop"], capture_output=True, check=False)


def inject(messages: list[tuple[str, str, bytes]], *, threads: int = 8) -> None:
    """Submit (sender, recipient, data) to Postfix on port 25; data must carry the hold header."""
    def worker(chunk: list[tuple[str, str, bytes]]) -> None:
        with smtplib.SMTP("127.0.0.1", 25, timeout=60) as client:
            for sender, recipient, data in chunk:
                client.sendmail(sender, [recipient], data)

    chunks = [messages[i::threads] for i in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, chunks))


def drain(expected: int, expected_deferred: int, *, timeout: float = 600.0) -> PeerRun:
    """Release the hold queue and time until every message is delivered, bounced or deferred."""
    deadline = time.monotonic() + 60
    while len(_queue()) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    start = time.perf_counter()
    subprocess.run(["postsuper", "-H", "ALL"], check=True, capture_output=True)
    subprocess.run(["postqueue", "-f"], check=True, capture_output=True)
    deadline = time.monotonic() + timeout
    deferred = 0
    while time.monotonic() < deadline:
        queue = _queue()
        busy = [m for m in queue if m.get("queue_name") != "deferred"]
        deferred = len(queue) - len(busy)
        # bounces generated for the 5xx go to bench.test (discarded) and pass quickly
        if not busy and deferred >= expected_deferred:
            break
        time.sleep(0.05)
    return PeerRun(messages=expected, seconds=time.perf_counter() - start, deferred=deferred)


def in_namespace() -> bool:
    """True when this process runs in the benchmark's private network namespace."""
    return os.environ.get("MC_BENCH_NETNS") == "1"
