"""Concurrent imports, and imports racing status updates, on real SQLite and PostgreSQL.

Each test runs two real writers in threads against the same database (SQLite file in WAL
mode, or a PostgreSQL schema) and then checks the stored rows exactly: nothing lost, no
duplicate contacts, counts and counters exact.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from mailcarrier.domain.contact_status import ContactEvent, EventKind, StatusPolicy
from mailcarrier.domain.vocabulary import Category, Reason
from mailcarrier.services.contact_import import ImportReport, import_csv
from mailcarrier.services.contacts import ContactEventRecord, apply_events
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.tables import activities, audience_members, audiences, contacts
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def db(empty_engine: Engine) -> Iterator[tuple[Engine, int]]:  # noqa: F811
    upgrade(empty_engine)
    with empty_engine.begin() as conn:
        account = account_repo.create_account(conn, "one", "One", T0)
    yield empty_engine, account.id


def write_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    lines = ["email,first_name,city"] + [",".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="")
    return path


def run_together(*jobs: Callable[[], object]) -> list[object]:
    """Start every job at the same moment in its own thread; re-raise the first failure."""
    start = threading.Barrier(len(jobs))
    results: list[object] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(index: int, job: Callable[[], object]) -> None:
        try:
            start.wait()
            results[index] = job()
        except BaseException as exc:  # reported to the test below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a writer hung"
    if errors:
        raise errors[0]
    return results


def stored_contacts(engine: Engine, account: int) -> dict[str, dict[str, object]]:
    with engine.connect() as conn:
        rows = conn.execute(select(contacts).where(contacts.c.account_id == account))
        return {r.email: dict(r._mapping) for r in rows}


def member_count(engine: Engine, account: int, audience: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(audience_members.join(
                audiences, audiences.c.id == audience_members.c.audience_id))
            .where(audiences.c.account_id == account, audiences.c.name == audience)).scalar_one()


def test_two_overlapping_imports_into_one_new_audience(db: tuple[Engine, int], tmp_path: Path) -> None:
    """Two files sharing half their rows, the second in reverse order, imported at once.

    Small batches make the writers interleave many transactions; the reversed order makes
    them meet the shared rows from opposite ends (the lock-order case on PostgreSQL). The
    audience does not exist yet, so both imports also race to create it.
    """
    engine, account = db
    size, shared = 1200, 600
    first = [(f"user{i}@example.com", f"First{i}", "Paris") for i in range(size)]
    second = [(f"user{i}@example.com", f"First{i}", "Paris")
              for i in range(size - shared, 2 * size - shared)][::-1]
    a = write_csv(tmp_path / "a.csv", first)
    b = write_csv(tmp_path / "b.csv", second)

    reports = run_together(lambda: import_csv(engine, account, "shared", a, T0, batch_rows=50),
                           lambda: import_csv(engine, account, "shared", b, T0, batch_rows=50))

    assert [r.rows_imported for r in reports if isinstance(r, ImportReport)] == [size, size]
    stored = stored_contacts(engine, account)
    expected = {email: name for email, name, _ in first + second}
    assert len(stored) == len(expected) == 2 * size - shared
    assert {email: row["first_name"] for email, row in stored.items()} == expected
    assert all(row["fields"] == {"city": "Paris"} for row in stored.values())
    assert all(row["status"] == "active" and row["version"] == 1 for row in stored.values())
    assert member_count(engine, account, "shared") == 2 * size - shared
    with engine.connect() as conn:
        audience_rows = conn.execute(select(func.count()).select_from(audiences).where(
            audiences.c.account_id == account, audiences.c.name == "shared")).scalar_one()
    assert audience_rows == 1


def test_import_racing_status_updates_loses_nothing(db: tuple[Engine, int], tmp_path: Path) -> None:
    """A re-import renaming every contact while batches of blocks hit the same contacts.

    The import must not reset counters or status, and no block may be lost: every contact
    ends with the new name and exactly as many blocks as were applied to it.
    """
    engine, account = db
    size = 600
    original = write_csv(tmp_path / "old.csv",
                         [(f"user{i}@example.com", f"Old{i}", "Paris") for i in range(size)])
    import_csv(engine, account, "list", original, T0)
    ids = {email: row["id"] for email, row in stored_contacts(engine, account).items()}
    renamed = write_csv(tmp_path / "new.csv",
                        [(f"user{i}@example.com", f"New{i}", "Lyon") for i in range(size)][::-1])
    policy = StatusPolicy(blocks_to_error=1_000)
    rounds, batch = 4, 100
    order = sorted(ids.values())

    def block(contact_id: int, when: datetime) -> ContactEventRecord:
        return ContactEventRecord(account, contact_id, ContactEvent(
            EventKind.HARD_BOUNCE, when, Reason.BLOCKED, Category.SPAM_BLOCK), cause="test")

    def events() -> int:
        applied = 0
        for r in range(rounds):
            when = T0 + timedelta(minutes=r)
            for start in range(0, size, batch):
                applied += len(apply_events(engine, policy,
                                            [block(cid, when) for cid in order[start:start + batch]],
                                            when))
        return applied

    results = run_together(lambda: import_csv(engine, account, "list", renamed, T0, batch_rows=40),
                           events)

    assert results[1] == rounds * size
    stored = stored_contacts(engine, account)
    assert len(stored) == size
    for i in range(size):
        row = stored[f"user{i}@example.com"]
        assert (row["first_name"], row["fields"]) == (f"New{i}", {"city": "Lyon"})
        assert (row["consecutive_blocks"], row["total_bounces"]) == (rounds, rounds)
        assert row["version"] == 1 + rounds and row["status"] == "active"
    with engine.connect() as conn:
        history = conn.execute(select(func.count()).select_from(activities).where(
            activities.c.account_id == account)).scalar_one()
    assert history == rounds * size
    assert member_count(engine, account, "list") == size
