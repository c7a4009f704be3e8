import asyncio

import pytest

from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.transport import SmtpSession, TransportError
from mailcarrier.domain.classify import classify_reply

MESSAGE = b"Message-ID: <m1@shop.example>\r\nSubject: hi\r\n\r\nbody\r\n"


async def _send(sandbox: Sandbox, recipient: str, timeout: float = 5) -> tuple[int | None, str]:
    session = await SmtpSession.open(sandbox.host, sandbox.port, helo_name="mta.test", timeout=timeout)
    try:
        result = await session.send("b-1@bounce.test", recipient, MESSAGE)
    finally:
        session.abort()
    assert result.reply is not None
    return result.reply.code, result.reply.text


def test_behaviours_by_local_part() -> None:
    with Sandbox(stall_seconds=2) as sandbox:
        ok = asyncio.run(_send(sandbox, "ada@example.com"))
        unknown = asyncio.run(_send(sandbox, "unknown1@gmail.com"))
        full = asyncio.run(_send(sandbox, "full@example.com"))
        grey_first = asyncio.run(_send(sandbox, "grey@example.com"))
        grey_again = asyncio.run(_send(sandbox, "grey@example.com"))
        throttled = asyncio.run(_send(sandbox, "throttle@example.com"))
        aol = asyncio.run(_send(sandbox, "aol@aol.example"))
        received = list(sandbox.received)
        bounces = list(sandbox.handler.asynchronous_bounces)
    assert ok[0] == 250 and grey_again[0] == 250 and aol[0] == 250
    assert unknown[0] == 550 and "does not exist" in unknown[1]
    assert full[0] == 452 and grey_first[0] == 451 and throttled[0] == 421
    assert [r.recipient for r in received] == ["ada@example.com", "grey@example.com", "aol@aol.example"]
    assert received[0].message_id == "<m1@shop.example>"
    assert bounces == [("b-1@bounce.test", "aol@aol.example")]


@pytest.mark.parametrize(("recipient", "code"), [("slowrcpt@example.com", 146), ("slowdata@example.com", 147),
                                                 ("drop@example.com", 150)])
def test_failures_map_to_internal_codes(recipient: str, code: int) -> None:
    with Sandbox(stall_seconds=2) as sandbox, pytest.raises(TransportError) as caught:
        asyncio.run(_send(sandbox, recipient, timeout=0.5))
    assert caught.value.internal_code == code


def test_unknown_user_reply_classifies_as_hard_bounce() -> None:
    async def run(sandbox: Sandbox) -> None:
        session = await SmtpSession.open(sandbox.host, sandbox.port, helo_name="mta.test", timeout=5)
        result = await session.send("b-1@bounce.test", "unknown@example.com", MESSAGE)
        await session.close()
        assert result.reply is not None
        assert classify_reply(result.reply).hard_bounce

    with Sandbox() as sandbox:
        asyncio.run(run(sandbox))
