"""Genuine bounces of other MTAs: does a reply read the same live and inside their bounce?

bench/sisimai_agreement.py does this with Postfix. Here the MTAs are Exim 4 and OpenSMTPD,
each writing its own bounce format. They conflict with the installed Postfix as
Debian packages, so they are not installed: ``apt-get download`` + ``dpkg -x`` puts each in a
private directory (``--cache``, default ``/work/mta-cache`` or ``$MAILCARRIER_MTA_CACHE``;
``--fetch`` fills it), and the daemon runs from there inside a private mount namespace
(``unshare -m``) where read-only overlays lay the extracted package over ``/usr`` and ``/etc``
(its compiled-in paths: helpers it re-executes, its users in ``passwd``, its config file), and
a writable overlay over ``/var`` holds its spool. Nothing outside the namespace changes.

Each MTA listens on loopback and relays one message per catalogue reply
(``tests/domain/data/replies.toml`` and the reply tables of the domain tests, as
bench/sisimai_agreement.py collects them) to an aiosmtpd MX that answers that reply at its
stage: MAIL FROM, RCPT TO or end of DATA (or the banner/EHLO on a port of its own); the MTA
writes its bounce, which a collecting MX keeps. Retry rules are set so that a 4xx is returned
after one try too. (Sendmail 8.17 was tried the same way and left out: its bounce of a
relayed message was written as a quarantined ``Qf`` queue file and never sent; Courier needs
its authdaemon and several compiled-in trees.)

For each bounce: ``parse_bounce`` must give one record, for the recipient mailed, whose
reason, category and hard_bounce equal ``classify_reply`` of the same reply at that stage
(checked for every 5xx reply; 4xx agreement is shown apart, as an MTA that gives up on a 4xx
states its own verdict). Prints per-MTA agreement, the disagreements, and
``RESULT mta_bounce_agreement=<pct> % <mta>=<pct> ... [sisimai=<pct>]``: Sisimai 4.25's
agreement on the same bounces (reason and hard bounce against our live reading) when
``libsisimai-perl`` is installed.

Usage: ``python bench/mta_bounces.py [--only exim,opensmtpd] [--keep DIR] [--show N]``
(root: namespaces and overlay mounts).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.sisimai_agreement import (
    _EARLY,
    Reply,
    _Answerer,
    _Collector,
    _Greeter,
    catalogue,
    one_line,
    sisimai_make,
)
from tests.interop.mtas import MTAS, Mta, extracted, fetch
from tests.interop.servers import free_port

from mailcarrier.domain import classify_reply, parse_reply
from mailcarrier.domain.bounce import parse_bounce
from mailcarrier.domain.errors import ParseError

DEFAULT_CACHE = Path(os.environ.get("MAILCARRIER_MTA_CACHE", "/work/mta-cache"))


@dataclass(frozen=True)
class Outcome:
    """One bounce compared with the live reading of the reply it answers."""

    mta: str
    reply: Reply
    path: Path | None
    records: int
    recipient_ok: bool
    live: tuple[str, int, bool]
    ours: tuple[str, int, bool] | None
    command: str = ""
    rule: str = ""

    @property
    def permanent(self) -> bool:
        return self.reply.text[:1] == "5"

    @property
    def agrees(self) -> bool:
        return self.records == 1 and self.recipient_ok and self.ours == self.live


def usable_replies() -> list[Reply]:
    """Catalogue replies with a reply code that an MX can send (ASCII, 4xx/5xx)."""
    return [r for r in catalogue() if r.text[:3].isdigit() and r.text[:1] in "45" and r.text.isascii()]


def live_verdict(reply: Reply) -> tuple[str, int, bool]:
    result = classify_reply(parse_reply(one_line(reply.text), reply.stage))
    return result.reason.value, int(result.category), result.hard_bounce


def run_mta(mta: Mta, replies: Sequence[Reply], folder: Path, timeout: float = 180.0) -> dict[int, Path]:
    """Relay one message per reply through ``mta``; the bounce file of each case number."""
    from aiosmtpd.controller import Controller  # noqa: PLC0415 - only the run needs it

    answer_port, dsn_port = free_port(), free_port()
    early = [(n, r) for n, r in enumerate(replies) if r.stage in _EARLY]
    greeter = _Greeter(early)
    routes = {"ans.test": answer_port, "dsn.test": dsn_port}
    routes.update({f"c{n}.ans.test": port for n, port in greeter.ports.items()})
    collector = _Collector(folder)
    answer = Controller(_Answerer(replies), hostname="127.0.0.1", port=answer_port)
    sink = Controller(collector, hostname="127.0.0.1", port=dsn_port)
    answer.start()
    sink.start()
    try:
        with greeter, mta.running(routes, folder / "run") as port:
            def send(n: int) -> None:
                reply = replies[n]
                to = f"r{n}@c{n}.ans.test" if reply.stage in _EARLY else f"r{n}@ans.test"
                body = (f"From: s{n}@dsn.test\r\nTo: {to}\r\nSubject: case {n}\r\n"
                        f"Message-ID: <case-{n}@dsn.test>\r\n\r\nstage {reply.stage.value}\r\n")
                with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
                    client.sendmail(f"s{n}@dsn.test", [to], body)

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(send, range(len(replies))))
            deadline = time.monotonic() + timeout
            while collector.count < len(replies) and time.monotonic() < deadline:
                time.sleep(0.3)
    finally:
        answer.stop()
        sink.stop()
    print(f"{mta.name}: {len(replies)} messages sent, {collector.count} bounces back")
    found: dict[int, Path] = {}
    for path in sorted(folder.glob("dsn-*.eml")):
        raw = path.read_text(errors="replace")
        for n in range(len(replies)):
            if f"<case-{n}@dsn.test>" in raw and f"r{n}@" in raw:
                found.setdefault(n, path)
                break
    return found


def compare(mta: str, replies: Sequence[Reply], bounces: dict[int, Path]) -> list[Outcome]:
    outcomes = []
    for n, reply in enumerate(replies):
        path = bounces.get(n)
        live = live_verdict(reply)
        if path is None:
            outcomes.append(Outcome(mta, reply, None, 0, False, live, None))
            continue
        want = f"r{n}@c{n}.ans.test" if reply.stage in _EARLY else f"r{n}@ans.test"
        try:
            report = parse_bounce(path.read_bytes())
        except ParseError:
            report = None
        records = report.records if report else ()
        mine = [r for r in records if r.recipient.lower() == want]
        record = mine[0] if mine else (records[0] if records else None)
        ours = (record.reason.value, int(record.category), record.hard_bounce) if record else None
        outcomes.append(Outcome(mta, reply, path, len(records), bool(mine), live, ours,
                                record.command.value if record else "", record.rule if record else ""))
    return outcomes


def summarise(mta: str, outcomes: Sequence[Outcome], show: int) -> float:
    permanent = [o for o in outcomes if o.permanent]
    temporary = [o for o in outcomes if not o.permanent]
    ok = sum(o.agrees for o in permanent)
    pct = 100 * ok / (len(permanent) or 1)
    back = sum(o.path is not None for o in outcomes)
    print(f"\n== {mta}: {back}/{len(outcomes)} bounces; 5xx agree {ok}/{len(permanent)} = {pct:.1f} %; "
          f"4xx agree {sum(o.agrees for o in temporary)}/{len(temporary)}; "
          f"recipient exact {sum(o.recipient_ok for o in outcomes)}; one record "
          f"{sum(o.records == 1 for o in outcomes)}")
    groups: dict[str, list[Outcome]] = collections.defaultdict(list)
    for o in permanent:
        if o.agrees:
            continue
        if o.path is None:
            key = "no bounce"
        elif o.records != 1 or not o.recipient_ok:
            key = f"records={o.records} recipient_ok={o.recipient_ok}"
        else:
            key = f"live={o.live} bounce={o.ours}"
        groups[key].append(o)
    for key, members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        print(f"  {key} x{len(members)}")
        for o in members[:show]:
            print(f"      [{o.reply.stage.value} -> {o.command}] {o.rule} {o.path.name if o.path else ''}: "
                  f"{o.reply.text[:140]}")
    return pct


def sisimai_figure(outcomes: Sequence[Outcome]) -> float | None:
    """Sisimai's agreement with the live reading on the same 5xx bounces (reason, hard bounce)."""
    if shutil.which("perl") is None or subprocess.run(["perl", "-MSisimai", "-e", "1"],
                                                      capture_output=True, check=False).returncode:
        return None
    from bench.sisimai_agreement import HARD_REASONS, agree  # noqa: PLC0415

    permanent = [o for o in outcomes if o.permanent and o.path is not None]
    found = sisimai_make([o.path for o in permanent if o.path])
    good = 0
    for o in permanent:
        records = found.get(o.path, []) if o.path else []
        if len(records) == 1:
            reason = str(records[0]["reason"])
            good += bool(agree(o.live[0], reason)) and ((reason in HARD_REASONS) == o.live[2])
    return 100 * good / (len(permanent) or 1)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(MTAS))
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--fetch", action="store_true", help="apt-get download + dpkg -x into --cache")
    parser.add_argument("--keep", type=Path, help="keep the bounces in this folder (one subfolder per MTA)")
    parser.add_argument("--show", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the bounces per MTA")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("needs root (mount namespace, overlay mounts)")
    replies = usable_replies()
    figures: dict[str, float] = {}
    every: list[Outcome] = []
    for name in args.only.split(","):
        if args.fetch:
            fetch(name, args.cache)
        root = extracted(name, args.cache)
        if root is None:
            print(f"{name}: not run (no extracted package under {args.cache}; --fetch)")
            continue
        with tempfile.TemporaryDirectory(prefix=f"mta-{name}-") as tmp:
            folder = (args.keep / name) if args.keep else Path(tmp)
            folder.mkdir(parents=True, exist_ok=True)
            bounces = run_mta(MTAS[name](root), replies, folder, args.timeout)
            outcomes = compare(name, replies, bounces)
            figures[name] = summarise(name, outcomes, args.show)
            peer = sisimai_figure(outcomes)
            if peer is not None:
                figures[f"{name}_sisimai"] = peer
            every += outcomes
    permanent = [o for o in every if o.permanent]
    overall = 100 * sum(o.agrees for o in permanent) / (len(permanent) or 1)
    print(f"RESULT mta_bounce_agreement={overall:.1f} % "
          + " ".join(f"{k}={v:.1f}" for k, v in figures.items()) + f" bounces={len(permanent)}")


if __name__ == "__main__":
    main()
