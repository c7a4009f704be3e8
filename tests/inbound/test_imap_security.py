"""IMAP connection rules that need no real server: STARTTLS required, time limits.

Certificate checks against a real server (Dovecot, IMAPS and STARTTLS) are in tests/interop.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mailcarrier.domain.errors import ConfigurationError
from mailcarrier.inbound.imap_poller import ImapError, ImapSecurityError, ImapSettings, poll_imap
from tests.inbound.factory import T0
from tests.inbound.test_imap_poller import TinyImap
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture


def test_plain_imap_without_starttls_is_refused_before_login(empty_engine: Engine) -> None:  # noqa: F811
    with TinyImap([b"Subject: x\r\n\r\nbody\r\n"]) as server:
        config = ImapSettings("127.0.0.1", server.port, "bounces", "secret", tls=False)
        with pytest.raises(ImapSecurityError, match="does not offer STARTTLS"):
            poll_imap(empty_engine, config, lambda: T0)
        assert not any(c.upper().startswith("LOGIN") or " LOGIN " in c.upper() for c in server.commands)


def test_silent_server_times_out_on_connect_and_on_commands(empty_engine: Engine) -> None:  # noqa: F811
    with socket.socket() as silent:  # accepts connections (backlog), never says anything
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        config = ImapSettings("127.0.0.1", silent.getsockname()[1], "u", "p", tls=False, starttls=False,
                              timeout=0.5)
        started = time.monotonic()
        with pytest.raises(ImapError, match=r"did not answer within 0\.5 s"):
            poll_imap(empty_engine, config, lambda: T0)
        assert time.monotonic() - started < 5
        tls = ImapSettings("127.0.0.1", silent.getsockname()[1], "u", "p", tls=True, timeout=0.5)
        with pytest.raises(ImapError):
            poll_imap(empty_engine, tls, lambda: T0)


def test_missing_ca_file_is_a_configuration_error(empty_engine: Engine, tmp_path: Path) -> None:  # noqa: F811
    config = ImapSettings("127.0.0.1", 1, "u", "p", ca_file=tmp_path / "nope.pem")
    with pytest.raises(ConfigurationError, match="not a readable file"):
        poll_imap(empty_engine, config, lambda: T0)
