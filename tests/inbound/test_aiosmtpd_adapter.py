"""The aiosmtpd adapter: pinned to the aiosmtpd release whose internals it overrides, and its
block-wise DATA reader checked against a real client on loopback."""

from __future__ import annotations

import inspect
import smtplib
import socket
from collections.abc import Iterator
from importlib.metadata import version

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailcarrier.inbound.aiosmtpd_adapter import (
    ADAPTED_AIOSMTPD,
    LINE_LIMIT,
    PRIVATE_NAMES,
    BlockDataController,
)


def test_installed_aiosmtpd_is_the_release_the_adapter_was_checked_against() -> None:
    installed = version("aiosmtpd")
    assert installed == ADAPTED_AIOSMTPD, (
        f"aiosmtpd {installed} is installed, the adapter was checked against {ADAPTED_AIOSMTPD}: compare "
        "aiosmtpd's SMTP.smtp_DATA and the private names in mailcarrier.inbound.aiosmtpd_adapter with "
        "that release, then raise ADAPTED_AIOSMTPD (and the bound in pyproject.toml)")


def test_the_private_names_used_still_exist() -> None:
    source = inspect.getsource(SMTP)
    missing = [name for name in PRIVATE_NAMES if not hasattr(SMTP, name) and f"self.{name} =" not in source]
    assert missing == []
    # the overridden command keeps aiosmtpd's shape: DATA is a command method taking the argument
    assert list(inspect.signature(SMTP.smtp_DATA).parameters) == ["self", "arg"]


class _Keep:
    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.contents.append(envelope.content)
        return "250 OK kept"


@pytest.fixture
def server() -> Iterator[tuple[BlockDataController, _Keep]]:
    handler = _Keep()
    with socket.socket() as probe:  # aiosmtpd's controller connects to its port to check it started
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = BlockDataController(handler, hostname="127.0.0.1", port=port, data_size_limit=200_000)
    controller.start()
    try:
        yield controller, handler
    finally:
        controller.stop()


def test_data_is_unstuffed_byte_exact_with_long_lines(server: tuple[BlockDataController, _Keep]) -> None:
    controller, handler = server
    body = (b"Subject: x\r\n\r\n.starts with a dot\r\n..two dots\r\nmiddle . dot.\r\n"
            + b"L" * (LINE_LIMIT // 2) + b"\r\nlast line without dot\r\n")
    with smtplib.SMTP("127.0.0.1", controller.port, timeout=10) as client:
        client.sendmail("a@b.example", ["c@d.example"], body)
        client.sendmail("a@b.example", ["c@d.example"], b"Subject: second\r\n\r\n.\r\n..\r\n")
    assert handler.contents == [body, b"Subject: second\r\n\r\n.\r\n..\r\n"]


def test_data_over_the_size_limit_gets_552_and_the_session_goes_on(
        server: tuple[BlockDataController, _Keep]) -> None:
    controller, handler = server
    with smtplib.SMTP("127.0.0.1", controller.port, timeout=10) as client:
        # no SIZE= announced at MAIL (a client may omit it), so the limit is met during DATA
        client.ehlo()
        assert client.mail("a@b.example")[0] == 250 and client.rcpt("c@d.example")[0] == 250
        code, _text = client.data(b"Subject: big\r\n\r\n" + b"x" * 300_000 + b"\r\n")
        assert code == 552
        client.sendmail("a@b.example", ["c@d.example"], b"Subject: small\r\n\r\nok\r\n")
    assert handler.contents == [b"Subject: small\r\n\r\nok\r\n"]


class _Door(_Keep):
    def __init__(self, refusal: str | None) -> None:
        super().__init__()
        self.refusal = refusal
        self.opened: list[object] = []
        self.closed: list[object] = []

    def open_session(self, peer: object) -> str | None:
        self.opened.append(peer)
        return self.refusal

    def close_session(self, peer: object) -> None:
        self.closed.append(peer)


@pytest.mark.parametrize("refusal", [None, "too many sessions from your address"])
def test_the_handler_admits_or_refuses_each_session_before_the_greeting(refusal: str | None) -> None:
    handler = _Door(refusal)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = BlockDataController(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        if refusal is None:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.sendmail("a@b.example", ["c@d.example"], b"Subject: in\r\n\r\nok\r\n")
            assert handler.contents == [b"Subject: in\r\n\r\nok\r\n"]
        else:
            with pytest.raises(smtplib.SMTPConnectError) as refused:
                smtplib.SMTP("127.0.0.1", port, timeout=10)
            assert refused.value.smtp_code == 421 and refusal in refused.value.smtp_error.decode()
    finally:
        controller.stop()
    # aiosmtpd's controller opens one session of its own to check it started
    assert len(handler.opened) >= 1
    assert len(handler.closed) == (len(handler.opened) if refusal is None else 0)
