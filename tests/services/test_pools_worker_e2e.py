"""End to end: a mailing from an account on a pool of three loopback IPs, through the worker.

The sandbox MX sees mail from each IP; Yahoo answers 421 [TSS04] until the deferral
automation suspends it per IP; the warm-up cap holds each new IP to its daily volume;
the attempts record which IP carried each message.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.source_routing import PoolRouting, routing_for
from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.domain.warmup import WarmupLimits, load_schedules
from mailcarrier.services.pools import membership, throttling
from mailcarrier.storage.pool_tables import ip_daily_volume, sending_ips
from mailcarrier.storage.tables import attempts, deliveries
from tests.delivery.world import T0, make_world, settings_for, start_mailing
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

IPS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
CAP = load_schedules()["conservative"].daily[0]  # 50 on day 1 and day 2
LATE = T0.replace(hour=22)  # the worker starts late: most of day 1's allowance is available
TSS04 = ("421 4.7.0 [TSS04] Messages from {ip} temporarily deferred due to unexpected volume or user "
         "complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes")


@pytest.mark.slow
def test_pool_of_three_ips_warmup_cap_and_yahoo_suspension(empty_engine: Engine,  # noqa: F811
                                                            tmp_path: Path) -> None:
    users = [f"user{i}@example.com" for i in range(3 * CAP + 6)]
    fans = [f"fan{i}@yahoo.com" for i in range(4)]
    world = make_world(empty_engine, [*users, *fans])
    with empty_engine.begin() as conn:
        membership.create_pool(conn, "house", "dedicated", T0)
        for ip in IPS:
            membership.add_ip(conn, "house", ip, T0, schedule=load_schedules()["conservative"])
        membership.assign_account(conn, world.account_id, "house", T0)
    start_mailing(world)

    carried: dict[str, str] = {}
    tss04_left = [3]
    with Sandbox() as sandbox:
        handler = sandbox.handler
        original_rcpt, original_data = handler.handle_RCPT, handler.handle_DATA

        async def rcpt(server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
            if address.endswith("@yahoo.com") and tss04_left[0] > 0:
                tss04_left[0] -= 1
                return TSS04.format(ip=session.peer[0])
            return await original_rcpt(server, session, envelope, address, options)

        async def data(server: Any, session: Any, envelope: Any) -> str:
            carried.update({rcpt_to: session.peer[0] for rcpt_to in envelope.rcpt_tos})
            return await original_data(server, session, envelope)

        handler.handle_RCPT = rcpt  # type: ignore[method-assign]
        handler.handle_DATA = data  # type: ignore[method-assign]
        settings = settings_for(tmp_path, sandbox.port)
        routing = PoolRouting(empty_engine, WarmupLimits())
        asyncio.run(run_worker(settings, empty_engine, until_idle=True, clock=SimulatedClock(LATE),
                               source_routing=routing))

    with empty_engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(deliveries))}
        tries = conn.execute(select(attempts).order_by(attempts.c.started_at, attempts.c.id)).all()
        volume = conn.execute(select(sending_ips.c.address, ip_daily_volume.c.day, ip_daily_volume.c.sent)
                              .join(sending_ips, sending_ips.c.id == ip_daily_volume.c.ip_id)).all()
        log = throttling.throttle_log(conn, as_of=LATE + timedelta(days=3))

    # Every message delivered, each by one of the pool's IPs, as the sandbox saw it.
    assert {r.state for r in rows.values()} == {"delivered"}
    assert set(carried.values()) == set(IPS)
    assert len(carried) == len(users) + len(fans)
    for attempt in tries:
        email = rows[attempt.delivery_id].email
        assert attempt.local_ip in IPS
        if attempt.outcome == "delivered":
            assert carried[email] == attempt.local_ip

    # The warm-up cap held every new IP to its daily volume; what did not fit waited a day.
    per_day: dict[date, dict[str, int]] = defaultdict(dict)
    for address, day, sent in volume:
        per_day[day][address] = sent
    assert all(sent <= CAP for day in per_day.values() for sent in day.values())
    assert per_day[LATE.date()] == dict.fromkeys(IPS, CAP)
    next_day = [r for r in rows.values() if r.delivered_at.date() == LATE.date() + timedelta(days=1)]
    assert len(next_day) == len(users) + len(fans) - 3 * CAP + 3  # the 3 TSS04 deferrals used allowance

    # Yahoo deferred with TSS04; the automation suspended Yahoo on that IP, and no Yahoo
    # attempt left that IP while the suspension was in force.
    suspensions = [e for e in log if e.provider == "yahoo" and e.rule == "yahoo-tss04"]
    deferred = [a for a in tries if a.outcome == "deferred" and rows[a.delivery_id].domain == "yahoo.com"]
    assert len(deferred) == 3 and suspensions
    for attempt in deferred:  # the reply started (or renewed) a suspension of Yahoo on that IP
        assert any(s.ip_address == attempt.local_ip and attempt.started_at <= s.started_at <= attempt.ended_at
                   for s in suspensions)
    for s in suspensions:
        assert s.until == s.started_at + timedelta(hours=2)
        assert s.end_reason in ("expired", "superseded")  # closed in the log once over
        during = [a for a in tries if rows[a.delivery_id].domain == "yahoo.com" and a.local_ip == s.ip_address
                  and s.started_at < a.started_at < s.until]
        assert during == []


def test_routing_is_off_without_ips_and_unassigned_accounts_use_the_default_source(
    empty_engine: Engine, tmp_path: Path,  # noqa: F811
) -> None:
    world = make_world(empty_engine, ["ann@example.com", "bob@example.com"])
    start_mailing(world)
    with Sandbox() as sandbox:
        settings = settings_for(tmp_path, sandbox.port)
        assert routing_for(empty_engine, settings) is None
        with empty_engine.begin() as conn:  # a pool exists, but this account is on none
            membership.create_pool(conn, "other", "shared", T0)
            membership.add_ip(conn, "other", "127.0.0.5", T0, schedule=load_schedules()["standard"], warm=True)
        routing = routing_for(empty_engine, settings)
        assert routing is not None
        asyncio.run(run_worker(settings, empty_engine, until_idle=True, clock=SimulatedClock(T0),
                               source_routing=routing))
    with empty_engine.connect() as conn:
        states = set(conn.execute(select(deliveries.c.state)).scalars())
        local = set(conn.execute(select(attempts.c.local_ip)).scalars())
        counted = conn.execute(select(ip_daily_volume)).all()
    assert states == {"delivered"} and local == {"127.0.0.1"} and counted == []
