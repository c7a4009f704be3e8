"""Revision 0009: the history has no foreign keys on its hot path, yet deleting a contact or
an account still removes its history (triggers), on both backends."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, delete, func, select

from mailcarrier.domain.contact_status import ContactEvent, EventKind, StatusPolicy
from mailcarrier.services.contacts import ContactEventRecord, apply_events
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage import contacts as repo
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.tables import accounts, activities, contacts

NOW = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


def _history_sizes(engine: Engine) -> dict[int, int]:
    a = activities.c
    with engine.connect() as conn:
        rows = conn.execute(select(a.contact_id, func.count()).group_by(a.contact_id)).all()
    return {contact_id: count for contact_id, count in rows}


def test_deleting_a_contact_or_an_account_removes_its_history(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    with empty_engine.begin() as conn:
        first = account_repo.create_account(conn, "first", "First", NOW).id
        second = account_repo.create_account(conn, "second", "Second", NOW).id
        kept = repo.add_contact(conn, first, "kept@example.com", NOW)
        dropped = repo.add_contact(conn, first, "dropped@example.com", NOW)
        other = repo.add_contact(conn, second, "other@example.com", NOW)
    events = [ContactEventRecord(account, contact, ContactEvent(kind, NOW))
              for account, contact in ((first, kept), (first, dropped), (second, other))
              for kind in (EventKind.DELIVERED, EventKind.OPEN)]
    apply_events(empty_engine, StatusPolicy(), events, NOW)
    assert _history_sizes(empty_engine) == {kept: 2, dropped: 2, other: 2}

    with empty_engine.begin() as conn:
        conn.execute(delete(contacts).where(contacts.c.id == dropped))
    assert _history_sizes(empty_engine) == {kept: 2, other: 2}

    with empty_engine.begin() as conn:
        conn.execute(delete(accounts).where(accounts.c.id == first))
    assert _history_sizes(empty_engine) == {other: 2}
