"""Per-destination connection limits hold across workers: each live worker takes an equal share."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.smtp_sessions import ConnectionLimits, SmtpPool
from mailcarrier.delivery.worker import retrying
from mailcarrier.storage import outbox
from mailcarrier.storage.migrate import upgrade
from tests.delivery.world import T0
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

WINDOW = timedelta(seconds=30)


def test_live_workers_are_counted_and_leave(empty_engine: Engine) -> None:  # noqa: F811
    upgrade(empty_engine)
    assert outbox.beat(empty_engine, "a", T0, lease_until=T0, alive_within=WINDOW) == 1
    assert outbox.beat(empty_engine, "b", T0 + timedelta(seconds=5), lease_until=T0, alive_within=WINDOW) == 2
    assert outbox.beat(empty_engine, "a", T0 + timedelta(seconds=10), lease_until=T0, alive_within=WINDOW) == 2
    # b stopped beating (killed): after the window only a counts.
    assert outbox.beat(empty_engine, "a", T0 + timedelta(seconds=40), lease_until=T0, alive_within=WINDOW) == 1
    outbox.beat(empty_engine, "b", T0 + timedelta(seconds=41), lease_until=T0, alive_within=WINDOW)
    outbox.leave(empty_engine, "b")
    assert outbox.beat(empty_engine, "a", T0 + timedelta(seconds=42), lease_until=T0, alive_within=WINDOW) == 1


def test_pool_applies_a_smaller_share_at_the_next_borrow() -> None:
    async def run(sandbox: Sandbox) -> list[int]:
        pool = SmtpPool(helo_name="mta.test", timeout=5)
        peaks: list[int] = []
        for limits in (ConnectionLimits(4, 50), ConnectionLimits(1, 50)):
            active = peak = 0

            async def send(n: int, limits: ConnectionLimits = limits) -> None:
                nonlocal active, peak
                async with pool.session(sandbox.host, sandbox.port, limits) as session:
                    active += 1
                    peak = max(peak, active)
                    await session.send("b@bounce.test", f"u{n}@example.com", b"Subject: x\r\n\r\nhi\r\n")
                    await asyncio.sleep(0.01)
                    active -= 1

            await asyncio.gather(*(send(n) for n in range(12)))
            peaks.append(peak)
        await pool.close()
        return peaks

    with Sandbox() as sandbox:
        assert asyncio.run(run(sandbox)) == [4, 1]
        assert len(sandbox.received) == 24


def test_recording_is_retried_while_the_database_is_busy() -> None:
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))

    retrying(flaky, pause=0.001)()
    assert len(calls) == 3
    calls.clear()

    def broken() -> None:
        calls.append(1)
        raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))

    with pytest.raises(OperationalError):
        retrying(broken, attempts=3, pause=0.001)()
    assert len(calls) == 3
