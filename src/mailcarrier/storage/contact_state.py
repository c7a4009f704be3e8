"""The contact event writer's SQL: read states, write the changed ones, append the history.

Every delivery outcome, bounce, open and click passes through here, so this path is written
for throughput (bench/store.py applies a million events): driver-level SQL without
SQLAlchemy's per-value processing, one statement per group of rows rather than per row, and
only the columns that really change are written:

* on SQLite each SET column costs a rewrite of every index covering it, even for an equal
  value; on PostgreSQL fewer columns mean less per-row work in the UPDATE;
* rows are grouped by which columns change (a routine delivery changes one or two), so a
  batch is a handful of prepared statements.

Updates are optimistic: a row is written only if its ``version`` is still the one read; the
caller rolls back and retries when a row did not match (see :func:`write_states`). Every
function takes ``account_id`` and filters by it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import cache
from operator import attrgetter
from typing import Any, NamedTuple

from sqlalchemy import Connection

from mailcarrier.domain.contact_status import ContactState
from mailcarrier.domain.vocabulary import ContactStatus

__all__ = [
    "BOUNCE_FIELDS",
    "LatestBounce",
    "NewActivity",
    "StateWrite",
    "VersionedState",
    "append_activities",
    "load_states",
    "write_states",
]


class VersionedState(NamedTuple):
    """A contact's policy state plus the row version it was read at.

    (The event path's records are named tuples: one of each is built per event, and a frozen
    dataclass costs several times as much to build.)"""

    contact_id: int
    version: int
    state: ContactState


class LatestBounce(NamedTuple):
    """A contact's latest-bounce fields, in the order of :data:`BOUNCE_FIELDS`."""

    at: datetime
    category: int | None
    reason: str | None
    reply_code: int | None
    enhanced_status: str | None
    diagnostic: str | None
    remote_mta: str | None
    mailing_id: int | None


BOUNCE_FIELDS = ("last_bounce_at", "last_bounce_category", "last_bounce_reason",
                 "last_bounce_reply_code", "last_bounce_enhanced_status", "last_bounce_diagnostic",
                 "last_bounce_remote_mta", "last_bounce_mailing_id")


class StateWrite(NamedTuple):
    """What a batch of events did to one contact: its state before and after, whether the
    status moved at some point (``status_changed_at`` is then set), and the batch's latest
    bounce for it, if any."""

    contact_id: int
    expected_version: int
    before: ContactState
    after: ContactState
    status_changed: bool = False
    bounce: LatestBounce | None = None


class NewActivity(NamedTuple):
    """One history entry to append, in the column order of the statements below."""

    account_id: int
    contact_id: int
    mailing_id: int | None
    delivery_id: int | None
    category: int | None
    reply_code: int | None
    type: str
    reason: str | None
    enhanced_status: str | None
    diagnostic: str | None
    remote_mta: str | None
    cause: str | None
    occurred_at: datetime
    details: dict[str, Any] | None


_ACTIVITY_NAMES = ", ".join(NewActivity._fields)


def load_states(conn: Connection, account_id: int,
                contact_ids: Iterable[int]) -> dict[int, VersionedState]:
    """Current policy state of the account's contacts among ``contact_ids``.

    Rows are locked in id order (``FOR UPDATE`` on PostgreSQL, so concurrent writers queue
    instead of retrying; SQLite serialises writers with BEGIN IMMEDIATE). The version check
    in :func:`write_states` remains the guard either way.
    """
    wanted = sorted(set(contact_ids))
    found: dict[int, VersionedState] = {}
    sqlite = conn.dialect.name == "sqlite"
    read_time = _sqlite_time if sqlite else _aware_utc
    # The driver's own cursor and fetchall: SQLAlchemy's result object fetched row by row
    # and cost as much as the query (the connection's transaction is the same either way).
    driver = conn.connection.driver_connection
    assert driver is not None
    cursor = driver.cursor()
    try:
        for start in range(0, len(wanted), 900):
            chunk = wanted[start:start + 900]
            # ``account_id + 0`` keeps both planners on the primary key: with a plain
            # ``account_id = ?`` SQLite walks an (account_id, ...) index over every contact
            # of the account for each chunk, and PostgreSQL (before ANALYZE has run on a
            # fresh import) ANDs a bitmap of that whole index with the ids.
            if sqlite:
                marks = ",".join("?" * len(chunk))
                cursor.execute(f"{_LOAD_STATES} WHERE id IN ({marks}) AND account_id + 0 = ? "
                               "ORDER BY id", (*chunk, account_id))
            else:
                cursor.execute(f"{_LOAD_STATES} WHERE id = ANY(%s) AND account_id + 0 = %s "
                               "ORDER BY id FOR UPDATE", (chunk, account_id))
            for (cid, version, status, invalid, soft, blocks, total, delivered,
                 engaged, suspected) in cursor.fetchall():
                found[cid] = VersionedState(cid, version, ContactState(
                    _STATUSES[status], bool(invalid), soft, blocks, total,
                    read_time(delivered), read_time(engaged), bool(suspected)))
    finally:
        cursor.close()
    return found


_STATUSES = {status.value: status for status in ContactStatus}  # faster than ContactStatus(...)
_LOAD_STATES = ("SELECT id, version, status, email_invalid, consecutive_soft_bounces, "
                "consecutive_blocks, total_bounces, last_delivered_at, last_engaged_at, suspected_filtering "
                "FROM contacts")


def write_states(conn: Connection, account_id: int, writes: Sequence[StateWrite],
                 now: datetime) -> bool:
    """Write each contact's changed columns if its version is unchanged.

    Returns False when some row's version had moved (another writer got there first): the
    caller rolls the transaction back and retries. A contact whose state, status and latest
    bounce did not change is not written at all.
    """
    groups: dict[tuple[tuple[str, ...], bool, bool], list[StateWrite]] = {}
    for write in writes:
        changed = _changed_columns(write)
        if changed or write.bounce is not None or write.status_changed:
            groups.setdefault((changed, write.bounce is not None, write.status_changed),
                              []).append(write)
    sqlite = conn.dialect.name == "sqlite"
    written = expected = 0
    for (changed, bounce, status_changed), members in groups.items():
        members.sort(key=_by_contact)  # one sweep through the table's pages, in id order
        columns = (*changed, *BOUNCE_FIELDS) if bounce else changed
        write_group = _write_group_sqlite if sqlite else _write_group_pg
        written += write_group(conn, account_id, columns, status_changed, members, now)
        expected += len(members)
    return written == expected


_STATE_COLUMNS = ("status", "email_invalid", "consecutive_soft_bounces", "consecutive_blocks",
                  "total_bounces", "last_delivered_at", "last_engaged_at", "suspected_filtering")
_state_values = attrgetter(*_STATE_COLUMNS)


def _changed_columns(write: StateWrite) -> tuple[str, ...]:
    return tuple(name for name, old, new in zip(_STATE_COLUMNS, _state_values(write.before),
                                                _state_values(write.after), strict=True)
                 if old != new)


def _by_contact(write: StateWrite) -> int:
    return write.contact_id


def _row_values(write: StateWrite, columns: tuple[str, ...]) -> list[Any]:
    """The new values of ``columns`` for one contact (state fields, then bounce fields)."""
    state = write.after
    values: list[Any] = [getattr(state, name) for name in columns if name in _STATE_SET]
    if write.bounce is not None and len(values) < len(columns):
        values.extend(write.bounce)
    return values


_STATE_SET = frozenset(_STATE_COLUMNS)
_TIMES = frozenset({"last_delivered_at", "last_engaged_at", "last_bounce_at"})


def _write_group_sqlite(conn: Connection, account_id: int, columns: tuple[str, ...],
                        status_changed: bool, members: list[StateWrite], now: datetime) -> int:
    convert = _sqlite_converters(columns)
    stamp = _sqlite_text(now)
    tail: tuple[Any, ...] = (stamp, stamp) if status_changed else (stamp,)
    params = [(*[to(value) for to, value in zip(convert, _row_values(w, columns), strict=True)],
               *tail, w.contact_id, account_id, w.expected_version) for w in members]
    cursor = conn.exec_driver_sql(_sqlite_update(columns, status_changed), params)
    return int(cursor.rowcount)


@cache
def _sqlite_update(columns: tuple[str, ...], status_changed: bool) -> str:
    assignments = "".join(f"{name} = ?, " for name in columns)
    if status_changed:
        assignments += "status_changed_at = ?, "
    return (f"UPDATE contacts SET {assignments}updated_at = ?, version = version + 1 "
            "WHERE id = ? AND account_id = ? AND version = ?")


@cache
def _sqlite_converters(columns: tuple[str, ...]) -> tuple[Callable[[Any], Any], ...]:
    def for_column(name: str) -> Callable[[Any], Any]:
        if name in _TIMES:
            return _sqlite_text
        if name == "status":
            return attrgetter("value")
        if name in ("email_invalid", "suspected_filtering"):
            return int
        return _same
    return tuple(for_column(name) for name in columns)


def _same(value: Any) -> Any:
    return value


def _write_group_pg(conn: Connection, account_id: int, columns: tuple[str, ...],
                    status_changed: bool, members: list[StateWrite], now: datetime) -> int:
    """One UPDATE ... FROM unnest(arrays): the group's values travel as typed arrays, one per
    column, sent in binary (``%b``: the text form escaped every element with a regular
    expression in Python), so nothing is formatted or parsed as text."""
    rows = [_row_values(w, columns) for w in members]
    arrays: list[list[Any]] = [[w.contact_id for w in members],
                               [w.expected_version for w in members]]
    for index, name in enumerate(columns):
        column = [row[index] for row in rows]
        if name == "status":
            column = [value.value for value in column]
        elif name in _TIMES:
            for value in column:
                _refuse_naive(value)
        arrays.append(column)
    params: dict[str, Any] = {f"c{i}": array for i, array in enumerate(arrays)}
    params.update(account_id=account_id, now=_refuse_naive(now))
    return int(conn.exec_driver_sql(_pg_update(columns, status_changed), params).rowcount)


_PG_TYPES = {
    "status": "text", "email_invalid": "boolean", "consecutive_soft_bounces": "int",
    "consecutive_blocks": "int", "total_bounces": "int", "last_delivered_at": "timestamptz",
    "last_engaged_at": "timestamptz", "last_bounce_at": "timestamptz",
    "suspected_filtering": "boolean",
    "last_bounce_category": "int", "last_bounce_reason": "text", "last_bounce_reply_code": "int",
    "last_bounce_enhanced_status": "text", "last_bounce_diagnostic": "text",
    "last_bounce_remote_mta": "text", "last_bounce_mailing_id": "bigint",
}


@cache
def _pg_update(columns: tuple[str, ...], status_changed: bool) -> str:
    names = ("contact_id", "expected_version", *columns)
    types = ("bigint", "int", *(_PG_TYPES[name] for name in columns))
    arrays = ", ".join(f"%(c{i})b::{kind}[]" for i, kind in enumerate(types))
    assignments = "".join(f"{name} = b.{name}, " for name in columns)
    if status_changed:
        assignments += "status_changed_at = %(now)s, "
    return (f"UPDATE contacts SET {assignments}updated_at = %(now)s, "
            f"version = contacts.version + 1 FROM unnest({arrays}) AS b({', '.join(names)}) "
            "WHERE contacts.id = b.contact_id AND contacts.account_id = %(account_id)s "
            "AND contacts.version = b.expected_version")


def append_activities(conn: Connection, rows: Sequence[NewActivity]) -> None:
    """Append history entries.

    SQLite: one prepared INSERT run by the driver's ``executemany`` (in-process, no round
    trips). PostgreSQL: ``COPY ... FROM STDIN`` in the open transaction, the server's bulk
    path. Entries go in contact order (stable: one contact's entries keep their order), so
    the per-contact index is filled in one sweep rather than at random places.
    """
    if not rows:
        return
    ordered = sorted(rows, key=_activity_contact)
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode
    if conn.dialect.name == "sqlite":
        values = [(*row[:-2], _sqlite_text(row.occurred_at),
                   None if row.details is None else dumps(row.details)) for row in ordered]
        marks = ", ".join("?" for _ in NewActivity._fields)
        conn.exec_driver_sql(f"INSERT INTO activities ({_ACTIVITY_NAMES}) VALUES ({marks})", values)
        return
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor, \
            cursor.copy(f"COPY activities ({_ACTIVITY_NAMES}) FROM STDIN") as copy:
        for row in ordered:
            _refuse_naive(row.occurred_at)
            copy.write_row((*row[:-1], None if row.details is None else dumps(row.details)))


def _activity_contact(row: NewActivity) -> int:
    return row.contact_id


def _refuse_naive(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("naive datetime refused: pass a timezone-aware UTC time")
    return value


def _sqlite_time(value: str | None) -> datetime | None:
    """A SQLite timestamp column (naive UTC text, as UTCDateTime stores it) read back aware."""
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _aware_utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _sqlite_text(value: datetime | None) -> str | None:
    """UTCDateTime's SQLite form (naive UTC, SQLAlchemy's ``YYYY-MM-DD HH:MM:SS.ffffff``).

    Written directly because the bound-parameter processors cost more than the statements
    on the event path; naive input is refused as UTCDateTime does.
    """
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime refused: pass a timezone-aware UTC time")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]  # without the "+00:00"
