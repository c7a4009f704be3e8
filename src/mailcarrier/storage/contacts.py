"""Contact rows and their activity history: the SQL behind the contact services.

Every function takes ``account_id`` and filters by it, so one account never reads or
changes another's rows. Status updates are optimistic: a row is written only if its
``version`` is still the one that was read (see :func:`write_states`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import DBAPIError

from mailcarrier.domain.contact_status import ContactState
from mailcarrier.domain.vocabulary import Category, ContactStatus
from mailcarrier.storage import schema
from mailcarrier.storage.tables import activities, contacts

__all__ = [
    "BOUNCE_FIELDS",
    "ActivityFilter",
    "ActivityRow",
    "VersionedState",
    "activity_history",
    "add_contact",
    "contact_id_by_email",
    "insert_activities",
    "is_transient_conflict",
    "load_states",
    "upsert_contacts",
    "write_states",
]


@dataclass(frozen=True, slots=True)
class VersionedState:
    """A contact's policy state plus the row version it was read at."""

    contact_id: int
    version: int
    state: ContactState


@dataclass(frozen=True, slots=True)
class ActivityFilter:
    """History filters (seed 001's smart-list filters); None means "any"."""

    types: tuple[str, ...] | None = None
    category: Category | None = None
    mailing_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 500


@dataclass(frozen=True, slots=True)
class ActivityRow:
    """One history entry as read back."""

    id: int
    account_id: int
    contact_id: int
    type: str
    occurred_at: datetime
    mailing_id: int | None
    delivery_id: int | None
    reason: str | None
    category: int | None
    reply_code: int | None
    enhanced_status: str | None
    diagnostic: str | None
    remote_mta: str | None
    cause: str | None
    details: dict[str, Any] | None


def is_transient_conflict(exc: BaseException) -> bool:
    """True when the database rolled the transaction back to break a deadlock or a
    serialization conflict (PostgreSQL 40P01 / 40001): running it again is the remedy.

    Imports lock existing contacts in address order and event batches in id order, so on
    PostgreSQL the two can deadlock; the server aborts one, which retries.
    """
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in ("40P01", "40001")


def add_contact(conn: Connection, account_id: int, email: str, now: datetime, *,
                first_name: str = "", last_name: str = "",
                fields: dict[str, Any] | None = None, consent_source: str = "unknown") -> int:
    """Insert one contact (address already normalised) and return its id."""
    key = conn.execute(contacts.insert().values(
        account_id=account_id, email=email, domain=email.rpartition("@")[2],
        first_name=first_name, last_name=last_name, fields=fields or {},
        consent_source=consent_source, created_at=now, updated_at=now)).inserted_primary_key
    assert key is not None
    return int(key[0])


def contact_id_by_email(conn: Connection, account_id: int, email: str) -> int | None:
    """The id of the account's contact with this (normalised) address, or None."""
    query = select(contacts.c.id).where(contacts.c.account_id == account_id,
                                        contacts.c.email == email)
    return conn.execute(query).scalar_one_or_none()


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
    for start in range(0, len(wanted), 900):
        chunk = wanted[start:start + 900]
        # Driver-level SQL: this read is on every event's path, and SQLAlchemy's per-value
        # result processing cost as much as the query. ``account_id + 0`` keeps both planners
        # on the primary key: with a plain ``account_id = ?`` SQLite walks an
        # (account_id, ...) index over every contact of the account for each chunk, and
        # PostgreSQL (before ANALYZE has run on a fresh import) ANDs a bitmap of that whole
        # index with the ids; either cost more than the rest of a batch with 1M contacts.
        if sqlite:
            marks = ",".join("?" * len(chunk))
            query = f"{_LOAD_STATES} WHERE id IN ({marks}) AND account_id + 0 = ? ORDER BY id"
            params: Any = (*chunk, account_id)
        else:
            query = (f"{_LOAD_STATES} WHERE id = ANY(%(ids)s) AND account_id + 0 = %(account_id)s "
                     "ORDER BY id FOR UPDATE")
            params = {"ids": chunk, "account_id": account_id}
        for (cid, version, status, invalid, soft, blocks, total, delivered,
             engaged) in conn.exec_driver_sql(query, params):
            found[cid] = VersionedState(cid, version, ContactState(
                status=ContactStatus(status), email_invalid=bool(invalid),
                consecutive_soft_bounces=soft, consecutive_blocks=blocks, total_bounces=total,
                last_delivered_at=read_time(delivered), last_engaged_at=read_time(engaged)))
    return found


_LOAD_STATES = ("SELECT id, version, status, email_invalid, consecutive_soft_bounces, "
                "consecutive_blocks, total_bounces, last_delivered_at, last_engaged_at FROM contacts")


def _sqlite_time(value: str | None) -> datetime | None:
    """A SQLite timestamp column (naive UTC text, as UTCDateTime stores it) read back aware."""
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _aware_utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def write_states(conn: Connection, account_id: int, rows: Sequence[dict[str, Any]]) -> int:
    """Write new states where the version is unchanged; returns how many rows matched.

    Each dict holds ``contact_id``, ``expected_version``, the :class:`ContactState` fields,
    the latest-bounce fields with ``keep_bounce`` (True: leave them as stored),
    ``status_changed_at`` (None: unchanged), ``now`` and optionally ``before`` (the
    :class:`ContactState` as read). A result lower than ``len(rows)`` means another writer got
    there first: the caller rolls back and retries.

    This path carries every delivery outcome, so it avoids per-row round trips. PostgreSQL:
    the batch is one JSON document expanded by the database (one UPDATE ... FROM
    jsonb_to_recordset). SQLite is in-process, so a prepared UPDATE run by the driver's
    ``executemany`` (a C loop, no JSON built or parsed) is the cheapest form; rows are grouped
    by which *indexed* state columns really change (compared with ``before``) and whether the
    latest-bounce fields change, and only those columns are SET: SQLite rewrites an index entry
    for every SET column even when the value is the same, and with a million contacts those
    random index writes were a large share of each batch. PostgreSQL compares values itself
    (HOT updates), so it gets one statement.
    """
    if not rows:
        return 0
    rows = sorted(rows, key=_by_contact)  # one sweep through the table's pages, in id order
    stamp = _time_text(conn)
    if conn.dialect.name == "sqlite":
        return _write_states_sqlite(conn, account_id, rows, stamp)
    # NULLs are left out of each row's object (jsonb_to_recordset reads a missing key as NULL):
    # most rows are deliveries with no bounce fields, so the document is half the size.
    payload = json.dumps([{
        **{name: value for name in _PG_STATE_KEYS if (value := row[name]) is not None},
        **{name: stamp(value) for name in _STATE_TIMES if (value := row[name]) is not None},
        "email_invalid": bool(row["email_invalid"]), "keep_bounce": bool(row["keep_bounce"]),
    } for row in rows], ensure_ascii=False, separators=(",", ":"))
    params = {"rows": payload, "account_id": account_id, "now": stamp(rows[0]["now"])}
    return int(conn.exec_driver_sql(_PG_WRITE_STATES, params).rowcount)


def _write_states_sqlite(conn: Connection, account_id: int, rows: Sequence[dict[str, Any]],
                         stamp: Callable[[datetime | None], str | None]) -> int:
    groups: dict[tuple[frozenset[str], bool], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((_unchanged_indexed(row), bool(row["keep_bounce"])), []).append(row)
    now = stamp(rows[0]["now"])
    written = 0
    for (keep, keep_bounce), members in groups.items():
        columns = _sqlite_set_columns(keep, keep_bounce)
        params = [(*[stamp(row[name]) if name in _STATE_TIMES else _sqlite_value(row[name])
                     for name in columns],
                   stamp(row["status_changed_at"]), now, row["contact_id"], account_id,
                   row["expected_version"]) for row in members]
        cursor = conn.exec_driver_sql(_sqlite_write_states(columns), params)
        written += int(cursor.rowcount)
    return written


def _sqlite_value(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


@functools.cache
def _sqlite_set_columns(keep: frozenset[str], keep_bounce: bool) -> tuple[str, ...]:
    """The columns an UPDATE must SET: state columns not in ``keep``, bounce fields if new."""
    state = tuple(name for name in _STATE_COLUMNS if name not in keep)
    return state if keep_bounce else (*state, *BOUNCE_FIELDS)


def _unchanged_indexed(row: dict[str, Any]) -> frozenset[str]:
    """The indexed state columns whose new value equals the stored one (all unknown: none)."""
    before: ContactState | None = row.get("before")
    if before is None:
        return frozenset()
    return frozenset(name for name in _INDEXED_STATE
                     if _stored(getattr(before, name)) == row[name])


def _stored(value: Any) -> Any:
    return value.value if isinstance(value, ContactStatus) else value


BOUNCE_FIELDS = ("last_bounce_at", "last_bounce_category", "last_bounce_reason",
                 "last_bounce_reply_code", "last_bounce_enhanced_status", "last_bounce_diagnostic",
                 "last_bounce_remote_mta", "last_bounce_mailing_id")
_STATE_INTS = ("consecutive_soft_bounces", "consecutive_blocks", "total_bounces",
               "last_bounce_category", "last_bounce_reply_code", "last_bounce_mailing_id")
_STATE_TIMES = ("last_delivered_at", "last_engaged_at", "last_bounce_at", "status_changed_at")
# The ContactState fields, as columns; those covered by an index (any feature's, hence
# ``schema``) are SET on SQLite only when they change (see write_states).
_STATE_COLUMNS = ("status", "email_invalid", "consecutive_soft_bounces", "consecutive_blocks",
                  "total_bounces", "last_delivered_at", "last_engaged_at")
_INDEXED_STATE = frozenset(_STATE_COLUMNS) & frozenset(
    column.name for index in schema.metadata.tables["contacts"].indexes for column in index.columns)
_BOUNCE_TEXTS = ("last_bounce_reason", "last_bounce_enhanced_status", "last_bounce_diagnostic",
                 "last_bounce_remote_mta")


@functools.cache
def _sqlite_write_states(columns: tuple[str, ...]) -> str:
    """The per-row SQLite UPDATE setting ``columns`` (then status_changed_at, updated_at)."""
    assignments = "".join(f"{name} = ?, " for name in columns)
    return (f"UPDATE contacts SET {assignments}"
            "status_changed_at = COALESCE(?, status_changed_at), updated_at = ?, "
            "version = version + 1 WHERE id = ? AND account_id = ? AND version = ?")


def _pg_write_states() -> str:
    columns = ", ".join(
        [f"{n} bigint" for n in ("contact_id", "expected_version", *_STATE_INTS)]
        + [f"{n} timestamptz" for n in _STATE_TIMES]
        + [f"{n} text" for n in ("status", *_BOUNCE_TEXTS)]
        + ["email_invalid boolean", "keep_bounce boolean"])
    bounce = ",\n    ".join(
        f"{name} = CASE WHEN b.keep_bounce THEN contacts.{name} ELSE b.{name} END"
        for name in BOUNCE_FIELDS)
    return f"""
UPDATE contacts SET status = b.status, email_invalid = b.email_invalid,
    consecutive_soft_bounces = b.consecutive_soft_bounces,
    consecutive_blocks = b.consecutive_blocks, total_bounces = b.total_bounces,
    last_delivered_at = b.last_delivered_at, last_engaged_at = b.last_engaged_at,
    {bounce},
    status_changed_at = COALESCE(b.status_changed_at, contacts.status_changed_at),
    updated_at = %(now)s::timestamptz, version = contacts.version + 1
FROM jsonb_to_recordset(%(rows)s::jsonb) AS b({columns})
WHERE contacts.id = b.contact_id AND contacts.account_id = %(account_id)s
  AND contacts.version = b.expected_version
"""


_PG_WRITE_STATES = _pg_write_states()
_PG_STATE_KEYS = ("contact_id", "expected_version", "status", *_STATE_INTS, *_BOUNCE_TEXTS)

_ACTIVITY_INTS = ("account_id", "contact_id", "mailing_id", "delivery_id", "category", "reply_code")
_ACTIVITY_TEXTS = ("type", "reason", "enhanced_status", "diagnostic", "remote_mta", "cause")
_ACTIVITY_COLUMNS = (*_ACTIVITY_INTS, *_ACTIVITY_TEXTS, "occurred_at", "details")


def insert_activities(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Append history entries (dicts keyed by the ``activities`` column names).

    SQLite: one prepared INSERT run by the driver's ``executemany`` (in-process, no round
    trips). PostgreSQL: ``COPY ... FROM STDIN`` in the open transaction, the server's bulk
    path (one stream per batch, no per-row statement or JSON document to parse).
    """
    if not rows:
        return
    # In contact order (stable: one contact's entries keep their order), so the per-contact
    # index is filled in one sweep rather than at random places; ids order nothing across
    # contacts, and the batch commits as a whole.
    rows = sorted(rows, key=_by_contact)
    stamp = _time_text(conn)
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode
    values = [(*[row.get(name) for name in _ACTIVITY_INTS],
               *[row.get(name) for name in _ACTIVITY_TEXTS], stamp(row["occurred_at"]),
               None if row.get("details") is None else dumps(row["details"]))
              for row in rows]
    names = ", ".join(_ACTIVITY_COLUMNS)
    if conn.dialect.name == "sqlite":
        marks = ", ".join("?" for _ in _ACTIVITY_COLUMNS)
        conn.exec_driver_sql(f"INSERT INTO activities ({names}) VALUES ({marks})", values)
        return
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor, cursor.copy(f"COPY activities ({names}) FROM STDIN") as copy:
        for value in values:
            copy.write_row(value)


def _by_contact(row: dict[str, Any]) -> int:
    return int(row["contact_id"])


def _time_text(conn: Connection) -> Callable[[datetime | None], str | None]:
    """Timestamps as each backend stores them (SQLite: SQLAlchemy's text form, naive UTC)."""
    if conn.dialect.name == "sqlite":
        return _sqlite_text

    def iso(value: datetime | None) -> str | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: pass a timezone-aware UTC time")
        return value.isoformat()
    return iso


def _sqlite_text(value: datetime | None) -> str | None:
    """UTCDateTime's SQLite form (naive UTC, SQLAlchemy's ``YYYY-MM-DD HH:MM:SS.ffffff``).

    Written directly because the bound-parameter processors cost more than the statements
    on the event path; naive input is refused as UTCDateTime does.
    """
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime refused: pass a timezone-aware UTC time")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def activity_history(conn: Connection, account_id: int, contact_id: int | None,
                     filters: ActivityFilter = ActivityFilter()) -> list[ActivityRow]:
    """The account's activities, newest first, optionally for one contact and filtered."""
    a = activities.c
    query = select(activities).where(a.account_id == account_id)
    if contact_id is not None:
        query = query.where(a.contact_id == contact_id)
    if filters.types:
        query = query.where(a.type.in_(filters.types))
    if filters.category is not None:
        query = query.where(a.category == int(filters.category))
    if filters.mailing_id is not None:
        query = query.where(a.mailing_id == filters.mailing_id)
    if filters.since is not None:
        query = query.where(a.occurred_at >= filters.since)
    if filters.until is not None:
        query = query.where(a.occurred_at < filters.until)
    query = query.order_by(a.occurred_at.desc(), a.id.desc()).limit(filters.limit)
    return [ActivityRow(**row._mapping) for row in conn.execute(query)]


def upsert_contacts(conn: Connection, account_id: int, audience_id: int,
                    rows: Sequence[dict[str, Any]], now: datetime) -> int:
    """Insert or update contacts by (account, email) and add them to the audience.

    Each row has ``email``, ``domain``, ``first_name``, ``last_name``, ``fields`` and
    ``consent_source``. Existing contacts keep their status, counters and history; names
    and custom fields are replaced by the imported values, so re-importing the same file
    changes nothing. Returns the number of rows written.
    """
    if not rows:
        return 0
    stamp = contacts.c.created_at.type.bind_processor(conn.dialect)
    when = stamp(now) if stamp else now
    # The whole batch travels as one JSON array and is expanded by the database itself
    # (SQLite json_each, PostgreSQL jsonb_array_elements): one statement per batch instead
    # of one per row, which is what makes a million-row import fast on both backends.
    # PostgreSQL inserts in address order: two imports sharing rows then take their row
    # locks in the same order instead of deadlocking (tests/services/test_contacts_concurrency).
    payload = json.dumps([[row["email"], row["domain"], row["first_name"], row["last_name"],
                           row["fields"], row["consent_source"]] for row in rows],
                         ensure_ascii=False, separators=(",", ":"))
    params = {"rows": payload, "account_id": account_id, "audience_id": audience_id, "now": when}
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(_SQLITE_UPSERT, params)
        conn.exec_driver_sql(_SQLITE_MEMBERS, params)
    else:
        conn.exec_driver_sql(_PG_UPSERT, params)
        conn.exec_driver_sql(_PG_MEMBERS, params)
    return len(rows)


_SQLITE_UPSERT = """
INSERT INTO contacts (account_id, email, domain, first_name, last_name, fields, consent_source,
                      created_at, updated_at)
SELECT :account_id, json_extract(value, '$[0]'), json_extract(value, '$[1]'),
       json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'),
       json_extract(value, '$[5]'),
       :now, :now
FROM json_each(:rows) WHERE true
ON CONFLICT (account_id, email) DO UPDATE SET first_name = excluded.first_name,
    last_name = excluded.last_name, fields = excluded.fields
"""

_SQLITE_MEMBERS = """
INSERT INTO audience_members (audience_id, contact_id, added_at)
SELECT :audience_id, contacts.id, :now FROM json_each(:rows) AS batch
CROSS JOIN contacts ON contacts.account_id = :account_id
    AND contacts.email = json_extract(batch.value, '$[0]')
WHERE true
ON CONFLICT (audience_id, contact_id) DO NOTHING
"""

_PG_UPSERT = """
INSERT INTO contacts (account_id, email, domain, first_name, last_name, fields, consent_source,
                      created_at, updated_at)
SELECT %(account_id)s, v ->> 0, v ->> 1, v ->> 2, v ->> 3, (v -> 4)::json, v ->> 5,
       %(now)s, %(now)s
FROM jsonb_array_elements(%(rows)s::jsonb) AS batch(v)
ORDER BY v ->> 0
ON CONFLICT (account_id, email) DO UPDATE SET first_name = excluded.first_name,
    last_name = excluded.last_name, fields = excluded.fields
"""

_PG_MEMBERS = """
INSERT INTO audience_members (audience_id, contact_id, added_at)
SELECT %(audience_id)s, contacts.id, %(now)s FROM jsonb_array_elements(%(rows)s::jsonb) AS batch(v)
JOIN contacts ON contacts.account_id = %(account_id)s AND contacts.email = batch.v ->> 0
ON CONFLICT (audience_id, contact_id) DO NOTHING
"""
