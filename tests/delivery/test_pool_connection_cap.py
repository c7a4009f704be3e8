"""The deferral automation's "slow down -> 1 connection" really limits the SMTP connections
the worker holds open from that IP to the provider, and lifts with the first clean delivery.

A counting TCP proxy stands between the worker and the sandbox MX: it sees every
connection the worker opens from the pool's source IP and how many are open at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.source_routing import routing_for
from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.domain.warmup import load_schedules
from mailcarrier.services.pools import membership
from mailcarrier.services.pools import throttling as pool_throttling
from tests.delivery.world import T0, make_world, settings_for, start_mailing
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

IP = "127.0.0.2"
RATE_LIMITED = "451 4.7.28 Our system has detected an unusual rate of unsolicited mail, rate limit exceeded"
DEFERRALS = 8


class CountingProxy:
    """Forwards TCP to the sandbox and records, at each new connection, how many are open."""

    def __init__(self, target_port: int, is_throttling: Any) -> None:
        self.target_port, self.is_throttling = target_port, is_throttling
        self.open = 0
        self.opened: list[tuple[bool, int, str]] = []  #: (while throttling, open incl. this one, peer)
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        self.open += 1
        self.opened.append((self.is_throttling(), self.open, peer))
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        async def client_side() -> None:
            # The worker's connection is over when the worker closes its end; the sandbox may
            # still be tearing down its side, which must not count against the next connection.
            try:
                await pipe(reader, up_writer)
            finally:
                self.open -= 1

        await asyncio.gather(client_side(), pipe(up_reader, writer))

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


def test_slow_down_holds_one_connection_until_the_first_clean_delivery(
    empty_engine: Engine, tmp_path: Path,  # noqa: F811
) -> None:
    recipients = [f"u{i}@gmail.com" for i in range(40)]
    world = make_world(empty_engine, recipients)
    with empty_engine.begin() as conn:
        membership.create_pool(conn, "house", "dedicated", T0)
        membership.add_ip(conn, "house", IP, T0, schedule=load_schedules()["standard"], warm=True)
        membership.assign_account(conn, world.account_id, "house", T0)
        for second in range(3):  # Gmail said "rate limit" three times: the automation slows it down
            decision = pool_throttling.record_reply_for_throttling(conn, IP, "gmail.com", T0 + timedelta(seconds=second),
                                                       delivered=False, text=RATE_LIMITED)
    assert decision.started is not None and decision.started.connections == 1
    start_mailing(world, now=T0 + timedelta(minutes=1))

    deferrals_left = [DEFERRALS]
    lock = threading.Lock()
    with Sandbox() as sandbox:
        original_rcpt = sandbox.handler.handle_RCPT

        async def rcpt(server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
            await asyncio.sleep(0.03)  # long enough for parallel sessions to overlap
            with lock:
                if deferrals_left[0] > 0:
                    deferrals_left[0] -= 1
                    return RATE_LIMITED
            return await original_rcpt(server, session, envelope, address, options)

        sandbox.handler.handle_RCPT = rcpt  # type: ignore[method-assign]

        def throttling() -> bool:
            with lock:
                return deferrals_left[0] > 0

        proxy = CountingProxy(sandbox.port, throttling)

        async def run() -> None:
            port = await proxy.start()
            settings = settings_for(tmp_path, port)
            routing = routing_for(empty_engine, settings)
            assert routing is not None
            try:
                await run_worker(settings, empty_engine, until_idle=True,
                                 clock=SimulatedClock(T0 + timedelta(minutes=2)), source_routing=routing)
            finally:
                await proxy.stop()

        started = time.monotonic()
        asyncio.run(run())
        assert time.monotonic() - started < 120

    assert len(sandbox.received) == len(recipients)
    assert {peer for _, _, peer in proxy.opened} == {IP}
    during = [n for throttled, n, _ in proxy.opened if throttled]
    after = [n for throttled, n, _ in proxy.opened if not throttled]
    assert during and max(during) == 1, proxy.opened  # one connection while slowed down
    assert after and max(after) > 1, proxy.opened  # the first clean delivery lifted the cap
    with empty_engine.connect() as conn:
        log = pool_throttling.throttle_log(conn)
    assert {(e.provider, e.rule) for e in log} == {("gmail", "gmail-rate-limited")}
    # each further "rate limit" renewed the slow-down; the first clean delivery ended it
    assert log[0].end_reason == "clean delivery"
    assert all(e.end_reason == "superseded" for e in log[1:])
