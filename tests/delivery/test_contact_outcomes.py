"""Final delivery outcomes reach the contacts exactly once, whoever applies them."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine, func, select, update

from mailcarrier.delivery.contact_outcomes import apply_pending
from mailcarrier.domain.contact_status import StatusPolicy
from mailcarrier.domain.vocabulary import Category, DeliveryState, Reason
from mailcarrier.storage import outbox
from mailcarrier.storage.tables import activities, contacts, deliveries
from tests.delivery.world import T0, make_world, start_mailing
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

ADDRESSES = [f"r{i}@d{i % 3}.example" for i in range(30)]


@pytest.fixture
def engine(empty_engine: Engine) -> Engine:  # noqa: F811 - the shared fixture, both backends
    """A mailing to ADDRESSES whose every delivery is final: one in three soft-bounced."""
    world = make_world(empty_engine, ADDRESSES)
    start_mailing(world)
    _record_outcomes(empty_engine)
    return empty_engine


def _record_outcomes(engine: Engine) -> None:
    d = deliveries.c
    with engine.begin() as conn:
        conn.execute(update(deliveries).values(
            state=DeliveryState.DELIVERED.value, final_at=T0, contact_event_pending=True))
        conn.execute(update(deliveries).where(d.id % 3 == 0).values(
            state=DeliveryState.BOUNCED_SOFT.value, last_reason=Reason.MAILBOXFULL.value,
            last_category=int(Category.TEMPORARY)))


def _history(engine: Engine) -> dict[str, int]:
    a = activities.c
    with engine.connect() as conn:
        rows = conn.execute(select(a.type, func.count()).group_by(a.type)).all()
    return {kind: count for kind, count in rows}


def _counters(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.sum(contacts.c.total_bounces))).scalar_one() or 0)


def test_outcomes_read_by_two_writers_are_applied_once(engine: Engine) -> None:
    policy = StatusPolicy()
    first = outbox.pending_contact_events(engine)
    second = outbox.pending_contact_events(engine)  # a second worker read the same rows
    assert len(first) == len(second) == len(ADDRESSES)
    assert apply_pending(engine, policy, T0, first) == len(ADDRESSES)
    assert apply_pending(engine, policy, T0, second) == 0
    assert apply_pending(engine, policy, T0) == 0
    assert _history(engine) == {"delivered": 20, "soft_bounce": 10}
    assert _counters(engine) == 10


def test_concurrent_writers_split_the_outcomes_without_double_counting(engine: Engine) -> None:
    policy = StatusPolicy()
    pending = outbox.pending_contact_events(engine)
    barrier = threading.Barrier(3)
    applied: list[int] = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            barrier.wait()
            applied.append(apply_pending(engine, policy, T0, pending))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(applied) == [0, 0, len(ADDRESSES)]
    assert _history(engine) == {"delivered": 20, "soft_bounce": 10}
    assert _counters(engine) == 10
