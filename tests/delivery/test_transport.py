import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from mailcarrier.delivery.transport import SmtpSession, TransportError, queue_id_of
from mailcarrier.domain.smtp_reply import SMTPStage


class RecordingHandler:
    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("unknown@"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return f"250 2.0.0 Ok: queued as Q{len(self.received):04d}"


@contextlib.asynccontextmanager
async def smtp_server() -> AsyncIterator[tuple[Controller, RecordingHandler]]:
    handler = RecordingHandler()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield controller, handler
    finally:
        controller.stop()


async def _port_of(controller: Controller) -> int:
    return int(controller.port)


def test_many_messages_per_session_with_evidence() -> None:
    async def run() -> None:
        async with smtp_server() as (controller, handler):
            session = await SmtpSession.open("127.0.0.1", await _port_of(controller), helo_name="mta.test",
                                             timeout=5, mx_host="mx.example")
            body = b"Subject: hi\r\n\r\n.leading dot\r\nline\r\n"
            first = await session.send("b-1@bounce.test", "ada@example.com", body)
            second = await session.send("b-2@bounce.test", "unknown@example.com", body)
            third = await session.send("b-3@bounce.test", "bob@example.com", body)
            await session.close()
        assert first.reply is not None and first.reply.code == 250 and first.stage is SMTPStage.EOD
        assert first.queue_id == "Q0001" and third.queue_id == "Q0002"
        assert first.local_ip == "127.0.0.1" and first.peer_ip == "127.0.0.1" and first.mx_host == "mx.example"
        assert "C: MAIL FROM:<b-1@bounce.test>" in first.dialogue and ".leading dot" not in first.dialogue
        assert second.reply is not None and second.reply.code == 550 and second.stage is SMTPStage.RCPT
        assert second.queue_id is None
        assert [r[1] for r in handler.received] == [["ada@example.com"], ["bob@example.com"]]
        assert handler.received[0][2].replace(b"\r\n", b"\n").endswith(b".leading dot\nline\n")

    asyncio.run(run())


def test_connection_refused_is_161() -> None:
    async def run() -> None:
        with pytest.raises(TransportError) as caught:
            await SmtpSession.open("127.0.0.1", 9, helo_name="mta.test", timeout=2)
        assert caught.value.internal_code == 161

    asyncio.run(run())


@pytest.mark.parametrize(("after_dot", "code"), [(False, 146), (True, 147)])
def test_silent_server_times_out(after_dot: bool, code: int) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 silent\r\n")
        while line := await reader.readline():
            if line.startswith((b"EHLO", b"MAIL", b"RCPT")):
                writer.write(b"250 ok\r\n")
            elif line.startswith(b"DATA") and after_dot:
                writer.write(b"354 go\r\n")
            # silence for DATA (before the dot) or after the final "."
        writer.close()

    async def run() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        session = await SmtpSession.open("127.0.0.1", port, helo_name="t", timeout=0.3)
        with pytest.raises(TransportError) as caught:
            await session.send("a@b.test", "c@d.test", b"x\r\n")
        assert caught.value.internal_code == code
        session.abort()
        server.close()

    asyncio.run(run())


def test_queue_id_forms() -> None:
    assert queue_id_of("2.0.0 Ok: queued as 4XyZ1k2") == "4XyZ1k2"
    assert queue_id_of("OK id=1vAbc-000123-Ab") == "1vAbc-000123-Ab"
    assert queue_id_of("Message accepted") is None
