"""The bounce report's roll-up writer: bounce activities folded into per-day counts.

The bounce report ("Bounce House", seed 001) reads per-day rollups (``bounce_rollup`` per
account, day, mailing, kind, category and reason; ``domain_rollup`` per receiving domain and
remote MTA, ``storage/report_tables.py``) instead of the whole activity history, so it
answers in milliseconds however long the history. :func:`refresh_rollups` folds the
activities above a watermark into them, in chunks, each in one write transaction with the
watermark's move, so a crash never counts an activity twice or skips one. The reports
(``services.reports``) only read: the rollups plus the same groups computed on the fly for
the activities above the watermark, in one statement, so they are exact however far the
fold lags. Writers fold: ``mailcarrier serve``'s hit-writer process runs
:func:`fold_periodically`, and ``mailcarrier report bounces`` folds before reading.
"""

from __future__ import annotations

import logging
import threading
from datetime import date
from typing import Any

from sqlalchemy import Connection, Engine, Select, and_, case, func, select, text
from sqlalchemy.dialects import postgresql, sqlite

from mailcarrier.storage.engine import run_write
from mailcarrier.storage.report_tables import bounce_rollup, domain_rollup, report_watermarks
from mailcarrier.storage.tables import activities, contacts

__all__ = ["BOUNCE_KINDS", "as_date", "fold_periodically", "refresh_rollups", "unfolded_bounce_groups",
           "unfolded_domain_groups", "unfolded_window"]

BOUNCE_KINDS = ("hard_bounce", "soft_bounce")
_WATERMARK = "bounce_rollup"
_ROLLUP_CHUNK = 50_000
_log = logging.getLogger("mailcarrier.reports")


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
    a = activities.c
    if conn.execute(select(a.id).where(a.id > last).limit(1)).first() is None:
        return 0  # nothing new: answer without taking the table lock below
    if conn.dialect.name == "postgresql":
        conn.execute(text("LOCK TABLE activities IN SHARE MODE"))
    top = conn.execute(select(func.max(a.id)).where(a.id > last)).scalar()
    if top is None:
        return 0
    top = min(int(top), last + _ROLLUP_CHUNK)
    window = and_(a.id > last, a.id <= top, a.type.in_(BOUNCE_KINDS))
    daily = [{"account_id": acc, "day": as_date(dd), "mailing_id": int(mid), "kind": kind,
              "category": int(cat or 9), "reason": reason or "undefined", "count": int(n)}
             for acc, dd, mid, kind, cat, reason, n in conn.execute(
                 _bounce_groups(conn.dialect.name, window))]
    by_domain = [{"account_id": acc, "day": as_date(dd), "domain": dom or "",
                  "remote_mta": (mta or "")[:255], "bounces": int(n), "hard": int(hard or 0),
                  "filtered": int(filt or 0)}
                 for acc, dd, dom, mta, n, hard, filt in conn.execute(
                     _domain_groups(conn.dialect.name, window))]
    _upsert(conn, bounce_rollup, daily,
            ["account_id", "day", "mailing_id", "kind", "category", "reason"], ["count"])
    _upsert(conn, domain_rollup, by_domain, ["account_id", "day", "domain", "remote_mta"],
            ["bounces", "hard", "filtered"])
    conn.execute(report_watermarks.update().where(w.name == _WATERMARK).values(last_id=top))
    return top - last


def _bounce_groups(dialect: str, window: Any) -> Select[Any]:
    """Bounce activities in ``window`` counted per account, day, mailing, kind, category, reason.

    The fold writes these groups into ``bounce_rollup``; the report reads the same groups
    for the activities not folded yet (:func:`unfolded_window`), so both count alike.
    """
    a = activities.c
    day = _day(dialect)
    mailing = func.coalesce(a.mailing_id, 0)
    return (select(a.account_id, day.label("day"), mailing.label("mailing_id"), a.type.label("kind"),
                   a.category, a.reason, func.count().label("count"))
            .where(window).group_by(a.account_id, day, mailing, a.type, a.category, a.reason))


def _domain_groups(dialect: str, window: Any) -> Select[Any]:
    """Bounce activities in ``window`` counted per account, day, receiving domain and remote MTA."""
    a, c = activities.c, contacts.c
    day = _day(dialect)
    filtered = case((a.details["suspected_filtering"].as_boolean() == True, 1), else_=0)  # noqa: E712
    return (select(a.account_id, day.label("day"), c.domain, a.remote_mta,
                   func.count().label("bounces"),
                   func.sum(case((a.type == "hard_bounce", 1), else_=0)).label("hard"),
                   func.sum(filtered).label("filtered"))
            .select_from(activities.join(contacts, contacts.c.id == a.contact_id))
            .where(window).group_by(a.account_id, day, c.domain, a.remote_mta))


def unfolded_window(dialect: str, account_id: int, since: date, until: date) -> Any:
    """The account's bounce activities of the period above the watermark (not folded yet).

    Used inside the same statement as the rollup rows, so both come from one snapshot: a
    fold committing meanwhile moves activities from this window into the rollups at once,
    and the sum of the two stays exact without the reader writing anything.
    """
    a, w = activities.c, report_watermarks.c
    last = func.coalesce(select(w.last_id).where(w.name == _WATERMARK).scalar_subquery(), 0)
    day = _day(dialect)
    return and_(a.id > last, a.account_id == account_id, a.type.in_(BOUNCE_KINDS),
                day >= since, day <= until)


def unfolded_bounce_groups(dialect: str, account_id: int, since: date, until: date) -> Select[Any]:
    """Read-only: :func:`_bounce_groups` of the activities above the watermark (see the report)."""
    return _bounce_groups(dialect, unfolded_window(dialect, account_id, since, until))


def unfolded_domain_groups(dialect: str, account_id: int, since: date, until: date) -> Select[Any]:
    """Read-only: :func:`_domain_groups` of the activities above the watermark."""
    return _domain_groups(dialect, unfolded_window(dialect, account_id, since, until))


def fold_periodically(engine: Engine, stop: threading.Event, interval: float = 30.0) -> None:
    """Fold the rollups every ``interval`` seconds until ``stop`` is set.

    Keeps the unfolded tail that every bounce report aggregates on the fly small. A failed
    fold (the database busy or away) is logged and tried again next time: the reports stay
    exact without it, only slower as the tail grows, so it must never end the loop.
    """
    while not stop.wait(interval):
        try:
            refresh_rollups(engine)
        except Exception as error:  # logged; the next round retries
            _log.warning("bounce rollups not folded, retrying in %.0f s: %s", interval, error,
                         extra={"event": "reports.fold_failed"})


def _day(dialect: str) -> Any:
    a = activities.c
    if dialect == "sqlite":
        return func.date(a.occurred_at)
    return func.date(func.timezone("UTC", a.occurred_at))


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
