"""Contact events applied through the service on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection, Engine, select, update

from mailcarrier.domain.contact_status import (
    ContactEvent,
    DomainEvidence,
    EventKind,
    StatusPolicy,
    Transition,
)
from mailcarrier.domain.errors import ConflictError, NotFoundError
from mailcarrier.domain.vocabulary import Category, ContactStatus, Reason
from mailcarrier.services.contacts import (
    ContactEventRecord,
    apply_event,
    apply_events,
    history,
    reactivate,
)
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage import contacts as contact_repo
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.tables import contacts
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
POLICY = StatusPolicy()


@pytest.fixture
def db(empty_engine: Engine) -> Iterator[tuple[Engine, int, int, int]]:  # noqa: F811
    """Two accounts, each with one contact: (engine, account, contact, other account's contact)."""
    upgrade(empty_engine)
    with empty_engine.begin() as conn:
        one = account_repo.create_account(conn, "one", "One", T0)
        two = account_repo.create_account(conn, "two", "Two", T0)
        mine = contact_repo.add_contact(conn, one.id, "ann@example.com", T0)
        theirs = contact_repo.add_contact(conn, two.id, "bob@example.com", T0)
    yield empty_engine, one.id, mine, theirs


def row(engine: Engine, contact_id: int) -> dict[str, object]:
    with engine.connect() as conn:
        return dict(conn.execute(select(contacts).where(contacts.c.id == contact_id)).one()._mapping)


def bounce(account: int, contact: int, kind: EventKind, reason: Reason, category: Category,
           when: datetime, **extra: object) -> ContactEventRecord:
    event = ContactEvent(kind, when, reason, category,
                         domain_evidence=extra.pop("evidence", None))  # type: ignore[arg-type]
    return ContactEventRecord(account, contact, event, **extra)  # type: ignore[arg-type]


def test_hard_bounce_invalidates_and_records(db: tuple[Engine, int, int, int]) -> None:
    engine, account, contact, _ = db
    record = bounce(account, contact, EventKind.HARD_BOUNCE, Reason.USERUNKNOWN,
                    Category.INVALID_ADDRESS, T0, reply_code=550, enhanced_status="5.1.1",
                    diagnostic="550 5.1.1 user unknown", remote_mta="mx.example.com",
                    cause="delivery engine")
    transition = apply_event(engine, POLICY, record, T0)
    assert transition.status_changed
    stored = row(engine, contact)
    assert stored["status"] == "error" and stored["email_invalid"]
    assert stored["last_bounce_category"] == 2 and stored["last_bounce_reply_code"] == 550
    assert stored["last_bounce_diagnostic"] == "550 5.1.1 user unknown"
    assert stored["last_bounce_at"] == T0 and stored["total_bounces"] == 1
    assert stored["version"] == 2
    entries = history(engine, account, contact)
    assert [e.type for e in entries] == ["hard_bounce", "status_changed"] or \
        sorted(e.type for e in entries) == ["hard_bounce", "status_changed"]
    hard = next(e for e in entries if e.type == "hard_bounce")
    assert (hard.reason, hard.category, hard.enhanced_status) == ("userunknown", 2, "5.1.1")
    change = next(e for e in entries if e.type == "status_changed")
    assert change.details == {"from": "active", "to": "error", "email_invalid": True,
                              "by": "delivery engine"}


def test_delivery_keeps_last_bounce_and_resets_counters(db: tuple[Engine, int, int, int]) -> None:
    engine, account, contact, _ = db
    soft = bounce(account, contact, EventKind.SOFT_BOUNCE, Reason.MAILBOXFULL,
                  Category.TEMPORARY, T0)
    apply_events(engine, POLICY, [soft, soft], T0)
    assert row(engine, contact)["consecutive_soft_bounces"] == 2
    later = T0 + timedelta(days=1)
    apply_event(engine, POLICY, ContactEventRecord(
        account, contact, ContactEvent(EventKind.DELIVERED, later)), later)
    stored = row(engine, contact)
    assert stored["consecutive_soft_bounces"] == 0 and stored["last_delivered_at"] == later
    assert stored["last_bounce_reason"] == "mailboxfull" and stored["status"] == "active"


def test_three_soft_mailings_in_one_batch_error(db: tuple[Engine, int, int, int]) -> None:
    engine, account, contact, _ = db
    soft = bounce(account, contact, EventKind.SOFT_BOUNCE, Reason.EXPIRED, Category.TEMPORARY, T0)
    results = apply_events(engine, POLICY, [soft] * 3, T0)
    assert [t.after.status for t in results][-1] == ContactStatus.ERROR
    assert row(engine, contact)["status"] == "error"


def test_b2b_filtering_does_not_invalidate(db: tuple[Engine, int, int, int]) -> None:
    engine, account, contact, _ = db
    record = bounce(account, contact, EventKind.HARD_BOUNCE, Reason.USERUNKNOWN,
                    Category.INVALID_ADDRESS, T0, evidence=DomainEvidence(8, 10), mailing_id=None)
    transition = apply_event(engine, POLICY, record, T0)
    assert transition.suspected_filtering
    stored = row(engine, contact)
    assert stored["status"] == "active" and not stored["email_invalid"]
    assert stored["last_bounce_reason"] == "filtered" and stored["last_bounce_category"] == 1
    entry = history(engine, account, contact)[0]
    assert entry.details is not None and entry.details["suspected_filtering"] is True


def test_reactivation_records_who_and_why(db: tuple[Engine, int, int, int]) -> None:
    engine, account, contact, _ = db
    apply_event(engine, POLICY, bounce(account, contact, EventKind.HARD_BOUNCE, Reason.USERUNKNOWN,
                                       Category.INVALID_ADDRESS, T0), T0)
    later = T0 + timedelta(hours=1)
    reactivate(engine, POLICY, account, contact, who="alice", why="confirmed by phone", now=later)
    stored = row(engine, contact)
    assert stored["status"] == "active" and not stored["email_invalid"]
    entry = history(engine, account, contact,
                    contact_repo.ActivityFilter(types=("reactivate",)))[0]
    assert entry.cause == "reactivated by alice: confirmed by phone"
    with pytest.raises(ValueError, match="who"):
        reactivate(engine, POLICY, account, contact, who=" ", why="x", now=later)


def test_history_filters(db: tuple[Engine, int, int, int]) -> None:
    engine, account, contact, _ = db
    records = [
        bounce(account, contact, EventKind.HARD_BOUNCE, Reason.BLOCKED, Category.SPAM_BLOCK,
               T0 + timedelta(days=d))
        for d in range(2)
    ] + [ContactEventRecord(account, contact, ContactEvent(EventKind.OPEN, T0 + timedelta(days=5)))]
    apply_events(engine, POLICY, records, T0 + timedelta(days=6))
    flt = contact_repo.ActivityFilter
    assert len(history(engine, account, contact, flt(category=Category.SPAM_BLOCK))) == 2
    assert len(history(engine, account, contact, flt(types=("open",)))) == 1
    assert len(history(engine, account, contact, flt(since=T0 + timedelta(days=1)))) == 2
    assert len(history(engine, account, contact, flt(until=T0 + timedelta(days=1)))) == 1


def test_accounts_are_isolated(db: tuple[Engine, int, int, int]) -> None:
    engine, account, _contact, theirs = db
    record = ContactEventRecord(account, theirs, ContactEvent(EventKind.COMPLAINT, T0))
    with pytest.raises(NotFoundError):
        apply_event(engine, POLICY, record, T0)
    assert row(engine, theirs)["status"] == "active"
    assert history(engine, account, theirs) == []


def test_opted_out_reactivation_is_refused(db: tuple[Engine, int, int, int]) -> None:
    engine, account, contact, _ = db
    apply_event(engine, POLICY, ContactEventRecord(
        account, contact, ContactEvent(EventKind.UNSUBSCRIBE, T0)), T0)
    with pytest.raises(ConflictError):
        reactivate(engine, POLICY, account, contact, who="bob", why="asked", now=T0)
    assert row(engine, contact)["status"] == "opted_out"


def test_concurrent_updates_lose_nothing(db: tuple[Engine, int, int, int]) -> None:
    """Threads hammer one contact with blocks; every increment must land."""
    engine, account, contact, _ = db
    policy = StatusPolicy(blocks_to_error=10_000)
    threads, per_thread = 4, 25
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(per_thread):
                apply_event(engine, policy, bounce(account, contact, EventKind.HARD_BOUNCE,
                                                   Reason.BLOCKED, Category.SPAM_BLOCK, T0), T0)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    stored = row(engine, contact)
    assert stored["consecutive_blocks"] == threads * per_thread
    assert stored["total_bounces"] == threads * per_thread
    assert stored["version"] == 1 + threads * per_thread
    assert len(history(engine, account, contact)) == threads * per_thread


def test_mixed_batch_writes_every_change_and_indexes_follow(db: tuple[Engine, int, int, int]) -> None:
    """One batch where contacts change different indexed columns (status, soft count) or none.

    The writer leaves unchanged indexed columns out of its UPDATE on SQLite; reading back
    through the (account, status) and (account, consecutive_soft_bounces) indexes must still
    find every contact with its new values.
    """
    engine, account, first, _ = db
    with engine.begin() as conn:
        ids = [first] + [contact_repo.add_contact(conn, account, f"c{i}@example.com", T0)
                         for i in range(4)]
    soft = [bounce(account, cid, EventKind.SOFT_BOUNCE, Reason.MAILBOXFULL, Category.TEMPORARY, T0)
            for cid in ids[:3]]
    apply_events(engine, POLICY, soft + soft[:1], T0)
    later = T0 + timedelta(hours=1)
    batch = [
        bounce(account, ids[0], EventKind.SOFT_BOUNCE, Reason.MAILBOXFULL, Category.TEMPORARY, later),
        ContactEventRecord(account, ids[1], ContactEvent(EventKind.DELIVERED, later)),
        bounce(account, ids[2], EventKind.HARD_BOUNCE, Reason.USERUNKNOWN, Category.INVALID_ADDRESS,
               later),
        ContactEventRecord(account, ids[3], ContactEvent(EventKind.DELIVERED, later)),
        ContactEventRecord(account, ids[4], ContactEvent(EventKind.OPEN, later)),
    ]
    apply_events(engine, POLICY, batch, later)
    c = contacts.c
    with engine.connect() as conn:
        by_status = dict(conn.execute(select(c.id, c.status).where(
            c.account_id == account, c.status == "error")).all())
        soft_counts = dict(conn.execute(select(c.id, c.consecutive_soft_bounces).where(
            c.account_id == account, c.consecutive_soft_bounces > 0)).all())
    assert by_status == {ids[0]: "error", ids[2]: "error"}
    assert soft_counts == {ids[0]: 3, ids[2]: 1}
    assert row(engine, ids[1])["last_delivered_at"] == later
    assert row(engine, ids[3])["version"] == 2 and row(engine, ids[4])["last_engaged_at"] == later
    assert [row(engine, cid)["version"] for cid in ids] == [3, 3, 3, 2, 2]  # one write per batch


def test_finish_commits_with_the_events_or_nothing_does(db: tuple[Engine, int, int, int]) -> None:
    """A caller's bookkeeping (``finish``) shares the events' transaction: when it fails, the
    events are not applied either, so the caller can run the batch again without counting
    anything twice; when it succeeds it sees the transitions and its writes stay."""
    engine, account, mine, _ = db
    soft = bounce(account, mine, EventKind.SOFT_BOUNCE, Reason.MAILBOXFULL, Category.TEMPORARY, T0)

    def failing(_conn: object, _transitions: object) -> None:
        raise RuntimeError("bookkeeping failed")

    with pytest.raises(RuntimeError, match="bookkeeping failed"):
        apply_events(engine, POLICY, [soft], T0, finish=failing)
    assert row(engine, mine)["total_bounces"] == 0
    assert history(engine, account, mine) == []

    seen: list[int] = []

    def renaming(conn: Connection, transitions: list[Transition]) -> None:
        seen.append(len(transitions))
        conn.execute(update(contacts).where(contacts.c.id == mine).values(first_name="Ann"))

    apply_events(engine, POLICY, [soft], T0, finish=renaming)
    after = row(engine, mine)
    assert (after["total_bounces"], after["first_name"], seen) == (1, "Ann", [1])
    assert [entry.type for entry in history(engine, account, mine)] == ["soft_bounce"]



def test_finish_runs_in_a_transaction_even_with_no_events(db: tuple[Engine, int, int, int]) -> None:
    engine, _account, mine, _ = db

    def renaming(conn: Connection, transitions: list[Transition]) -> None:
        assert transitions == []
        conn.execute(update(contacts).where(contacts.c.id == mine).values(first_name="Empty"))

    assert apply_events(engine, POLICY, [], T0, finish=renaming) == []
    assert row(engine, mine)["first_name"] == "Empty"
