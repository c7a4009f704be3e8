"""Differential check against Sisimai: where does our reading of bounces differ from the reference?

Sisimai (Debian's ``libsisimai-perl``, 4.25) is the bounce reader whose vocabulary our reasons
use. It is run here as a black box through ``perl -MSisimai`` (``Sisimai->make`` on a bounce
email, ``Sisimai->match`` on a bare reply text) beside our parser and classifier, over three
inputs:

* ``corpus``: the shared corpus (``../shared/corpus/bounces/maildir/bsd``), record by record
  (file, recipient); the labels are shown beside both readings;
* ``replies``: the catalogue of reply texts (``tests/domain/data/replies.toml`` and the reply
  tables of the domain tests); ours reads each at the stage it answered, Sisimai's ``match``
  sees only the text;
* ``postfix``: genuine DSNs written by a real MTA: an own Postfix instance on loopback relays
  one message per catalogue reply to an aiosmtpd MX that answers that reply (at MAIL FROM,
  RCPT TO or the end of DATA, as the case says), and bounces it with its own RFC 3464 DSN
  (``maximal_queue_lifetime = 0``: a 4xx is returned after one try too) to a collecting MX.
  Needs root and Postfix (``tests/interop/servers.py``); skipped otherwise.

Sisimai 4.25 predates some Sisimai-5 reasons we use (authfailure, badreputation,
failedstarttls, requireptr, notcompliantrfc, speeding); where ours is one of them, Sisimai's
nearest 4.25 reasons count as agreement ("compatible") and are tallied apart.

Prints, per input, exact/compatible agreement of the reason and of "address invalid"
(Sisimai's hardbounce), the disagreements grouped by (ours, Sisimai), and a last line
``RESULT sisimai_agreement=<pct> % corpus=<pct> replies=<pct> postfix=<pct>``.

Usage: ``python bench/sisimai_agreement.py [--only corpus,replies,postfix] [--show N]``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import json
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.interop.servers import Postfix, free_port

from mailcarrier.domain import SMTPStage, parse_reply
from mailcarrier.domain.bounce import parse_bounce
from mailcarrier.domain.classify import classify_evidence
from mailcarrier.domain.errors import ParseError
from mailcarrier.domain.evidence import Evidence

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus" / "bounces"
REPLIES = ROOT / "tests" / "domain" / "data" / "replies.toml"

#: Sisimai-5 reasons this Sisimai (4.25) does not know -> the 4.25 reasons that say the same
#: thing less exactly (an SPF failure was "rejected" or "securityerror", a missing PTR "blocked").
NEWER_REASONS: dict[str, frozenset[str]] = {
    "authfailure": frozenset({"securityerror", "rejected", "blocked", "policyviolation"}),
    "badreputation": frozenset({"blocked", "rejected"}),
    "requireptr": frozenset({"blocked"}),
    "failedstarttls": frozenset({"securityerror", "systemerror"}),
    "notcompliantrfc": frozenset({"contenterror", "syntaxerror", "securityerror"}),
    "speeding": frozenset({"toomanyconn", "blocked", "rejected"}),
}
#: Sisimai's hard-bounce reasons (4.25 reports them as ``softbounce = 0``) (the address itself is bad, when the failure is permanent).
HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved", "notaccept"})

_PERL_MAKE = r"""
use strict; use warnings; use Sisimai; use JSON::PP;
my $json = JSON::PP->new->canonical;
for my $path (@ARGV) {
    my $v = eval { Sisimai->make($path, 'delivered' => 1) } || [];
    for my $e (@$v) {
        my $h = $e->damn;
        print $json->encode({file => $path, recipient => lc($h->{'recipient'} // ''),
            reason => $h->{'reason'} // '', status => $h->{'deliverystatus'} // '',
            code => $h->{'replycode'} // '', hard => ($h->{'softbounce'} // -1) == 0 ? 1 : 0}), "\n";
    }
}
"""
_PERL_MATCH = r"""
use strict; use warnings; use Sisimai; use JSON::PP;
binmode STDIN, ':encoding(UTF-8)';
while (my $line = <STDIN>) {
    my $text = JSON::PP->new->decode($line);
    print((Sisimai->match($text) // '') . "\n");
}
"""


@dataclass(frozen=True)
class Pair:
    """One record read by both: where it comes from, the two readings, the label if any."""

    where: str
    ours: str
    theirs: str
    ours_hard: bool
    theirs_hard: bool
    label: str = ""
    text: str = ""


def agree(ours: str, theirs: str) -> str:
    """"exact", "compatible" (a newer reason of ours, Sisimai's nearest 4.25 one) or ""."""
    if ours == theirs:
        return "exact"
    if theirs in NEWER_REASONS.get(ours, ()):
        return "compatible"
    return ""


def sisimai_make(paths: Sequence[Path]) -> dict[Path, list[dict[str, object]]]:
    """Sisimai's records per bounce email file."""
    found: dict[Path, list[dict[str, object]]] = collections.defaultdict(list)
    for start in range(0, len(paths), 200):
        done = subprocess.run(["perl", "-e", _PERL_MAKE, *map(str, paths[start:start + 200])],
                              capture_output=True, text=True, check=True)
        for line in done.stdout.splitlines():
            record = json.loads(line)
            found[Path(str(record["file"]))].append(record)
    return found


def sisimai_match(texts: Sequence[str]) -> list[str]:
    """Sisimai's reason for each bare reply text."""
    feed = "".join(json.dumps(t) + "\n" for t in texts)
    done = subprocess.run(["perl", "-e", _PERL_MATCH], input=feed, capture_output=True, text=True,
                          check=True)
    return done.stdout.splitlines()


# --- the inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    stage: SMTPStage
    text: str
    expected: str = ""
    action: str = ""
    remote_host: str = ""

    def evidence(self) -> Evidence:
        if self.text[:3].isdigit():
            return Evidence.of_reply(parse_reply(self.text, self.stage), action=self.action,
                                     remote_host=self.remote_host)
        return Evidence(self.text, None, self.stage, "smtp", self.action, remote_host=self.remote_host)


def catalogue() -> list[Reply]:
    """replies.toml and the reply tables of the domain tests, each reply once."""
    doc = tomllib.loads(REPLIES.read_text(encoding="utf-8"))
    found = [Reply(SMTPStage(r["stage"]), r["reply"], r["reason"], r.get("action", ""), r.get("remote_host", ""))
             for r in doc["reply"]
             if not r["reply"].lower().startswith("x-unix;")]
    try:
        from tests.domain.test_classify import PROVIDER_REPLIES  # noqa: PLC0415 - optional tables
        from tests.domain.test_one_classifier import REPLIES as MORE  # noqa: PLC0415
        from tests.domain.test_one_classifier import VOCABULARY  # noqa: PLC0415
    except ImportError:
        return found
    for stage, template, *rest in [*MORE, *VOCABULARY, *PROVIDER_REPLIES]:
        expected = str(rest[0]) if rest else ""
        found.append(Reply(SMTPStage(str(stage)), str(template).format(a="pat@dest.test"), expected))
    unique: dict[tuple[SMTPStage, str], Reply] = {}
    for reply in found:
        unique.setdefault((reply.stage, reply.text), reply)
    return list(unique.values())


def _ours_records(path: Path) -> list[tuple[str, str, bool]]:
    try:
        report = parse_bounce(path.read_bytes())
    except ParseError:
        return []
    return [(r.recipient.lower(), r.reason.value, r.hard_bounce) for r in report.records] if report else []


def compare_files(paths: Sequence[Path], labels: dict[str, list[dict[str, object]]] | None = None,
                  base: Path | None = None) -> tuple[list[Pair], list[str]]:
    """Pairs of records read by both, and the records only one side found."""
    theirs_by_file = sisimai_make(paths)
    pairs, alone = [], []
    for path in paths:
        name = str(path.relative_to(base)) if base else path.name
        expected = {str(e.get("recipient", "")).lower(): str(e["reason"]) for e in (labels or {}).get(name, [])}
        theirs = {str(r["recipient"]): r for r in theirs_by_file.get(path, [])}
        text = _excerpt(path)
        for recipient, reason, hard in _ours_records(path):
            other = theirs.pop(recipient, None)
            if other is None:
                alone.append(f"{name}: only ours: {recipient} {reason}")
                continue
            pairs.append(Pair(f"{name} {recipient}", reason, str(other["reason"]), hard, bool(other["hard"]),
                              expected.get(recipient, ""), text))
        alone += [f"{name}: only Sisimai: {r} {v['reason']}" for r, v in theirs.items()]
    return pairs, alone


def _excerpt(path: Path) -> str:
    raw = path.read_bytes().decode("utf-8", "replace")
    for key in ("Diagnostic-Code:", "said:", "SMTP error", "<<< 5", "<<< 4"):
        at = raw.find(key)
        if at >= 0:
            return " ".join(raw[at:at + 200].split())
    return ""


def compare_replies(replies: Sequence[Reply]) -> list[Pair]:
    theirs = sisimai_match([r.text for r in replies])
    pairs = []
    for reply, other in zip(replies, theirs, strict=True):
        result = classify_evidence(reply.evidence())
        permanent = reply.text[:1] == "5" or (not reply.text[:1].isdigit() and reply.action != "delayed")
        pairs.append(Pair(f"{reply.stage.value}", result.reason.value, other or "undefined", result.address_invalid,
                          other in HARD_REASONS and permanent, reply.expected, reply.text))
    return pairs


# --- genuine Postfix DSNs -----------------------------------------------------------------------

#: Where the answering MX gives each catalogue reply (a reply of unknown stage at RCPT TO;
#: aiosmtpd has no hook on the DATA command itself, so "data" is answered after the content).
_STAGE_OF = {SMTPStage.MAIL: "mail", SMTPStage.RCPT: "rcpt", SMTPStage.UNKNOWN: "rcpt",
             SMTPStage.DATA: "eod", SMTPStage.EOD: "eod", SMTPStage.CONNECT: "early", SMTPStage.EHLO: "early",
             SMTPStage.STARTTLS: "early"}
_EARLY = frozenset({SMTPStage.CONNECT, SMTPStage.EHLO, SMTPStage.STARTTLS})


def one_line(text: str) -> str:
    """A reply as one SMTP line: continuation lines ("550-5.1.1 ...", "550 5.1.1 ...") joined
    under the first line's code (a leading "550-" alone would leave the client waiting)."""
    lines = [line.strip() for line in text.replace("\r", "").split("\n") if line.strip()]
    head = lines[0][:3]
    rest = [re.sub(r"^\d{3}[ -](?:[245]\.\d{1,3}\.\d{1,3} )?", "", line) for line in lines[1:]]
    return " ".join(f"{head} {lines[0][4:]}".split() + " ".join(rest).split())


class _Answerer:
    """aiosmtpd handler: answers message N with catalogue reply N at its stage."""

    def __init__(self, replies: Sequence[Reply]) -> None:
        self.replies = replies

    def _reply(self, address: str, prefix: str) -> Reply | None:
        local = address.split("@", maxsplit=1)[0]
        if local[:1] == prefix and local[1:].isdigit() and int(local[1:]) < len(self.replies):
            return self.replies[int(local[1:])]
        return None

    def _refusal(self, address: str, prefix: str, stage: str) -> str:
        """The reply to give at ``stage`` for this address; "" to accept it."""
        reply = self._reply(address, prefix)
        return one_line(reply.text) if reply is not None and _STAGE_OF[reply.stage] == stage else ""

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
            self, server: object, session: object, envelope: object, address: str,
            options: list[str]) -> str:
        envelope.mail_from = address  # type: ignore[attr-defined]
        return self._refusal(address, "s", "mail") or "250 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
            self, server: object, session: object, envelope: object, address: str,
            options: list[str]) -> str:
        refusal = self._refusal(address, "r", "rcpt")
        if not refusal:
            envelope.rcpt_tos.append(address)  # type: ignore[attr-defined]
        return refusal or "250 OK"

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802
        for address in envelope.rcpt_tos:  # type: ignore[attr-defined]
            reply = self._reply(address, "r")
            if reply is not None:
                return one_line(reply.text)
        return "250 OK"


class _Greeter:
    """Servers that refuse at the banner or at EHLO/HELO: one loopback port per reply, as the
    answer cannot depend on a recipient not named yet."""

    def __init__(self, replies: Sequence[tuple[int, Reply]]) -> None:
        self.ports = {n: free_port() for n, _ in replies}
        self.replies = dict(replies)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _serve(self, reply: Reply, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (one_line(reply.text) + "\r\n").encode()
        try:
            if reply.stage is SMTPStage.CONNECT:
                writer.write(line)
            else:
                writer.write(b"220 mx.ans.test ESMTP\r\n")
                while command := (await reader.readline()).upper():
                    writer.write(line if command[:4] in (b"EHLO", b"HELO") else b"221 bye\r\n")
                    await writer.drain()
                    if command[:4] == b"QUIT":
                        break
            await writer.drain()
        finally:
            writer.close()

    def __enter__(self) -> _Greeter:
        self.thread.start()
        for n, port in self.ports.items():
            asyncio.run_coroutine_threadsafe(asyncio.start_server(
                functools.partial(self._serve, self.replies[n]), "127.0.0.1", port), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class _Collector:
    def __init__(self, folder: Path) -> None:
        self.folder, self.count = folder, 0

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802
        self.count += 1
        (self.folder / f"dsn-{self.count:04d}.eml").write_bytes(envelope.content)  # type: ignore[attr-defined]
        return "250 OK"


def postfix_dsns(replies: Sequence[Reply], folder: Path, timeout: float = 120.0) -> list[tuple[Path, Reply]]:
    """Genuine Postfix DSNs, one per reply that has a reply code; [] when Postfix cannot run."""
    from aiosmtpd.controller import Controller  # noqa: PLC0415 - only this input needs them

    usable = [r for r in replies if r.text[:3].isdigit() and r.text[:1] in "45" and r.text.isascii()]
    answer_port, dsn_port = free_port(), free_port()
    early = [(n, r) for n, r in enumerate(usable) if r.stage in _EARLY]
    greeter = _Greeter(early)
    routes = {"ans.test": f"[127.0.0.1]:{answer_port}", "dsn.test": f"[127.0.0.1]:{dsn_port}"}
    routes.update({f"c{n}.ans.test": f"[127.0.0.1]:{port}" for n, port in greeter.ports.items()})
    try:
        postfix = Postfix(mailboxes=["nobody"], routes=routes,
                          extra={"maximal_queue_lifetime": "0", "bounce_queue_lifetime": "0",
                                 "smtp_tls_security_level": "none", "smtp_destination_concurrency_limit": "4",
                                 "smtp_connection_cache_on_demand": "no"})
    except BaseException as exc:  # pytest.skip outside pytest: Postfix or root missing
        print(f"postfix: not run ({exc})")
        return []
    collector = _Collector(folder)
    answer = Controller(_Answerer(usable), hostname="127.0.0.1", port=answer_port)
    sink = Controller(collector, hostname="127.0.0.1", port=dsn_port)
    answer.start()
    sink.start()
    try:
        with greeter, postfix, smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as client:
            for n, reply in enumerate(usable):
                to = f"r{n}@c{n}.ans.test" if reply.stage in _EARLY else f"r{n}@ans.test"
                body = (f"From: s{n}@dsn.test\r\nTo: {to}\r\nSubject: case {n}\r\n"
                        f"Message-ID: <case-{n}@dsn.test>\r\n\r\nstage {reply.stage.value}\r\n")
                client.sendmail(f"s{n}@dsn.test", [to], body)
            deadline = time.monotonic() + timeout
            while collector.count < len(usable) and time.monotonic() < deadline:
                time.sleep(0.2)
            (folder / "maillog").write_text(postfix.maillog())
    finally:
        answer.stop()
        sink.stop()
    print(f"postfix: {len(usable)} messages sent, {collector.count} DSNs back")
    found = []
    for path in sorted(folder.glob("dsn-*.eml")):
        raw = path.read_text(errors="replace")
        for n, reply in enumerate(usable):
            if f"<case-{n}@dsn.test>" in raw:
                found.append((path, reply))
                break
    return found


def compare_dsns(dsns: Sequence[tuple[Path, Reply]]) -> tuple[list[Pair], list[str]]:
    pairs, alone = compare_files([p for p, _ in dsns])
    by_file = {p.name: r for p, r in dsns}
    pairs = [Pair(p.where, p.ours, p.theirs, p.ours_hard, p.theirs_hard, by_file[p.where.split()[0]].expected,
                  f"[{by_file[p.where.split()[0]].stage.value}] {by_file[p.where.split()[0]].text}") for p in pairs]
    return pairs, alone


# --- report -------------------------------------------------------------------------------------


def summarise(name: str, pairs: Sequence[Pair], alone: Iterable[str], show: int) -> float:
    kinds = collections.Counter(agree(p.ours, p.theirs) for p in pairs)
    hard = sum(p.ours_hard == p.theirs_hard for p in pairs)
    total = len(pairs) or 1
    pct = 100 * (kinds["exact"] + kinds["compatible"]) / total
    labelled = [p for p in pairs if p.label]
    print(f"\n== {name}: {len(pairs)} records read by both")
    print(f"reason: exact {kinds['exact']}, compatible {kinds['compatible']}, differ {kinds['']} "
          f"-> {pct:.1f} %; address invalid agrees {100 * hard / total:.1f} %")
    if labelled:
        ours_ok = sum(p.ours == p.label for p in labelled)
        theirs_ok = sum(agree(p.label, p.theirs) != "" for p in labelled)
        print(f"against the expected reading ({len(labelled)}): ours {100 * ours_ok / len(labelled):.1f} %, "
              f"Sisimai {100 * theirs_ok / len(labelled):.1f} %")
    alone = list(alone)
    if alone:
        print(f"records only one side found: {len(alone)}")
        for line in alone[:show]:
            print("   ", line)
    groups: dict[tuple[str, str], list[Pair]] = collections.defaultdict(list)
    for p in pairs:
        if not agree(p.ours, p.theirs):
            groups[(p.ours, p.theirs)].append(p)
    for (ours, theirs), members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        print(f"  ours={ours:15s} sisimai={theirs:15s} x{len(members)}")
        for p in members[:show]:
            label = f" expected={p.label}" if p.label else ""
            print(f"      {p.where}{label}: {p.text[:160]}")
    wrong = [p for p in labelled if p.ours != p.label]
    if wrong:
        print(f"  ours differs from the expected reading: {len(wrong)}")
        for p in wrong[:show * 10]:
            print(f"      ours={p.ours} sisimai={p.theirs} expected={p.label} {p.where}: {p.text[:160]}")
    return pct


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="corpus,replies,postfix")
    parser.add_argument("--show", type=int, default=3, help="examples per disagreement group")
    parser.add_argument("--keep", type=Path, help="keep Postfix's DSNs and log in this folder")
    args = parser.parse_args(argv)
    if shutil.which("perl") is None or subprocess.run(["perl", "-MSisimai", "-e", "1"],
                                                      capture_output=True, check=False).returncode:
        sys.exit("Sisimai is not installed: apt-get install -y libsisimai-perl")
    wanted = set(args.only.split(","))
    figures: dict[str, float] = {}
    every: list[Pair] = []
    if "corpus" in wanted and (CORPUS / "labels.json").is_file():
        labels = json.loads((CORPUS / "labels.json").read_text())["labels"]
        files = sorted((CORPUS / "maildir" / "bsd").glob("*.eml"))
        pairs, alone = compare_files(files, labels, CORPUS)
        figures["corpus"] = summarise("shared corpus (maildir/bsd)", pairs, alone, args.show)
        every += pairs
    replies = catalogue()
    if "replies" in wanted:
        pairs = compare_replies(replies)
        figures["replies"] = summarise("reply catalogue (Sisimai->match on the text)", pairs, (), args.show)
        every += pairs
    if "postfix" in wanted:
        with tempfile.TemporaryDirectory(prefix="sisimai-dsn-") as tmp:
            folder = args.keep or Path(tmp)
            folder.mkdir(parents=True, exist_ok=True)
            dsns = postfix_dsns(replies, folder)
            if dsns:
                pairs, alone = compare_dsns(dsns)
                figures["postfix"] = summarise(f"genuine Postfix DSNs ({len(dsns)} emails)", pairs, alone,
                                               args.show)
                every += pairs
    overall = 100 * sum(agree(p.ours, p.theirs) != "" for p in every) / (len(every) or 1)
    print(f"RESULT sisimai_agreement={overall:.1f} % "
          + " ".join(f"{k}={v:.1f}" for k, v in figures.items()) + f" records={len(every)}")


if __name__ == "__main__":
    main()
