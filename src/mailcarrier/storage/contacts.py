"""Contact rows and their activity history: the SQL behind the contact services.

Every function takes ``account_id`` and filters by it, so one account never reads or
changes another's rows. The event writer's state updates and history appends are in
:mod:`mailcarrier.storage.contact_state`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select
from sqlalchemy.exc import DBAPIError

from mailcarrier.domain.vocabulary import Category
from mailcarrier.storage.tables import activities, audience_members, contacts

__all__ = [
    "ActivityFilter",
    "ActivityRow",
    "activity_history",
    "add_contact",
    "contact_id_by_email",
    "is_transient_conflict",
    "replace_audience_members",
    "upsert_contacts",
]


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


def replace_audience_members(conn: Connection, audience_id: int, contact_ids: Sequence[int],
                             now: datetime) -> None:
    """Make ``contact_ids`` the audience's only members (e.g. the addresses of one test send)."""
    conn.execute(delete(audience_members).where(audience_members.c.audience_id == audience_id))
    if contact_ids:
        conn.execute(audience_members.insert(), [
            {"audience_id": audience_id, "contact_id": cid, "added_at": now}
            for cid in sorted(set(contact_ids))])


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
        # The upsert returns the id of every row it inserted or updated, so the memberships
        # go in by id (ascending: one sweep) instead of a second look-up of each address
        # in the (account, email) index.
        ids = sorted(cid for (cid,) in conn.exec_driver_sql(_SQLITE_UPSERT, params))
        conn.exec_driver_sql(_SQLITE_MEMBERS, {"ids": json.dumps(ids), "now": when,
                                               "audience_id": audience_id})
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
RETURNING id
"""

_SQLITE_MEMBERS = """
INSERT INTO audience_members (audience_id, contact_id, added_at)
SELECT :audience_id, value, :now FROM json_each(:ids) WHERE true
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
