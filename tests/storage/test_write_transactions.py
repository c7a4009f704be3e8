"""One way to write: ``run_write`` (BEGIN IMMEDIATE on SQLite, retried on a lock), used by every writer."""

from __future__ import annotations

import multiprocessing
import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from mailcarrier.storage.engine import StaleWriteError, is_transient, make_engine, run_write

SRC = Path(__file__).resolve().parents[2] / "src" / "mailcarrier"


@pytest.fixture
def counter_db(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'counter.db'}")
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
        conn.exec_driver_sql("INSERT INTO counter VALUES (1, 0)")
        conn.commit()
    return engine


def _increment(conn: Connection) -> None:
    value = conn.execute(text("SELECT n FROM counter WHERE id = 1")).scalar_one()
    conn.execute(text("UPDATE counter SET n = :n WHERE id = 1"), {"n": value + 1})


def _hammer(engine: Engine, write: object, per_thread: int, threads: int) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def run() -> None:
        start.wait()
        for _ in range(per_thread):
            try:
                write()  # type: ignore[operator]
            except Exception as exc:
                errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return errors


def test_deferred_read_then_write_fails_under_a_concurrent_writer(counter_db: Engine) -> None:
    """The defect the helper exists for: a deferred transaction that read cannot upgrade its
    lock once another connection committed a write meanwhile ("database is locked" at once,
    whatever the busy timeout)."""
    with counter_db.connect() as reader, counter_db.connect() as other:
        reader.execute(text("SELECT n FROM counter WHERE id = 1")).scalar_one()  # deferred: a snapshot
        other.execute(text("UPDATE counter SET n = n + 1"))
        other.commit()
        with pytest.raises(OperationalError) as raised:
            reader.execute(text("UPDATE counter SET n = 5"))
        assert is_transient(raised.value)


def test_read_then_write_units_from_four_threads_lose_nothing(counter_db: Engine) -> None:
    errors = _hammer(counter_db, lambda: run_write(counter_db, _increment), per_thread=40, threads=4)
    assert errors == []
    with counter_db.connect() as conn:
        assert conn.execute(text("SELECT n FROM counter")).scalar_one() == 160


def _locked() -> OperationalError:
    error = sqlite3.OperationalError("database is locked")
    error.sqlite_errorcode = 5  # type: ignore[attr-defined]
    return OperationalError("UPDATE ...", {}, error)


def test_a_transient_failure_reruns_the_whole_unit_after_a_pause(counter_db: Engine) -> None:
    runs: list[int] = []
    pauses: list[float] = []

    def unit(conn: Connection) -> int:
        _increment(conn)  # rolled back with the failed run
        runs.append(1)
        if len(runs) < 3:
            raise _locked()
        return len(runs)

    assert run_write(counter_db, unit, sleep=pauses.append) == 3
    assert len(pauses) == 2 and 0 < pauses[0] < pauses[1] * 2
    with counter_db.connect() as conn:
        assert conn.execute(text("SELECT n FROM counter")).scalar_one() == 1


def test_stale_write_reruns_and_exhaustion_raises_the_last_failure(counter_db: Engine) -> None:
    runs: list[int] = []

    def always_stale(conn: Connection) -> None:
        runs.append(1)
        raise StaleWriteError("row changed")

    with pytest.raises(StaleWriteError):
        run_write(counter_db, always_stale, attempts=4, sleep=lambda _s: None)
    assert len(runs) == 4


def test_other_failures_are_not_retried(counter_db: Engine) -> None:
    runs: list[int] = []

    def duplicate(conn: Connection) -> None:
        runs.append(1)
        conn.execute(text("INSERT INTO counter VALUES (1, 0)"))

    with pytest.raises(IntegrityError):
        run_write(counter_db, duplicate, sleep=lambda _s: None)
    assert runs == [1]
    assert not is_transient(ValueError("database is locked"))


def test_no_writer_opens_a_deferred_transaction() -> None:
    """Every transaction that writes goes through storage.engine (BEGIN IMMEDIATE on SQLite):
    ``Engine.begin()`` (a deferred BEGIN there) appears nowhere else in the package."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if (path.name == "engine.py" and path.parent.name == "storage") or "migrations" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if re.search(r"engine\.begin\(\)|sqlite_begin", line):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert offenders == []


def _hog(url: str, until: float) -> None:
    """Back-to-back writes, each holding the lock 20 ms (an import, a busy worker)."""
    engine = make_engine(url)

    def hold(conn: Connection) -> None:
        conn.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
        time.sleep(0.02)

    while time.time() < until:
        run_write(engine, hold)
    engine.dispose()


def test_a_waiting_writer_gets_the_lock_in_turn_from_back_to_back_writers(counter_db: Engine) -> None:
    """SQLite's own busy handler polls every 100 ms, and a writer that commits and begins again
    at once almost always wins: with two such processes a third writer waited 11.3 s for one
    insert (measured). Taking turns, each of its writes waits a few hand-offs."""
    url = counter_db.url.render_as_string(hide_password=False)
    context = multiprocessing.get_context("spawn")
    hogs = [context.Process(target=_hog, args=(url, time.time() + 60)) for _ in range(2)]
    for hog in hogs:
        hog.start()
    try:
        deadline = time.monotonic() + 30
        with counter_db.connect() as conn:  # both hogs writing before we measure
            while conn.execute(text("SELECT n FROM counter")).scalar_one() < 20:
                assert time.monotonic() < deadline, "the writer processes did not start"
                time.sleep(0.05)
                conn.rollback()
        waits = []
        for _ in range(10):
            started = time.monotonic()
            run_write(counter_db, lambda conn: conn.execute(text("UPDATE counter SET n = n + 1000")), attempts=1)
            waits.append(time.monotonic() - started)
        assert all(hog.is_alive() for hog in hogs)
    finally:
        for hog in hogs:
            hog.terminate()
            hog.join(10)
    assert max(waits) < 2.0, waits
