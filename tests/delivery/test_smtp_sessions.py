import asyncio

import pytest

from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.smtp_sessions import ConnectionLimits, SmtpPool


def test_connections_and_messages_per_connection_are_capped() -> None:
    async def run(sandbox: Sandbox) -> tuple[int, int]:
        pool = SmtpPool(helo_name="mta.test", timeout=5)
        limits = ConnectionLimits(connections=2, messages_per_connection=5)
        active = peak = 0

        async def send(n: int) -> None:
            nonlocal active, peak
            async with pool.session(sandbox.host, sandbox.port, limits, source_ip="127.0.0.1") as session:
                active += 1
                peak = max(peak, active)
                await session.send("b@bounce.test", f"user{n}@example.com", b"Subject: x\r\n\r\nhi\r\n")
                active -= 1

        await asyncio.gather(*(send(n) for n in range(20)))
        await pool.close()
        return pool.opened, peak

    with Sandbox() as sandbox:
        opened, peak = asyncio.run(run(sandbox))
        assert len(sandbox.received) == 20
    assert peak <= 2
    assert opened == 4  # 20 messages / 5 per connection


def test_unusable_session_is_not_reused() -> None:
    async def run(sandbox: Sandbox) -> int:
        pool = SmtpPool(helo_name="mta.test", timeout=5)
        limits = ConnectionLimits(connections=1, messages_per_connection=50)
        for recipient in ("throttle@example.com", "ada@example.com"):
            async with pool.session(sandbox.host, sandbox.port, limits) as session:
                await session.send("b@bounce.test", recipient, b"Subject: x\r\n\r\nhi\r\n")
        await pool.close()
        return pool.opened

    with Sandbox() as sandbox:
        assert asyncio.run(run(sandbox)) == 2


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ConnectionLimits(connections=0)
