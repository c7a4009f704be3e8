"""Engine construction for the two supported backends.

SQLite is the embedded default (one file, WAL so readers never block the writer);
PostgreSQL (psycopg 3) is the scale-out backend. Nothing connects at import time.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from mailcarrier.config import Settings
from mailcarrier.domain.errors import UnavailableError

__all__ = [
    "WRITE_ATTEMPTS",
    "DatabaseNotInitialisedError",
    "DatabaseUnreachableError",
    "StaleWriteError",
    "is_sqlite",
    "is_transient",
    "make_engine",
    "run_write",
    "unreachable_database",
    "write_transaction",
]

_log = logging.getLogger("mailcarrier.storage")
_T = TypeVar("_T")

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: How many times :func:`run_write` runs a unit of work that met a lock or serialization failure.
WRITE_ATTEMPTS = 8
#: First pause between two runs (doubled each time, with jitter), and the longest one.
WRITE_BACKOFF_SECONDS = 0.05
WRITE_BACKOFF_MAX_SECONDS = 2.0
#: SQLite primary result codes of a lock held by another connection (SQLITE_BUSY, SQLITE_LOCKED).
_SQLITE_LOCK_CODES = (5, 6)
#: PostgreSQL: serialization failure, deadlock detected, lock not available.
_PG_TRANSIENT_STATES = ("40001", "40P01", "55P03")
SQLITE_CHECKPOINT_PAGES = 100_000  # ~400 MB of WAL with 4 KiB pages
SQLITE_WAL_KEEP_BYTES = 64 * 1024 * 1024


def is_sqlite(engine: Engine) -> bool:
    """True when the engine talks to SQLite (single writer, no SKIP LOCKED)."""
    return engine.dialect.name == "sqlite"


class DatabaseUnreachableError(UnavailableError):
    """The database cannot be reached or opened (server down, wrong URL, a directory that
    cannot be created): the message names the URL, password masked, and what to check."""


class DatabaseNotInitialisedError(UnavailableError):
    """The database answers but has no mailcarrier tables (``mailcarrier db upgrade`` was never
    run on it, or it is another application's database): the message says what to run."""


#: Attribute set on a connection failure of an engine made here: the URL, password masked.
_UNREACHABLE_URL = "mailcarrier_unreachable_url"
#: Attribute set on a statement that met a missing table: the URL, password masked.
_NO_SCHEMA_URL = "mailcarrier_no_schema_url"
#: SQLite's words and PostgreSQL's SQLSTATE for a table that does not exist.
_SQLITE_NO_TABLE = "no such table"
_PG_UNDEFINED_TABLE = "42P01"


def make_engine(source: Settings | str, *, echo: bool = False) -> Engine:
    """Build an engine from settings or a database URL, with per-backend pragmas. A failure
    to connect stays the driver's OperationalError (the worker's loops retry on it), marked so
    that :func:`unreachable_database` can word it for a person."""
    url_text = source.resolved_database_url() if isinstance(source, Settings) else source
    url = make_url(url_text)
    if url.get_backend_name() == "sqlite":
        engine = _sqlite_engine(url_text, echo=echo)
    else:
        if url.get_backend_name() == "postgresql" and url.get_driver_name() in ("psycopg2", "postgresql"):
            url = url.set(drivername="postgresql+psycopg")
        engine = create_engine(url, echo=echo, pool_pre_ping=True)
    shown = url.render_as_string(hide_password=True)

    @event.listens_for(engine, "handle_error")
    def _mark_unreachable(context: ExceptionContext) -> None:
        if context.connection is None:  # the error happened while connecting
            setattr(context.sqlalchemy_exception, _UNREACHABLE_URL, shown)
        elif _is_missing_table(context.original_exception):
            setattr(context.sqlalchemy_exception, _NO_SCHEMA_URL, shown)

    return engine


def _is_missing_table(error: BaseException) -> bool:
    if getattr(error, "sqlstate", None) == _PG_UNDEFINED_TABLE:
        return True
    return isinstance(error, sqlite3.OperationalError) and str(error).startswith(_SQLITE_NO_TABLE)


def unreachable_database(error: BaseException) -> UnavailableError | None:
    """``error`` worded for a person if it is a failure to connect to the database, or a
    database without our tables (an engine of :func:`make_engine`), else None."""
    if isinstance(error, DatabaseUnreachableError | DatabaseNotInitialisedError):
        return error
    bare = getattr(error, _NO_SCHEMA_URL, None)
    if isinstance(bare, str):
        return DatabaseNotInitialisedError(
            f"the database {bare} has no mailcarrier tables yet; run `mailcarrier db upgrade` "
            "(same settings) to create them, or check MAILCARRIER_DATABASE_URL / MAILCARRIER_DATA_DIR "
            "if it should be another database")
    url = getattr(error, _UNREACHABLE_URL, None)
    if not isinstance(url, str):
        return None
    cause = error.orig if isinstance(error, DBAPIError) else error
    reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    check = ("that its directory exists and is writable (MAILCARRIER_DATA_DIR, MAILCARRIER_DATABASE_URL)"
             if url.startswith("sqlite") else
             "that the server is running and accepts connections there, and MAILCARRIER_DATABASE_URL "
             "(or --database-url)")
    return DatabaseUnreachableError(f"cannot connect to the database {url}: {reason}; check {check}")


def _sqlite_engine(url_text: str, *, echo: bool) -> Engine:
    url = make_url(url_text)
    if url.database and url.database != ":memory:":
        folder = Path(url.database).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DatabaseUnreachableError(
                f"cannot create {folder}, the directory of the SQLite database {url_text}: "
                f"{error.strerror or error}; check MAILCARRIER_DATA_DIR (or MAILCARRIER_DATABASE_URL) "
                "and the permissions of its parent") from None
    engine = create_engine(url, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin, so that
        # BEGIN IMMEDIATE can be issued for writers (see ``begin_write``).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Checkpoint every ~400 MB of WAL instead of every 4 MB: bulk writers (contact
        # import, contact event batches) touch pages all over the contact table and its
        # indexes, and a page changed by several batches between two checkpoints is copied
        # back to the database file once. Contact events in no order went from ~14,400 to
        # ~18,000/s between an 80 MB and a 400 MB interval (1M contacts), and a 1M-row import
        # from ~35k to ~55k rows/s between 4 MB and 80 MB. The WAL file is cut back to
        # 64 MB after each checkpoint, so a quiet database does not keep 400 MB on disk.
        # (A larger page cache gained little more and multiplied the worker's memory by its
        # pooled connections, so it stays at the default.) WAL with synchronous=NORMAL
        # survives a crash of the process; an OS crash may lose the last commits, never
        # the file.
        cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_CHECKPOINT_PAGES}")
        cursor.execute(f"PRAGMA journal_size_limit={SQLITE_WAL_KEEP_BYTES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        if mode == "IMMEDIATE":
            _take_write_lock(connection.connection.driver_connection)
        else:
            connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


#: After a process released the write lock, its next write waits this long before asking
#: again, so that writers of other processes waiting for the lock get it in turn.
SQLITE_HANDOFF_SECONDS = 0.005
#: How often a writer waiting for the lock asks again (from the first to the longest pause).
SQLITE_POLL_SECONDS = (0.0005, 0.002)
_handoff = threading.Lock()
_last_release = [0.0]


def _take_write_lock(raw: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``, waiting for the write lock in turn with the other writers.

    SQLite's own busy handler polls every 100 ms once it has waited a while: a writer that
    commits and begins again at once (an import, a worker) then nearly always wins the lock
    over one already waiting, which may wait out the whole busy timeout (an inbound email
    not acknowledged for a minute, an API write failing). Here the waiting writer asks every
    millisecond or two, and a process that just released the lock lets
    ``SQLITE_HANDOFF_SECONDS`` pass before asking again, so the lock goes round. After the
    busy timeout the usual "database is locked" error is raised (:func:`run_write` retries).
    """
    with _handoff:
        pause = SQLITE_HANDOFF_SECONDS - (time.monotonic() - _last_release[0])
    if pause > 0:
        time.sleep(pause)
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    wait = SQLITE_POLL_SECONDS[0]
    raw.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not is_transient(exc) or time.monotonic() >= deadline:
                    raise OperationalError("BEGIN IMMEDIATE", None, exc) from exc
            time.sleep(wait)
            wait = min(SQLITE_POLL_SECONDS[1], wait * 1.5)
    finally:
        raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


def _released_write_lock() -> None:
    with _handoff:
        _last_release[0] = time.monotonic()


class StaleWriteError(Exception):
    """Raised inside a unit of work given to :func:`run_write` to have it rolled back and run again.

    For optimistic checks that found a row changed by a concurrent writer (PostgreSQL
    version columns): the remedy is the same as for a serialization failure.
    """


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` says another writer was in the way and running the work again is the remedy.

    SQLite: "database is locked" / "database table is locked" (SQLITE_BUSY, SQLITE_LOCKED and
    their extended codes), which a deferred transaction meets when it tries to write after a
    concurrent commit, or any transaction once the busy timeout ran out. PostgreSQL:
    serialization failure (40001), deadlock (40P01), lock not available (55P03).
    """
    if isinstance(exc, StaleWriteError):
        return True
    original = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(original, sqlite3.OperationalError):
        code = getattr(original, "sqlite_errorcode", None)
        if code is not None:
            return (int(code) & 0xFF) in _SQLITE_LOCK_CODES
        text = str(original).lower()
        return "locked" in text or "busy" in text
    return getattr(original, "sqlstate", None) in _PG_TRANSIENT_STATES


def run_write(engine: Engine, unit: Callable[[Connection], _T], *, what: str = "write",
              attempts: int = WRITE_ATTEMPTS, sleep: Callable[[float], None] = time.sleep) -> _T:
    """Run ``unit(conn)`` in one write transaction, again from the start after a transient failure.

    This is the one way a unit of work that writes reaches the database: on SQLite its
    transaction starts with ``BEGIN IMMEDIATE`` (the write lock is taken before the first
    read, waiting up to the busy timeout, so a read-decide-write cycle can neither interleave
    with another writer nor fail to upgrade its lock half-way); on PostgreSQL it is a plain
    transaction. A lock or serialization failure (:func:`is_transient`) rolls the whole unit
    back and runs it again after a growing, jittered pause, at most ``attempts`` times; the
    last failure is then raised unchanged, so long-running loops can log it and carry on.
    ``unit`` must therefore have no effect outside the database before it returns.
    """
    for attempt in range(1, attempts + 1):
        try:
            with write_transaction(engine) as conn:
                return unit(conn)
        except Exception as exc:
            if not is_transient(exc) or attempt == attempts:
                raise
            pause = min(WRITE_BACKOFF_MAX_SECONDS, WRITE_BACKOFF_SECONDS * 2 ** (attempt - 1))
            pause *= 0.5 + random.random()  # jitter, so writers that collided do not collide again
            _log.warning("%s met a concurrent writer (attempt %d of %d), again in %.2f s: %s",
                         what, attempt, attempts, pause, str(exc).splitlines()[0][:200],
                         extra={"event": "storage.write_retry"})
            sleep(pause)
    raise AssertionError("unreachable: the last attempt returns or raises")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A read-decide-write transaction: ``BEGIN IMMEDIATE`` on SQLite, a plain one elsewhere.

    On SQLite a deferred transaction that reads and then writes can fail to upgrade its lock
    when another writer got in between; taking the write lock first makes the cycle atomic.
    Commits on normal exit (unless the body already rolled back), rolls back on error. It
    does not retry (a ``with`` body cannot be run again): prefer :func:`run_write`.
    """
    options = {"sqlite_begin": "IMMEDIATE"} if is_sqlite(engine) else {}
    conn = engine.connect().execution_options(**options)
    try:
        conn.begin()
        try:
            yield conn
        except BaseException:
            if conn.in_transaction():
                conn.rollback()
            raise
        if conn.in_transaction():
            conn.commit()
    finally:
        conn.close()
        if options:
            _released_write_lock()

