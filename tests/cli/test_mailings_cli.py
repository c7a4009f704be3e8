"""mailings commands and the worker command end to end on a SQLite file, against the sandbox."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailcarrier.cli.exit_codes import ExitCode
from mailcarrier.cli.main import app
from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.transport import SmtpSession


def test_create_send_work_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MAILCARRIER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAILCARRIER_DATA_DIR", str(tmp_path / "data"))
    url = ["--database-url", f"sqlite:///{tmp_path / 'mc.db'}"]
    run = CliRunner().invoke
    assert run(app, ["db", "upgrade", *url]).exit_code == 0
    made = CliRunner(env={"COLUMNS": "300"}).invoke(app, ["accounts", "create", "acme", "--name", "Acme", *url])
    assert made.exit_code == 0
    assert ("add contacts with: mailcarrier contacts import FILE.csv --audience NAME --account acme "
            f"{shlex.join(url)}") in made.output
    csv_file = tmp_path / "c.csv"
    csv_file.write_text("email,first_name,city\nann@example.com,Ann,Oslo\nunknown9@example.com,Bob,Rome\n"
                        "cat@example.org,Cat,Oslo\n", encoding="utf-8")
    assert run(app, ["contacts", "import", str(csv_file), "--audience", "news", "--account", "acme",
                     *url]).exit_code == 0
    html = tmp_path / "m.html"
    html.write_text('<p>Hi {{ first_name }} <a href="https://shop.example/sale">sale</a></p>', encoding="utf-8")
    bad = run(app, ["mailings", "create", "--subject", "Hi {{ frist_name }}", "--from", "n@shop.example",
                    "--html", str(html), "--audience", "news", "--account", "acme", *url])
    assert bad.exit_code == ExitCode.INVALID_INPUT and "subject template" in bad.output
    created = run(app, ["mailings", "create", "--subject", "Hi {{ first_name }}", "--from", "n@shop.example",
                        "--html", str(html), "--audience", "news", "--field", "city=Oslo",
                        "--name", "oslo", "--account", "acme", *url])
    assert created.exit_code == 0, created.output
    mailing_id = re.search(r"created mailing (\d+)", created.output)[1]  # type: ignore[index]
    # The hint carries the flags the next command needs: run it as printed.
    hint = created.output.split("send it with: ", 1)[1].strip()
    assert hint == f"mailcarrier mailings send {mailing_id} --account acme {shlex.join(url)}"
    sent = run(app, shlex.split(hint)[1:])
    assert sent.exit_code == 0 and "sending (2 recipients, 0 suppressed)" in sent.output
    assert f"deliver with: mailcarrier worker --once {shlex.join(url)}" in sent.output
    assert f"follow it with: mailcarrier mailings show {mailing_id} --account acme {shlex.join(url)}" in sent.output
    monkeypatch.setenv("MAILCARRIER_ACCOUNT", "acme")  # the default for --account
    assert "paused" in run(app, ["mailings", "pause", mailing_id, *url]).output
    assert "sending" in run(app, ["mailings", "resume", mailing_id, *url]).output
    monkeypatch.delenv("MAILCARRIER_ACCOUNT")
    monkeypatch.setenv("MAILCARRIER_PUBLIC_URL", "https://t.shop.example")
    with Sandbox() as sandbox:
        bodies: list[bytes] = []
        original = sandbox.handler.handle_DATA

        async def keep(server, session, envelope):  # type: ignore[no-untyped-def]
            bodies.append(envelope.original_content)
            return await original(server, session, envelope)

        sandbox.handler.handle_DATA = keep  # type: ignore[method-assign]
        monkeypatch.setenv("MAILCARRIER_STATIC_ROUTES", f"*=127.0.0.1:{sandbox.port}")
        worked = run(app, ["worker", "--once", "--simulate-time", *url])
        assert worked.exit_code == 0, worked.output
        assert "2 delivered" in worked.output
        assert "done 2, waiting 0" in worked.output  # the progress line (on stderr)
        assert sorted(r.recipient for r in sandbox.received) == ["ann@example.com", "cat@example.org"]
    # Tracking is on by default: the link goes through /c/, the open pixel is added, and the
    # unsubscribe header stays a direct /u/ link.
    assert all(b"https://t.shop.example/c/" in body and b"https://t.shop.example/o/" in body
               and b"https://shop.example/sale" not in body for body in bodies)
    assert all(b"List-Unsubscribe: <https://t.shop.example/u/" in body for body in bodies)
    shown = run(app, ["mailings", "show", mailing_id, "--account", "acme", *url])
    assert shown.exit_code == 0 and "done" in shown.output
    assert re.search(r"delivered\s+│\s+2", shown.output)
    listed = run(app, ["mailings", "list", "--account", "acme", *url])
    assert "oslo" in listed.output and "done" in listed.output
    as_json = json.loads(run(app, ["mailings", "show", mailing_id, "--format", "json", "--account", "acme",
                                   *url]).stdout)
    assert as_json["mailing"]["state"] == "done" and as_json["figures"]["delivered"] == 2 and as_json["sent"] == 2
    (row,) = json.loads(run(app, ["mailings", "list", "-f", "json", "--account", "acme", *url]).stdout)
    assert row["name"] == "oslo" and row["created_at"].startswith("20")
    cancel = run(app, ["mailings", "cancel", mailing_id, "--account", "acme", *url])
    assert cancel.exit_code == ExitCode.CONFLICT and "done" in cancel.output


def test_dkim_generate_show_and_refuse_overwrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAILCARRIER_DATA_DIR", str(tmp_path / "data"))
    run = CliRunner().invoke
    made = run(app, ["dkim", "generate", "shop.example", "--algorithm", "ed25519"])
    assert made.exit_code == 0 and "k=ed25519" in made.output
    assert run(app, ["dkim", "show", "shop.example"]).output == made.output
    again = run(app, ["dkim", "generate", "shop.example"])
    assert again.exit_code == ExitCode.INVALID_INPUT and "already exists" in again.output
    rotated = run(app, ["dkim", "generate", "shop.example", "--algorithm", "rsa", "--force"])
    assert rotated.exit_code == 0 and "k=rsa" in rotated.output


def test_worker_processes_share_a_sqlite_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MAILCARRIER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAILCARRIER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MAILCARRIER_DELIVERY_BATCH_SIZE", "5")
    url = ["--database-url", f"sqlite:///{tmp_path / 'mc.db'}"]
    run = CliRunner().invoke
    assert run(app, ["db", "upgrade", *url]).exit_code == 0
    assert run(app, ["accounts", "create", "acme", "--name", "Acme", *url]).exit_code == 0
    csv_file = tmp_path / "c.csv"
    csv_file.write_text("email\n" + "".join(f"r{i}@d{i % 3}.example\n" for i in range(60)), encoding="utf-8")
    assert run(app, ["contacts", "import", str(csv_file), "--audience", "news", "--account", "acme",
                     *url]).exit_code == 0
    html = tmp_path / "m.html"
    html.write_text("<p>Hi</p>", encoding="utf-8")
    assert run(app, ["mailings", "create", "--subject", "Hi", "--from", "n@shop.example", "--html", str(html),
                     "--audience", "news", "--account", "acme", *url]).exit_code == 0
    assert run(app, ["mailings", "send", "1", "--account", "acme", *url]).exit_code == 0
    with Sandbox() as sandbox:
        monkeypatch.setenv("MAILCARRIER_STATIC_ROUTES", f"*=127.0.0.1:{sandbox.port}")
        worked = run(app, ["worker", "--until-idle", "--processes", "2", *url])
        assert worked.exit_code == 0, worked.output
        got = sorted(r.recipient for r in sandbox.received)
    assert got == sorted(f"r{i}@d{i % 3}.example" for i in range(60))  # each once
    assert "done" in run(app, ["mailings", "list", "--account", "acme", *url]).output


def test_sandbox_command_serves_until_terminated(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCARRIER_")}
    server = subprocess.Popen([sys.executable, "-m", "mailcarrier.cli.main", "sandbox", "--port", str(port),
                               "--dsn-to", "127.0.0.1:9"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    async def send() -> tuple[int, int]:
        session = await SmtpSession.open("127.0.0.1", port, helo_name="t.example", timeout=5)
        ok = await session.send("b@x.example", "ann@example.com", b"Subject: x\r\n\r\nhi\r\n")
        unknown = await session.send("b@x.example", "unknown1@gmail.com", b"Subject: x\r\n\r\nhi\r\n")
        await session.close()
        assert ok.reply is not None and unknown.reply is not None
        return ok.reply.code, unknown.reply.code

    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                codes = asyncio.run(send())
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=20)
    assert codes == (250, 550)
    assert b"received 1 messages" in out, err.decode()[-1000:]


def test_send_refused_by_sender_hygiene_exits_5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.services.local_dns import local_dns  # noqa: PLC0415 - DNS fixtures only here
    from tests.services.test_hygiene import ZONE  # noqa: PLC0415

    for name in list(os.environ):
        if name.startswith("MAILCARRIER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    url = ["--database-url", f"sqlite:///{tmp_path / 'mc.db'}"]
    run = CliRunner(env={"COLUMNS": "200"}).invoke
    csv_file = tmp_path / "c.csv"
    csv_file.write_text("email\nann@example.com\n", encoding="utf-8")
    body = tmp_path / "m.txt"
    body.write_text("Hello\nUnsubscribe: {{ unsubscribe_url }}\n", encoding="utf-8")
    for step in (["db", "upgrade"], ["accounts", "create", "acme"], ["pools", "create", "house", "dedicated"],
                 ["pools", "add-ip", "house", "127.0.0.2", "--warm"], ["pools", "assign", "acme", "house"],
                 ["contacts", "import", str(csv_file), "--audience", "news", "--account", "acme"],
                 ["mailings", "create", "--subject", "Hi", "--from", "news@bad.test", "--audience", "news",
                  "--text", str(body), "--account", "acme"]):
        done = run(app, [*step, *url])
        assert done.exit_code == 0, (step, done.output)
    with local_dns(ZONE) as resolver:
        for key, value in {"DATA_DIR": str(tmp_path / "data"), "DKIM_SELECTOR": "s1",
                           "BOUNCE_DOMAIN": "bounces.good.test", "HOSTNAME": "mx.mailcarrier.test",
                           "HYGIENE_NAMESERVER": f"127.0.0.1:{resolver.port}"}.items():
            monkeypatch.setenv(f"MAILCARRIER_{key}", value)
        refused = run(app, ["mailings", "send", "1", "--account", "acme", *url])
    assert refused.exit_code == ExitCode.REFUSED, refused.output
    assert "refused" in refused.output and "bad.test" in refused.output
