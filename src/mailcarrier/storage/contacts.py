"""Contact rows and their activity history: the SQL behind the contact services.

Every function takes ``account_id`` and filters by it, so one account never reads or
changes another's rows. Status updates are optimistic: a row is written only if its
``version`` is still the one that was read (see :func:`write_states`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, bindparam, case, select, update

from mailcarrier.domain.contact_status import ContactState
from mailcarrier.domain.vocabulary import Category, ContactStatus
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
    c = contacts.c
    for start in range(0, len(wanted), 900):
        chunk = wanted[start:start + 900]
        query = (select(c.id, c.version, c.status, c.email_invalid, c.consecutive_soft_bounces,
                       c.consecutive_blocks, c.total_bounces, c.last_delivered_at,
                       c.last_engaged_at).where(c.account_id == account_id, c.id.in_(chunk))
                 .order_by(c.id).with_for_update())
        for row in conn.execute(query):
            found[row.id] = VersionedState(row.id, row.version, ContactState(
                status=ContactStatus(row.status), email_invalid=bool(row.email_invalid),
                consecutive_soft_bounces=row.consecutive_soft_bounces,
                consecutive_blocks=row.consecutive_blocks, total_bounces=row.total_bounces,
                last_delivered_at=row.last_delivered_at, last_engaged_at=row.last_engaged_at))
    return found


def write_states(conn: Connection, account_id: int, rows: Sequence[dict[str, Any]]) -> int:
    """Write new states where the version is unchanged; returns how many rows matched.

    Each dict holds ``contact_id``, ``expected_version``, the :class:`ContactState` fields,
    the latest-bounce fields with ``keep_bounce`` (True: leave them as stored),
    ``status_changed_at`` (None: unchanged) and ``now``. A result lower than ``len(rows)`` means another
    writer got there first: the caller rolls back and retries.
    """
    if not rows:
        return 0
    c = contacts.c
    statement = (
        update(contacts)
        .where(and_(c.id == bindparam("contact_id"), c.account_id == account_id,
                    c.version == bindparam("expected_version")))
        .values(
            status=bindparam("status"), email_invalid=bindparam("email_invalid"),
            consecutive_soft_bounces=bindparam("consecutive_soft_bounces"),
            consecutive_blocks=bindparam("consecutive_blocks"),
            total_bounces=bindparam("total_bounces"),
            last_delivered_at=bindparam("last_delivered_at", type_=c.last_delivered_at.type),
            last_engaged_at=bindparam("last_engaged_at", type_=c.last_engaged_at.type),
            **{name: _bounce_value(name) for name in BOUNCE_FIELDS},
            status_changed_at=case(
                (bindparam("status_changed_at", type_=c.status_changed_at.type).is_(None),
                 c.status_changed_at),
                else_=bindparam("status_changed_at", type_=c.status_changed_at.type)),
            updated_at=bindparam("now", type_=c.updated_at.type),
            version=c.version + 1,
        )
    )
    result = conn.execute(statement, list(rows))
    return int(result.rowcount)


BOUNCE_FIELDS = ("last_bounce_at", "last_bounce_category", "last_bounce_reason",
                 "last_bounce_reply_code", "last_bounce_enhanced_status", "last_bounce_diagnostic",
                 "last_bounce_remote_mta", "last_bounce_mailing_id")


def _bounce_value(name: str) -> ColumnElement[Any]:
    """The new latest-bounce value, or the stored one when the batch had no bounce (keep_bounce)."""
    column = contacts.c[name]
    return case((bindparam("keep_bounce") == True, column),  # noqa: E712 - SQL comparison
                else_=bindparam(name, type_=column.type))


def insert_activities(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Append history entries (dicts keyed by the ``activities`` column names)."""
    if rows:
        conn.execute(activities.insert(), list(rows))


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
ON CONFLICT (account_id, email) DO UPDATE SET first_name = excluded.first_name,
    last_name = excluded.last_name, fields = excluded.fields
"""

_PG_MEMBERS = """
INSERT INTO audience_members (audience_id, contact_id, added_at)
SELECT %(audience_id)s, contacts.id, %(now)s FROM jsonb_array_elements(%(rows)s::jsonb) AS batch(v)
JOIN contacts ON contacts.account_id = %(account_id)s AND contacts.email = batch.v ->> 0
ON CONFLICT (audience_id, contact_id) DO NOTHING
"""
