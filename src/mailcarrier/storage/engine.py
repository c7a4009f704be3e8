"""Engine construction for the two supported backends.

SQLite is the embedded default (one file, WAL so readers never block the writer);
PostgreSQL (psycopg 3) is the scale-out backend. Nothing connects at import time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

from mailcarrier.config import Settings

__all__ = ["is_sqlite", "make_engine", "write_transaction"]

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_CHECKPOINT_PAGES = 100_000  # ~400 MB of WAL with 4 KiB pages
SQLITE_WAL_KEEP_BYTES = 64 * 1024 * 1024


def is_sqlite(engine: Engine) -> bool:
    """True when the engine talks to SQLite (single writer, no SKIP LOCKED)."""
    return engine.dialect.name == "sqlite"


def make_engine(source: Settings | str, *, echo: bool = False) -> Engine:
    """Build an engine from settings or a database URL, with per-backend pragmas."""
    url_text = source.resolved_database_url() if isinstance(source, Settings) else source
    url = make_url(url_text)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url_text, echo=echo)
    if url.get_backend_name() == "postgresql" and url.get_driver_name() in ("psycopg2", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    return create_engine(url, echo=echo, pool_pre_ping=True)


def _sqlite_engine(url_text: str, *, echo: bool) -> Engine:
    url = make_url(url_text)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
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
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A read-decide-write transaction: ``BEGIN IMMEDIATE`` on SQLite, a plain one elsewhere.

    On SQLite a deferred transaction that reads and then writes can fail to upgrade its lock
    when another writer got in between; taking the write lock first makes the cycle atomic.
    Commits on normal exit (unless the body already rolled back), rolls back on error.
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

