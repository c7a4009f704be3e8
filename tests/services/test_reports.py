"""Response page, mailing lists and bounce report on real SQLite and PostgreSQL databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update

from mailcarrier.domain.errors import NotFoundError
from mailcarrier.services import figures, report_rollups, reports
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.report_tables import bounce_rollup, domain_rollup, report_watermarks
from mailcarrier.storage.tables import activities, contacts, deliveries
from tests.services.report_world import RECIPIENTS, T0, World, build
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

DAY = T0.date()


@pytest.fixture
def world(empty_engine: Engine) -> Iterator[World]:  # noqa: F811
    upgrade(empty_engine)
    yield build(empty_engine)


def _all_recipients(world: World, bucket: str | None = None) -> list[reports.RecipientRow]:
    out: list[reports.RecipientRow] = []
    after = 0
    while True:
        page = reports.mailing_recipients(world.engine, world.account_id, world.mailing_id,
                                          bucket=bucket, after_id=after, limit=3)
        if not page:
            return out
        out.extend(page)
        after = page[-1].delivery_id


def test_response_page_every_recipient_in_exactly_one_bucket(world: World) -> None:
    page = reports.response_page(world.engine, world.account_id, world.mailing_id)
    assert page.recipients == len(RECIPIENTS)
    assert page.reconciles
    seen: dict[int, str] = {}
    for bucket in figures.BUCKETS:
        members = _all_recipients(world, bucket)
        assert len(members) == page.buckets[bucket], bucket
        for row in members:
            assert row.delivery_id not in seen, f"{row.email} in {seen[row.delivery_id]} and {bucket}"
            seen[row.delivery_id] = bucket
    assert set(seen) == {r.delivery_id for r in _all_recipients(world)}
    expected = {b: sum(1 for r in RECIPIENTS if r[2] == b) for b in figures.BUCKETS}
    assert page.buckets == expected


def test_response_page_figures(world: World) -> None:
    page = reports.response_page(world.engine, world.account_id, world.mailing_id)
    assert page.attempted == sum(1 for r in RECIPIENTS if r[5] > 0)
    assert page.bounced_by_category == {1: 2, 2: 1, 3: 1}
    assert page.hard_bounce_rate == pytest.approx(3 / page.attempted)
    assert page.hard_bounce_level == "alert"
    assert page.suspected_filtering == 1
    assert page.next_attempt_at == T0 + timedelta(hours=2)
    assert page.top_domains[0].domain == "corp.example" and page.top_domains[0].suspected_filtering == 1
    assert {r.reason for r in page.top_reasons} == {"userunknown", "filtered", "blocked", "mailboxfull"}
    assert all(r.explanation for r in page.top_reasons)
    e = page.engagement
    assert (e.opens_human, e.opens_machine, e.clicks_human, e.clicks_machine) == (1, 1, 1, 1)
    assert (e.unsubscribes, e.complaints) == (1, 0)


def test_response_page_moves_with_retries_and_late_bounces(world: World) -> None:
    before = reports.response_page(world.engine, world.account_id, world.mailing_id)
    with world.engine.begin() as conn:
        # The deferred recipient is finally delivered, and a delivered one bounces late (AOL style).
        conn.execute(update(deliveries).where(deliveries.c.id == world.deliveries["gus@gmail.com"])
                     .values(state="delivered", attempt_count=3, next_attempt_at=None))
        conn.execute(update(deliveries).where(deliveries.c.id == world.deliveries["ann@example.com"])
                     .values(state="bounced_soft", last_reason="mailboxfull", last_category=3))
    after = reports.response_page(world.engine, world.account_id, world.mailing_id)
    assert after.buckets["in_progress"] == before.buckets["in_progress"] - 1
    assert after.buckets["delivered"] == before.buckets["delivered"]  # one in, one out
    assert after.buckets["bounced_soft"] == before.buckets["bounced_soft"] + 1
    assert after.bounced_by_category[3] == before.bounced_by_category[3] + 1
    assert after.next_attempt_at == T0 + timedelta(hours=2)  # the queued one still waits
    assert after.reconciles


def test_response_page_of_another_account_is_not_found(world: World) -> None:
    with pytest.raises(NotFoundError):
        reports.response_page(world.engine, world.account_id, world.other_mailing_id)
    with pytest.raises(NotFoundError):
        reports.mailing_recipients(world.engine, world.other_account_id, world.mailing_id)


def test_mailing_lists(world: World) -> None:
    in_progress = reports.list_mailings(world.engine, world.account_id, "in_progress")
    assert [m.id for m in in_progress] == [world.mailing_id]
    assert in_progress[0].recipients == len(RECIPIENTS)
    assert [m.id for m in reports.list_mailings(world.engine, world.account_id, "test")] == \
        [world.test_mailing_id]
    assert reports.list_mailings(world.engine, world.account_id, "sent") == []
    with pytest.raises(ValueError, match="unknown list"):
        reports.list_mailings(world.engine, world.account_id, "bogus")


def test_rate_levels() -> None:
    t = reports.Thresholds()
    assert [reports.rate_level(r, t) for r in (0.0, 0.0199, 0.02, 0.049, 0.05, 1.0)] == \
        ["ok", "ok", "warn", "warn", "alert", "alert"]


def test_bounce_report(world: World) -> None:
    with world.engine.begin() as conn:
        conn.execute(update(contacts).where(contacts.c.id == world.contacts["fay@gmail.com"])
                     .values(consecutive_soft_bounces=2, last_bounce_reason="mailboxfull"))
        conn.execute(update(contacts).where(contacts.c.id == world.contacts["gus@gmail.com"])
                     .values(consecutive_soft_bounces=1))
    report = reports.bounce_report(world.engine, world.account_id, since=DAY, until=DAY)
    assert report.total == 4
    assert report.by_category == {1: 2, 2: 1, 3: 1}
    assert sum(d["count"] for d in report.by_day) == 4
    assert report.by_domain[0].domain == "corp.example" and report.by_domain[0].bounced == 2
    assert [d.domain for d in report.filtering_domains] == ["corp.example"]
    google = next(p for p in report.by_provider if p["provider"].startswith("Google"))
    assert google["bounces"] == 2 and google["postmaster"].startswith("https://")
    assert [n.email for n in report.near_threshold] == ["fay@gmail.com"]
    (rate,) = report.mailing_rates
    assert rate.mailing_id == world.mailing_id and rate.bounced_hard == 3 and rate.level == "alert"
    other = reports.bounce_report(world.engine, world.other_account_id, since=DAY, until=DAY)
    assert other.total == 0 and other.by_domain == []
    assert [r.mailing_id for r in other.mailing_rates] == [world.other_mailing_id]


def _rollup_state(engine: Engine) -> tuple[list[Any], int, int]:
    with engine.connect() as conn:
        return (list(conn.execute(select(report_watermarks).order_by(report_watermarks.c.name))),
                int(conn.execute(select(func.count()).select_from(bounce_rollup)).scalar_one()),
                int(conn.execute(select(func.count()).select_from(domain_rollup)).scalar_one()))


def test_bounce_report_counts_new_bounces_incrementally(world: World) -> None:
    first = reports.bounce_report(world.engine, world.account_id, since=DAY, until=DAY)
    assert first.total == 4  # nothing folded yet: the whole history is the unfolded tail
    with world.engine.begin() as conn:
        conn.execute(activities.insert().values(
            account_id=world.account_id, contact_id=world.contacts["kim@example.org"],
            mailing_id=world.mailing_id, type="hard_bounce", occurred_at=T0 + timedelta(days=1),
            reason="userunknown", category=2, remote_mta="mx1.example.net"))
    again = reports.bounce_report(world.engine, world.account_id, since=DAY, until=DAY)
    assert again.total == first.total  # the new bounce is on the next day
    wider = reports.bounce_report(world.engine, world.account_id, since=DAY,
                                  until=DAY + timedelta(days=1))
    assert wider.total == first.total + 1
    assert report_rollups.refresh_rollups(world.engine) > 0  # the report folded nothing itself
    assert report_rollups.refresh_rollups(world.engine) == 0
    assert reports.bounce_report(world.engine, world.account_id, since=DAY,
                                 until=DAY + timedelta(days=1)) == wider


def test_bounce_report_reads_only_and_equals_the_folded_figures(world: World) -> None:
    """Half folded, half above the watermark: the same report as after a full fold, no write."""
    end = DAY + timedelta(days=2)

    def report() -> tuple[reports.BounceReport, dict[str, dict[date, int]]]:
        return (reports.bounce_report(world.engine, world.account_id, since=DAY, until=end),
                reports.domain_trend(world.engine, world.account_id, since=DAY, until=end))

    report_rollups.refresh_rollups(world.engine)
    with world.engine.begin() as conn:  # above the watermark: new rows and groups already folded
        for i, (email, kind, reason, category, mta, filtered) in enumerate((
                ("kim@example.org", "hard_bounce", "userunknown", 2, "mx1.example.net", False),
                ("fay@gmail.com", "soft_bounce", "mailboxfull", 3, "gmail-smtp-in.l.google.com", False),
                ("fay@gmail.com", "soft_bounce", "filtered", 4, "gmail-smtp-in.l.google.com", True),
                ("kim@example.org", "soft_bounce", None, None, None, False))):
            conn.execute(activities.insert().values(
                account_id=world.account_id, contact_id=world.contacts[email],
                mailing_id=world.mailing_id if i % 2 else None, type=kind,
                occurred_at=T0 + timedelta(days=i % 3, minutes=i), reason=reason, category=category,
                remote_mta=mta, details={"suspected_filtering": True} if filtered else {}))
    before = _rollup_state(world.engine)
    unfolded = report()
    assert _rollup_state(world.engine) == before  # the report wrote nothing
    assert unfolded[0].total == 4 + 4
    assert report_rollups.refresh_rollups(world.engine) == 4
    assert _rollup_state(world.engine) != before
    folded = report()
    assert folded == unfolded
    assert folded[0].by_category == {1: 2, 2: 2, 3: 2, 4: 1, 9: 1}


def test_bounce_report_answers_while_another_connection_holds_the_write_lock(world: World) -> None:
    if world.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's single write lock")
    import sqlite3  # noqa: PLC0415 - only this test opens a raw connection
    import time  # noqa: PLC0415

    with world.engine.begin() as conn:
        conn.execute(activities.insert().values(
            account_id=world.account_id, contact_id=world.contacts["kim@example.org"],
            mailing_id=world.mailing_id, type="hard_bounce", occurred_at=T0,
            reason="userunknown", category=2, remote_mta="mx1.example.net"))
    database = world.engine.url.database
    assert database
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a writer mid-transaction (an import, a worker batch)
    try:
        started = time.monotonic()
        report = reports.bounce_report(world.engine, world.account_id, since=DAY, until=DAY)
        elapsed = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert report.total == 5
    assert elapsed < 1.0, f"the report waited {elapsed:.1f} s for the write lock"


def test_bounce_report_refuses_reversed_period(world: World) -> None:
    with pytest.raises(ValueError, match="ends before"):
        reports.bounce_report(world.engine, world.account_id, since=DAY, until=date(2020, 1, 1))


def test_concurrent_refreshes_while_writing_count_every_bounce_once(world: World) -> None:
    import threading  # noqa: PLC0415 - only this test uses threads

    def write(start: int) -> None:
        for i in range(start, start + 60):
            with world.engine.begin() as conn:
                conn.execute(activities.insert().values(
                    account_id=world.account_id, contact_id=world.contacts["kim@example.org"],
                    mailing_id=world.mailing_id, type="soft_bounce", occurred_at=T0 + timedelta(minutes=i),
                    reason="mailboxfull", category=3))

    errors: list[BaseException] = []

    def refresh() -> None:
        try:
            for _ in range(15):
                report_rollups.refresh_rollups(world.engine)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(0,)), threading.Thread(target=write, args=(100,)),
               *(threading.Thread(target=refresh) for _ in range(3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    report = reports.bounce_report(world.engine, world.account_id, since=DAY, until=DAY)
    assert report.total == 4 + 120


def test_bounce_report_over_time_by_reason_and_bounce_list_links(world: World) -> None:
    from mailcarrier.services.account_views import list_bounces  # noqa: PLC0415

    report = reports.bounce_report(world.engine, world.account_id, since=DAY, until=DAY)
    assert sorted((d["reason"], d["count"]) for d in report.by_day_reason) == \
        [("blocked", 1), ("filtered", 1), ("mailboxfull", 1), ("userunknown", 1)]
    bounces = list_bounces(world.engine, world.account_id, after_id=0, limit=10)
    gmail = next(b for b in bounces if b.email == "fay@gmail.com")
    assert gmail.provider and gmail.provider.startswith("Google") and gmail.postmaster
    assert all(b.explanation for b in bounces)


def test_thresholds_come_from_settings(world: World, tmp_path: object) -> None:
    from mailcarrier.config import Settings  # noqa: PLC0415
    from mailcarrier.domain.errors import ConfigurationError  # noqa: PLC0415

    lenient = reports.report_thresholds(Settings.of(report_hard_bounce_warn=0.4,
                                                 report_hard_bounce_alert=0.6))
    page = reports.response_page(world.engine, world.account_id, world.mailing_id, lenient)
    assert page.hard_bounce_rate < 0.4 and page.hard_bounce_level == "ok"
    with pytest.raises(ConfigurationError, match="must not exceed"):
        reports.report_thresholds(Settings.of(report_hard_bounce_warn=0.5,
                                           report_hard_bounce_alert=0.1))


def test_periodic_fold_keeps_running_through_errors_and_folds(world: World, tmp_path: Any,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    import threading  # noqa: PLC0415

    from sqlalchemy import create_engine  # noqa: PLC0415

    broken = create_engine(f"sqlite:///{tmp_path}/no-tables.db")  # every fold fails: no such table
    stop = threading.Event()
    loop = threading.Thread(target=report_rollups.fold_periodically, args=(broken, stop, 0.05))
    loop.start()
    try:
        deadline = threading.Event()
        for _ in range(100):
            if sum("not folded" in r.getMessage() for r in caplog.records) >= 2:
                break
            deadline.wait(0.05)
        assert loop.is_alive()
    finally:
        stop.set()
        loop.join(5)
    assert not loop.is_alive()
    assert sum("not folded" in r.getMessage() for r in caplog.records) >= 2
    broken.dispose()

    stop = threading.Event()
    loop = threading.Thread(target=report_rollups.fold_periodically, args=(world.engine, stop, 0.05))
    loop.start()
    try:
        for _ in range(100):
            if _rollup_state(world.engine)[0]:
                break
            stop.wait(0.05)
    finally:
        stop.set()
        loop.join(5)
    assert report_rollups.refresh_rollups(world.engine) == 0  # the loop folded everything
