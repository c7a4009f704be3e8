"""One inbound batch, one unit of work: a crash at any step leaves nothing half applied.

The processor used to commit a batch in four transactions (deliveries flipped with the
contact events, then the counts against the sending IPs, then the reputation signals): a
crash after the first left bounces applied but never counted against the IP that sent them,
and the emails marked processed, so nothing would ever count them. Now every step runs in
the batch's one transaction; a crash at any of them rolls the whole batch back, the claim
expires, and the next run ends in exactly the state of a run that was never interrupted.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from mailcarrier.domain.warmup import load_schedules
from mailcarrier.services import contacts as contact_service
from mailcarrier.services import inbound
from mailcarrier.services.inbound import IncomingEmail, process_pending, store_incoming
from mailcarrier.services.pools import membership, reputation, warmup
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.inbound_tables import inbound_messages
from mailcarrier.storage.pool_tables import ip_daily_volume, reputation_event_accounts, reputation_events
from mailcarrier.storage.tables import activities, attempts, contacts, deliveries
from tests.inbound.factory import CTX, T0, arf, dsn, make_world

TRAP = "smtp; 550 5.7.1 <{r}>: message hit a spam trap, see https://postmaster.receiver.test"
LATER = T0 + timedelta(hours=2)
#: After the claim of a crashed run went stale (services.inbound._CLAIM_STALE is 10 minutes).
RESUME = LATER + timedelta(minutes=11)
PEOPLE = ["ann@receiver.test", "bob@receiver.test", "cid@receiver.test", "dan@receiver.test",
          "eve@receiver.test"]


class CrashError(Exception):
    """Stands for the process dying right after a step wrote (its transaction is lost)."""


def _world(engine: Engine) -> None:
    world = make_world(engine, PEOPLE)
    sent = world.sent
    with engine.begin() as conn:
        membership.create_pool(conn, "main", "shared", T0 - timedelta(days=2))
        membership.add_ip(conn, "main", "127.0.0.2", T0, schedule=load_schedules()["standard"], warm=True)
        membership.assign_account(conn, world.account_id, "main", T0 - timedelta(days=1))
        conn.execute(update(attempts).values(local_ip="127.0.0.2"))
    emails = [
        dsn(to=sent["ann@receiver.test"].return_path, recipient="ann@receiver.test",
            message_id=sent["ann@receiver.test"].message_id, dsn_id="d1@mx.receiver.test"),
        dsn(to=sent["bob@receiver.test"].return_path, recipient="bob@receiver.test", status="5.7.1",
            diagnostic=TRAP, message_id=sent["bob@receiver.test"].message_id, dsn_id="d2@mx.receiver.test"),
        dsn(to=sent["cid@receiver.test"].return_path, recipient="cid@receiver.test", status="4.2.2",
            diagnostic="smtp; 452 4.2.2 <{r}>: mailbox full", message_id=sent["cid@receiver.test"].message_id,
            dsn_id="d3@mx.receiver.test"),
        arf(to="fbl@bounces.sender.test", recipient="dan@receiver.test",
            message_id=sent["dan@receiver.test"].message_id, return_path=sent["dan@receiver.test"].return_path),
        dsn(to=sent["ann@receiver.test"].return_path, recipient="ann@receiver.test",  # a second copy
            message_id=sent["ann@receiver.test"].message_id, dsn_id="d1@mx.receiver.test"),
    ]
    store_incoming(engine, [IncomingEmail(raw, "smtp") for raw in emails], LATER)


def _snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the processor may touch, except the random claim token."""
    tables = {"deliveries": deliveries, "contacts": contacts, "activities": activities,
              "ip_daily_volume": ip_daily_volume, "reputation_events": reputation_events,
              "reputation_event_accounts": reputation_event_accounts}
    found: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for name, table in tables.items():
            found[name] = sorted((tuple(row) for row in conn.execute(select(table))), key=repr)
        kept = [c for c in inbound_messages.c if c.name not in ("claim_token", "claimed_at", "raw")]
        found["inbound_messages"] = sorted((tuple(r) for r in conn.execute(select(*kept))), key=repr)
    return found


@pytest.fixture
def reference(tmp_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'reference.db'}")
    _world(engine)
    summary = process_pending(engine, CTX, RESUME)
    assert summary.bounced_deliveries == 3 and summary.states == {"processed": 4, "duplicate": 1}
    snapshot = _snapshot(engine)
    engine.dispose()
    # The run writes every kind of effect, so each crash point below is reached.
    assert len(snapshot["reputation_events"]) == 1 and len(snapshot["ip_daily_volume"]) == 1
    return snapshot


def _crash_after(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[int]:
    real: Callable[..., Any] = getattr(owner, name)
    calls: list[int] = []

    def then_crash(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        calls.append(1)
        raise CrashError(name)

    monkeypatch.setattr(owner, name, then_crash)
    return calls


#: The steps of a batch, each patched to crash right after it wrote.
STEPS = {
    "contact events": (contact_service.state_repo, "append_activities"),
    "deliveries flipped": (inbound.store, "flip_deliveries"),
    "results saved": (inbound.store, "save_results"),
    "counted against the sending IP": (warmup, "record_ip_outcome"),
    "reputation signals": (reputation, "record_reputation_event"),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_a_crash_after_any_step_ends_as_an_uninterrupted_run(
        step: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        reference: dict[str, list[tuple[Any, ...]]]) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'crashed.db'}")
    _world(engine)
    before = _snapshot(engine)
    owner, name = STEPS[step]
    with monkeypatch.context() as patch:
        calls = _crash_after(patch, owner, name)
        with pytest.raises(CrashError):
            process_pending(engine, CTX, LATER)
        assert calls == [1]
    after_crash = _snapshot(engine)
    assert {k: v for k, v in after_crash.items() if k != "inbound_messages"} == \
        {k: v for k, v in before.items() if k != "inbound_messages"}  # nothing half applied
    assert process_pending(engine, CTX, LATER).claimed == 0  # still claimed by the dead run
    process_pending(engine, CTX, RESUME)
    assert _snapshot(engine) == reference
    engine.dispose()
