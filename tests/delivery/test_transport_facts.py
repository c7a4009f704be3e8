"""A session that fails keeps the facts of its connection (seed 000): refused at the greeting,
dropped after it, or refused before any connection."""

from __future__ import annotations

import asyncio
import re
import socket

import pytest

from mailcarrier.delivery.transport import RejectedError, SmtpSession, TransportError

STAMP = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} ")


async def _server(greeting: bytes | None) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if greeting:
            writer.write(greeting)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_refusal_at_the_greeting_keeps_both_ends_and_the_dialogue() -> None:
    async def run() -> tuple[RejectedError, int]:
        server = await _server(b"554 5.7.1 mx.corp.example: no SMTP service for you\r\n")
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(RejectedError) as caught:
                await SmtpSession.open("127.0.0.1", port, helo_name="me.test", timeout=2,
                                       mx_host="mx.corp.example")
        finally:
            server.close()
        return caught.value, port

    error, port = asyncio.run(run())
    assert error.reply.code == 554
    facts = error.facts
    assert facts is not None and facts.mx_host == "mx.corp.example"
    assert (facts.peer_ip, facts.peer_port, facts.local_ip) == ("127.0.0.1", port, "127.0.0.1")
    assert facts.local_port is not None and facts.local_port > 0
    lines = error.dialogue.splitlines()
    assert all(STAMP.match(line) for line in lines)
    assert f"-> 127.0.0.1:{port}, MX mx.corp.example)" in lines[0]
    assert lines[1].endswith("S: 554 5.7.1 mx.corp.example: no SMTP service for you")


def test_connection_dropped_after_the_greeting_keeps_its_facts() -> None:
    async def run() -> TransportError:
        server = await _server(b"220 mx.corp.example ESMTP\r\n")
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(TransportError) as caught:
                await SmtpSession.open("127.0.0.1", port, helo_name="me.test", timeout=2)
        finally:
            server.close()
        return caught.value

    error = asyncio.run(run())
    assert error.internal_code == 150 and error.facts is not None
    assert error.facts.peer_ip == "127.0.0.1" and error.facts.local_ip == "127.0.0.1"
    assert "S: 220 mx.corp.example ESMTP" in error.dialogue
    assert "C: EHLO me.test" in error.dialogue and "connection closed by the server" in error.dialogue


def test_refused_connection_names_its_target() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(TransportError) as caught:
        asyncio.run(SmtpSession.open("127.0.0.1", port, helo_name="me.test", timeout=2,
                                     mx_host="mx.corp.example"))
    error = caught.value
    assert error.internal_code == 161 and error.facts is not None
    assert (error.facts.peer_ip, error.facts.peer_port, error.facts.mx_host) == ("127.0.0.1", port,
                                                                                 "mx.corp.example")
    assert STAMP.match(error.dialogue) and f"to 127.0.0.1:{port}" in error.dialogue
