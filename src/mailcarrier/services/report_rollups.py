"""The bounce report's roll-up writer: bounce activities folded into per-day counts.

The bounce report ("Bounce House", seed 001) reads per-day rollups (``bounce_rollup`` per
account, day, mailing, kind, category and reason; ``domain_rollup`` per receiving domain and
remote MTA, ``storage/report_tables.py``) instead of the whole activity history, so it
answers in milliseconds however long the history. :func:`refresh_rollups` folds the
activities above a watermark into them, in chunks, each in one write transaction with the
watermark's move, so a crash never counts an activity twice or skips one. The reports
(``services.reports``) only read.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, func, select, text
from sqlalchemy.dialects import postgresql, sqlite

from mailcarrier.storage.engine import run_write
from mailcarrier.storage.report_tables import bounce_rollup, domain_rollup, report_watermarks
from mailcarrier.storage.tables import activities, contacts

__all__ = ["BOUNCE_KINDS", "as_date", "refresh_rollups"]

BOUNCE_KINDS = ("hard_bounce", "soft_bounce")
_WATERMARK = "bounce_rollup"
_ROLLUP_CHUNK = 50_000


def refresh_rollups(engine: Engine) -> int:
    """Fold bounce activities above the watermark into the rollups; returns how many were folded.

    On PostgreSQL the highest id is read under a SHARE lock on ``activities``, which waits
    for in-flight inserting transactions to commit, so no row with a lower id can commit
    after the watermark passes it. SQLite has one writer at a time, so ids commit in order.
    """
    folded = 0
    while True:
        done = run_write(engine, _fold_chunk, what="folding bounce rollups")
        if done == 0:
            return folded
        folded += done


def _fold_chunk(conn: Connection) -> int:
    w = report_watermarks.c
    _upsert(conn, report_watermarks, [{"name": _WATERMARK, "last_id": 0}], ["name"], [])
    # The row lock makes concurrent refreshes take turns (SQLite: BEGIN IMMEDIATE does).
    last = int(conn.execute(select(w.last_id).where(w.name == _WATERMARK).with_for_update())
               .scalar_one())
    a, c = activities.c, contacts.c
    if conn.execute(select(a.id).where(a.id > last).limit(1)).first() is None:
        return 0  # nothing new: answer without taking the table lock below
    if conn.dialect.name == "postgresql":
        conn.execute(text("LOCK TABLE activities IN SHARE MODE"))
    top = conn.execute(select(func.max(a.id)).where(a.id > last)).scalar()
    if top is None:
        return 0
    top = min(int(top), last + _ROLLUP_CHUNK)
    window = and_(a.id > last, a.id <= top, a.type.in_(BOUNCE_KINDS))
    day = _day(conn)
    mailing = func.coalesce(a.mailing_id, 0).label("mailing")
    daily = [{"account_id": acc, "day": as_date(dd), "mailing_id": int(mid), "kind": kind,
              "category": int(cat or 9), "reason": reason or "undefined", "count": int(n)}
             for acc, dd, mid, kind, cat, reason, n in conn.execute(
                 select(a.account_id, day, mailing, a.type, a.category, a.reason, func.count())
                 .where(window).group_by(a.account_id, day, mailing, a.type, a.category, a.reason))]
    filtered = case((a.details["suspected_filtering"].as_boolean() == True, 1), else_=0)  # noqa: E712
    by_domain = [{"account_id": acc, "day": as_date(dd), "domain": dom or "",
                  "remote_mta": (mta or "")[:255], "bounces": int(n), "hard": int(hard or 0),
                  "filtered": int(filt or 0)}
                 for acc, dd, dom, mta, n, hard, filt in conn.execute(
                     select(a.account_id, day, c.domain, a.remote_mta, func.count(),
                            func.sum(case((a.type == "hard_bounce", 1), else_=0)), func.sum(filtered))
                     .select_from(activities.join(contacts, contacts.c.id == a.contact_id))
                     .where(window).group_by(a.account_id, day, c.domain, a.remote_mta))]
    _upsert(conn, bounce_rollup, daily,
            ["account_id", "day", "mailing_id", "kind", "category", "reason"], ["count"])
    _upsert(conn, domain_rollup, by_domain, ["account_id", "day", "domain", "remote_mta"],
            ["bounces", "hard", "filtered"])
    conn.execute(report_watermarks.update().where(w.name == _WATERMARK).values(last_id=top))
    return top - last


def _day(conn: Connection) -> Any:
    a = activities.c
    if conn.dialect.name == "sqlite":
        return func.date(a.occurred_at).label("day")
    return func.date(func.timezone("UTC", a.occurred_at)).label("day")


def as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _upsert(conn: Connection, table: Any, rows: list[dict[str, Any]], keys: list[str],
            add: list[str]) -> None:
    """Insert rows; on a key conflict add the ``add`` columns to the stored ones."""
    if not rows:
        return
    dialect_insert = sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert
    statement = dialect_insert(table)
    if add:
        statement = statement.on_conflict_do_update(
            index_elements=keys, set_={col: table.c[col] + statement.excluded[col] for col in add})
    else:
        statement = statement.on_conflict_do_nothing(index_elements=keys)
    conn.execute(statement, rows)
