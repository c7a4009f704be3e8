"""Overflow of a warming pool "waits or goes to a warm shared pool per setting"
(MAILCARRIER_POOL_OVERFLOW), through the worker and the sandbox MX."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.source_routing import routing_for
from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.domain.errors import ConfigurationError
from mailcarrier.domain.warmup import load_schedules
from mailcarrier.services.pools import membership
from mailcarrier.storage.tables import attempts, deliveries
from tests.delivery.world import T0, make_world, settings_for, start_mailing
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

NEW_IP, WARM_IP = "127.0.0.2", "127.0.0.9"
CAP = load_schedules()["conservative"].daily[0]
LATE = T0.replace(hour=22)  # most of day 1's warm-up allowance is available


def _send(engine: Engine, tmp_path: Path, overflow: str) -> tuple[Counter[tuple[str, object]], set[str]]:
    """Run a mailing of CAP + 10 messages; (IP, day) of each delivery, and the states."""
    world = make_world(engine, [f"user{i}@example.com" for i in range(CAP + 10)])
    with engine.begin() as conn:
        membership.create_pool(conn, "house", "dedicated", T0)
        membership.add_ip(conn, "house", NEW_IP, T0, schedule=load_schedules()["conservative"])
        membership.create_pool(conn, "warm", "shared", T0)
        membership.add_ip(conn, "warm", WARM_IP, T0, schedule=load_schedules()["standard"], warm=True)
        membership.assign_account(conn, world.account_id, "house", T0)
    start_mailing(world, now=LATE)
    with Sandbox() as sandbox:
        settings = settings_for(tmp_path, sandbox.port, pool_overflow=overflow)
        routing = routing_for(engine, settings)
        assert routing is not None and routing.overflow_pool == (overflow or None)
        asyncio.run(run_worker(settings, engine, until_idle=True, clock=SimulatedClock(LATE),
                               source_routing=routing))
    with engine.connect() as conn:
        carried = Counter((row.local_ip, row.delivered_at.date()) for row in conn.execute(
            select(attempts.c.local_ip, deliveries.c.delivered_at)
            .join(deliveries, deliveries.c.id == attempts.c.delivery_id)
            .where(attempts.c.outcome == "delivered")))
        states = set(conn.execute(select(deliveries.c.state)).scalars())
    return carried, states


def test_overflow_goes_to_the_warm_shared_pool_when_set(empty_engine: Engine,  # noqa: F811
                                                         tmp_path: Path) -> None:
    carried, states = _send(empty_engine, tmp_path, "warm")
    day1 = LATE.date()
    assert states == {"delivered"}
    # nothing waited: what the new IP's allowance (spread over the day) could not carry went warm
    assert set(carried) == {(NEW_IP, day1), (WARM_IP, day1)}
    assert carried[(NEW_IP, day1)] <= CAP and carried[(WARM_IP, day1)] >= 10
    assert carried.total() == CAP + 10


def test_overflow_waits_for_tomorrow_when_unset(empty_engine: Engine,  # noqa: F811
                                                tmp_path: Path) -> None:
    carried, states = _send(empty_engine, tmp_path, "")
    day1 = LATE.date()
    assert states == {"delivered"}
    assert carried == Counter({(NEW_IP, day1): CAP, (NEW_IP, day1 + timedelta(days=1)): 10})


def test_overflow_pool_must_exist_and_be_shared(empty_engine: Engine, tmp_path: Path) -> None:  # noqa: F811
    make_world(empty_engine, ["a@example.com"])
    with empty_engine.begin() as conn:
        membership.create_pool(conn, "house", "dedicated", T0)
        membership.add_ip(conn, "house", NEW_IP, T0, schedule=load_schedules()["standard"])
    with pytest.raises(ConfigurationError, match=r"'nope'.*does not exist"):
        routing_for(empty_engine, settings_for(tmp_path, 25, pool_overflow="nope"))
    with pytest.raises(ConfigurationError, match="'house' is dedicated"):
        routing_for(empty_engine, settings_for(tmp_path, 25, pool_overflow="house"))
