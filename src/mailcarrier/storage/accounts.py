"""Accounts (ESP customers) and their audiences."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from mailcarrier.domain.errors import ConflictError, InvalidInputError, NotFoundError
from mailcarrier.storage.tables import accounts, audiences

__all__ = [
    "Account",
    "AccountPolicy",
    "Audience",
    "account_by_slug",
    "account_policies",
    "audience_by_name",
    "create_account",
    "create_audience",
    "list_accounts",
    "list_audiences",
    "set_account_policy",
]


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    slug: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AccountPolicy:
    """An account's contact policy preset and its own thresholds (setting name -> value)."""

    contact_policy: str
    thresholds: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Audience:
    id: int
    account_id: int
    name: str
    description: str
    created_at: datetime


def create_account(conn: Connection, slug: str, name: str, now: datetime) -> Account:
    """A new account; ConflictError if the slug is taken."""
    if not slug or not slug.replace("-", "").replace("_", "").isalnum() or len(slug) > 64:
        raise InvalidInputError(f"invalid account slug {slug!r}: use 1-64 letters, digits, '-' or '_'")
    try:
        with conn.begin_nested():
            new_id = conn.execute(accounts.insert().values(slug=slug, name=name or slug,
                                                           created_at=now)).inserted_primary_key
    except IntegrityError as exc:
        raise ConflictError(f"account {slug!r} already exists") from exc
    assert new_id is not None
    return Account(int(new_id[0]), slug, name or slug, now)


def account_by_slug(conn: Connection, slug: str) -> Account:
    row = conn.execute(select(accounts).where(accounts.c.slug == slug)).one_or_none()
    if row is None:
        raise NotFoundError(f"no account {slug!r}; create it with `mailcarrier accounts create`")
    return Account(row.id, row.slug, row.name, row.created_at)


def list_accounts(conn: Connection) -> list[Account]:
    rows = conn.execute(select(accounts).order_by(accounts.c.slug))
    return [Account(r.id, r.slug, r.name, r.created_at) for r in rows]


def create_audience(conn: Connection, account_id: int, name: str, now: datetime,
                    description: str = "") -> Audience:
    """A new audience of the account; ConflictError if the name is taken there."""
    if not name.strip():
        raise InvalidInputError("an audience needs a name")
    try:
        with conn.begin_nested():
            key = conn.execute(audiences.insert().values(
                account_id=account_id, name=name, description=description,
                created_at=now)).inserted_primary_key
    except IntegrityError as exc:
        raise ConflictError(f"audience {name!r} already exists in this account") from exc
    assert key is not None
    return Audience(int(key[0]), account_id, name, description, now)


def audience_by_name(conn: Connection, account_id: int, name: str) -> Audience:
    row = conn.execute(select(audiences).where(audiences.c.account_id == account_id,
                                               audiences.c.name == name)).one_or_none()
    if row is None:
        raise NotFoundError(f"no audience {name!r} in this account")
    return Audience(row.id, row.account_id, row.name, row.description, row.created_at)


def list_audiences(conn: Connection, account_id: int) -> list[Audience]:
    rows = conn.execute(select(audiences).where(audiences.c.account_id == account_id)
                        .order_by(audiences.c.name))
    return [Audience(r.id, r.account_id, r.name, r.description, r.created_at) for r in rows]


def account_policies(conn: Connection, account_ids: Iterable[int]) -> dict[int, AccountPolicy]:
    """The contact policy and thresholds of each of ``account_ids`` that exists."""
    wanted = sorted(set(account_ids))
    if not wanted:
        return {}
    rows = conn.execute(select(accounts.c.id, accounts.c.contact_policy, accounts.c.thresholds)
                        .where(accounts.c.id.in_(wanted)))
    return {r.id: AccountPolicy(r.contact_policy, dict(r.thresholds or {})) for r in rows}


def set_account_policy(conn: Connection, account_id: int, *, contact_policy: str | None = None,
                       thresholds: dict[str, Any] | None = None) -> AccountPolicy:
    """Change an account's preset and/or replace its thresholds (already validated)."""
    values: dict[str, Any] = {}
    if contact_policy is not None:
        values["contact_policy"] = contact_policy
    if thresholds is not None:
        values["thresholds"] = thresholds
    if values:
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(**values))
    found = account_policies(conn, [account_id]).get(account_id)
    if found is None:
        raise NotFoundError(f"no account with id {account_id}")
    return found
