"""``mailcarrier sandbox`` says what it does, and warns when its late bounces have nowhere to go."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import mailcarrier


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again: nothing listens there


def test_sandbox_logs_each_answer_and_warns_that_late_bounces_are_lost(tmp_path: Path) -> None:
    dead = _closed_port()
    env = {**os.environ, "PYTHONPATH": str(Path(mailcarrier.__file__).parents[1]), "PYTHONUNBUFFERED": "1",
           "COLUMNS": "200", "MAILCARRIER_DATA_DIR": str(tmp_path)}
    env.pop("MAILCARRIER_DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "mailcarrier.cli.main", "sandbox", "--port", "0",
                             "--dsn-to", f"127.0.0.1:{dead}", "--dsn-delay", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None
        port = 0
        deadline = time.monotonic() + 30
        while not port and time.monotonic() < deadline:
            line = proc.stdout.readline()
            found = re.search(r"sandbox MX on 127\.0\.0\.1:(\d+)", line)
            port = int(found[1]) if found else 0
        assert port, "the sandbox did not say where it listens"
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            refused = client.sendmail("b+1@bounces.shop.test", ["ann@x.test", "aol1@x.test", "unknown2@gmail.com"],
                                      b"From: news@shop.test\r\nMessage-ID: <m1@shop.test>\r\nSubject: hi\r\n\r\nhi\r\n")
        assert set(refused) == {"unknown2@gmail.com"}
        time.sleep(1.5)  # the late bounce is tried after 0.2 s
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"nothing answers on 127.0.0.1:{dead}" in err and "late bounces of aol* recipients will be lost" in err
    assert "RCPT unknown2@gmail.com from b+1@bounces.shop.test: 550 5.1.1" in err
    assert "DATA <m1@shop.test> from b+1@bounces.shop.test for ann@x.test, aol1@x.test: 250 queued as" in err
    assert f"aol1@x.test: accepted; a late bounce goes to b+1@bounces.shop.test at 127.0.0.1:{dead}" in err
    assert re.search(rf"WARNING .*late bounce for aol1@x\.test could not be delivered to 127\.0\.0\.1:{dead} "
                     r".*mailcarrier inbound` running there", err), err
    assert "received 2 messages, mailed 0 asynchronous bounces" in out
