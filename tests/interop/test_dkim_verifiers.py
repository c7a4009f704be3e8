"""Our DKIM signatures against independent verifiers, keys published by NSD.

The TXT records are the ones ``mailcarrier dkim show`` prints (zone-file syntax, strings of at
most 255 octets); NSD must load them (``nsd-checkzone``, then serving the zone) and the
verifiers read them over DNS: Mail::DKIM (libmail-dkim-perl, what SpamAssassin uses), OpenDKIM
(``opendkim -t``: the milter verifying files, libopendkim with unbound) and dkimpy.
(``opendkim-testmsg`` of Debian's opendkim-tools 2.11.0~beta2 answers "dkim_chunk(): Syntax
error" to any input, an empty one included, so the filter's own test mode is used instead.)
Messages: edge cases signed directly (UTF-8, dot lines, whitespace runs, long lines) and the
copies an own Postfix instance delivered after relaying them from the worker.

Dual signing (issue 21, item 7): Mail::DKIM does not know ed25519-sha256; the RSA signature
beside it is what makes such a message pass there.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailcarrier.delivery.dkim_keys import signing_keys, zone_record
from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.domain.message import MessageParts, compose_message
from mailcarrier.services.composition import DkimKey, DkimSigner
from mailcarrier.storage.engine import make_engine
from tests.delivery.world import T0, make_world, settings_for, start_mailing
from tests.interop.servers import Postfix, need, nsd_run

HERE = Path(__file__).parent


def _zone(keys: tuple[DkimKey, ...]) -> str:
    return ("$ORIGIN shop.example.\n$TTL 300\n"
            "@ IN SOA ns1.shop.example. hostmaster.shop.example. 1 3600 600 86400 300\n"
            "@ IN NS ns1.shop.example.\nns1 IN A 127.0.0.1\n"
            + "".join(zone_record(k) + "\n" for k in keys))


def _edge_cases(keys: tuple[DkimKey, ...], folder: Path) -> list[Path]:
    signer = DkimSigner(*keys)
    bodies = {
        "utf8": ("Grüße aus Köln – 東京", "Ünïcödé body\n\ncafé ☕\n"),
        "dots": ("dots", ".leading dot\n..two dots\n.\nend\n"),
        "spaces": ("spaces   and\ttabs", "trailing spaces   \n\tindented\n\n\n\n"),
        "long": ("long", "x" * 990 + "\n" + "word " * 400 + "\n"),
    }
    files = []
    for name, (subject, text) in bodies.items():
        parts = MessageParts(
            from_header="Shop <news@shop.example>", to="ann@example.com", subject=subject, text=text,
            html=f"<p>{text}</p>", message_id=f"{name}@shop.example", date=datetime(2026, 6, 1, tzinfo=UTC),
            return_path="b-1@bounces.shop.example", unsubscribe_url="https://mail.shop.example/u/t",
            unsubscribe_mailto="unsubscribe@bounces.shop.example?subject=unsubscribe-t",
            feedback_id="1:1:regular:mailcarrier", delivery_token="1", boundary=f"=_b{name}")
        path = folder / f"{name}.eml"
        path.write_bytes(signer.sign(compose_message(parts).data, timestamp=1_780_000_000))
        files.append(path)
    return files


def _relayed_by_postfix(tmp_path: Path) -> list[Path]:
    """The worker sends a mailing to an own Postfix; the copies it delivered to its Maildir."""
    engine = make_engine(f"sqlite:///{tmp_path / 'mc.db'}")
    start_mailing(make_world(engine, ["ann@pf.test", "bob@pf.test"]))
    with Postfix(mailboxes=["ann", "bob"]) as postfix:
        settings = settings_for(tmp_path, postfix.port)  # dkim_algorithm ed25519: dual signing
        stats = asyncio.run(run_worker(settings, engine, until_idle=True, clock=SimulatedClock(T0)))
        assert stats.delivered == 2
        postfix.wait_log("status=sent")
        copies = postfix.delivered("ann") + postfix.delivered("bob")
    engine.dispose()
    files = []
    for index, copy in enumerate(copies):
        path = tmp_path / f"postfix-{index}.eml"
        path.write_bytes(copy)
        files.append(path)
    return files


def test_mail_dkim_and_dkimpy_verify_our_signatures_published_by_nsd(tmp_path: Path) -> None:
    tools = need("perl", "nsd-checkzone")
    if subprocess.run([tools["perl"], "-MMail::DKIM::Verifier", "-e1"], capture_output=True,
                      check=False).returncode != 0:
        pytest.skip("Mail::DKIM is not installed (Debian: libmail-dkim-perl)")
    relayed = _relayed_by_postfix(tmp_path)
    assert len(relayed) == 2
    keys = signing_keys(tmp_path / "data", "shop.example", "mc1", "ed25519")
    assert [k.algorithm for k in keys] == ["ed25519-sha256", "rsa-sha256"]
    edge = _edge_cases(keys, tmp_path)
    zone_file = tmp_path / "shop.example.zone"
    zone_file.write_text(_zone(keys))
    checked = subprocess.run([tools["nsd-checkzone"], "shop.example", str(zone_file)],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr + checked.stdout  # before: "text string is longer than 255"

    files = [str(p) for p in [*edge, *relayed]]
    missing: list[str] = []
    perl = nsd_run(tmp_path / "nsd-perl", {"shop.example": _zone(keys)},
                   [tools["perl"], str(HERE / "verify_dkim.pl"), *files])
    report = perl.stdout.decode()
    assert perl.returncode == 0, perl.stderr.decode() + report
    for path in files:
        lines = [line.removeprefix(path + " ") for line in report.splitlines() if line.startswith(path + " ")]
        assert "s=mc1-rsa a=rsa-sha256 pass pass" in lines, (path, lines)
        assert "overall pass" in lines, (path, lines)
        # Mail::DKIM does not verify ed25519: without the RSA signature the message would not pass
        assert any(line.startswith("s=mc1 a=ed25519-sha256 invalid") or
                   line.startswith("s=mc1 a=ed25519-sha256 pass") for line in lines), (path, lines)

    # OpenDKIM's filter in test mode (-t: verify the files and exit), libopendkim with its
    # unbound resolver forwarding to the namespace's NSD
    opendkim = shutil.which("opendkim") or "/usr/sbin/opendkim"
    if Path(opendkim).exists():
        conf = tmp_path / "opendkim.conf"
        conf.write_text("Syslog no\nMode v\nSoftwareHeader no\nNameservers 127.0.0.1\n")
        loop = "for f in \"$@\"; do echo \"== $f\"; " + opendkim + " -x " + str(conf) + " -t \"$f\" -vvv 2>&1; done"
        odk = nsd_run(tmp_path / "nsd-opendkim", {"shop.example": _zone(keys)}, ["sh", "-c", loop, "sh", *files])
        output = odk.stdout.decode()
        assert odk.returncode == 0, odk.stderr.decode() + output
        sections = {part.split("\n", 1)[0]: part for part in output.split("== ")[1:]}
        for path in files:
            found = sections[path]
            assert "dkim=pass header.d=shop.example header.i=@shop.example header.a=ed25519-sha256 " \
                   "header.s=mc1 " in found, found
            assert "header.a=rsa-sha256 header.s=mc1-rsa " in found and "dkim=fail" not in found, found
    else:
        missing.append("opendkim")

    python = nsd_run(tmp_path / "nsd-dkimpy", {"shop.example": _zone(keys)},
                     [sys.executable, str(HERE / "verify_dkimpy.py"), *files])
    verdicts = python.stdout.decode()
    assert python.returncode == 0, python.stderr.decode() + verdicts
    for path in files:
        assert f"{path} s=mc1 pass" in verdicts and f"{path} s=mc1-rsa pass" in verdicts, verdicts
    if missing:
        pytest.skip(f"not installed, not checked: {', '.join(missing)} (.ci/run installs it)")


def test_dkim_show_records_load_in_nsd_bind_and_knot(tmp_path: Path) -> None:
    """The records exactly as ``dkim show`` prints them, in a zone each server's checker loads."""
    tools = need("nsd-checkzone", "named-checkzone", "knotc")
    keys = signing_keys(tmp_path / "data", "shop.example", "mc1", "ed25519")
    zone_file = tmp_path / "shop.example.zone"
    zone_file.write_text(_zone(keys))
    knot_conf = tmp_path / "knot.conf"
    knot_conf.write_text(f'server:\n    rundir: "{tmp_path}"\n    listen: 127.0.0.1@53\n'
                         f'database:\n    storage: "{tmp_path}"\n'
                         f'zone:\n  - domain: shop.example\n    file: "{zone_file}"\n')
    for command in ([tools["nsd-checkzone"], "shop.example", str(zone_file)],
                    [tools["named-checkzone"], "shop.example", str(zone_file)],
                    [tools["knotc"], "-c", str(knot_conf), "zone-check", "shop.example"]):
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
        assert done.returncode == 0, (command[0], done.stdout, done.stderr)
