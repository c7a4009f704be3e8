"""``mailcarrier inbound`` as an operator runs it: a real process, SMTP on loopback, SIGTERM."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

from mailcarrier.services.inbound import list_inbound
from mailcarrier.storage.engine import make_engine
from tests.inbound.factory import BOUNCE_DOMAIN, KEY, contact, delivery, dsn, make_world


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_inbound_command_receives_processes_and_stops_on_sigterm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mc.db'}"
    engine = make_engine(url)
    world = make_world(engine, ["ann@aol.test"])
    ann = world.sent["ann@aol.test"]
    port = _free_port()
    env = {**os.environ, "MAILCARRIER_DATABASE_URL": url, "MAILCARRIER_SECRET_KEY": KEY.decode(),
           "MAILCARRIER_BOUNCE_DOMAIN": BOUNCE_DOMAIN, "MAILCARRIER_DATA_DIR": str(tmp_path),
           "MAILCARRIER_INBOUND_ACCEPT_ADDRESSES": "fbl@sender.test"}
    proc = subprocess.Popen([sys.executable, "-m", "mailcarrier.cli.main", "inbound", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client = smtplib.SMTP("127.0.0.1", port, timeout=5)
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "inbound server did not start"
                time.sleep(0.1)
        with client:
            client.ehlo("mx.receiver.test")
            client.mail("")
            assert client.rcpt("stranger@elsewhere.test")[0] == 550
            assert client.rcpt("fbl@sender.test")[0] == 250
            client.rset()
            client.sendmail("", [ann.return_path], dsn(to=ann.return_path, recipient=ann.email))
        deadline = time.monotonic() + 20
        while delivery(engine, ann.delivery_id)["state"] != "bounced_hard":
            assert time.monotonic() < deadline, "the bounce was not processed"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0, output
    assert f"listening on 127.0.0.1:{port}" in output
    assert contact(engine, ann.contact_id)["email_invalid"]
    assert [m.state for m in list_inbound(engine)] == ["processed"]
    engine.dispose()
