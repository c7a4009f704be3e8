"""The return path through the service: store raw, match, act; SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from mailcarrier.config import Settings
from mailcarrier.domain.contact_status import ContactEvent, EventKind
from mailcarrier.services.contacts import ContactEventRecord, apply_event, history
from mailcarrier.services.inbound import (
    IncomingEmail,
    content_digest,
    list_inbound,
    process_all,
    release_for_reprocess,
    store_incoming,
)
from mailcarrier.services.policies import warmup_schedule
from mailcarrier.services.pools import membership
from mailcarrier.storage.pool_tables import ip_daily_volume
from mailcarrier.storage.tables import activities, attempts, deliveries, mailings
from tests.inbound.factory import (
    CTX,
    T0,
    World,
    arf,
    autoreply,
    contact,
    delivery,
    dsn,
    make_world,
)
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

LATER = T0 + timedelta(hours=2)
ADDRESSES = ["ann@aol.test", "bob@aol.test", "cy@corp.test", "dee@corp.test"]


@pytest.fixture
def world(empty_engine: Engine) -> Iterator[World]:  # noqa: F811
    yield make_world(empty_engine, ADDRESSES)


def receive(world: World, *raws: bytes, envelope_to: tuple[str, ...] = (), source: str = "smtp") -> None:
    store_incoming(world.engine, [IncomingEmail(r, source, "test", "", envelope_to) for r in raws], LATER)
    process_all(world.engine, CTX, LATER)


def test_late_bounce_by_verp_flips_delivered_and_invalidates_contact(world: World) -> None:
    ann = world.sent["ann@aol.test"]
    receive(world, dsn(to=ann.return_path, recipient=ann.email), envelope_to=(ann.return_path,))
    row = delivery(world.engine, ann.delivery_id)
    assert row["state"] == "bounced_hard"
    assert row["delivered_at"] == T0  # the 250 stays on record
    assert (row["last_reason"], row["last_category"], row["last_enhanced_status"]) == ("userunknown", 2, "5.1.1")
    with world.engine.connect() as conn:
        codes = conn.execute(select(attempts.c.reply_code).where(attempts.c.delivery_id == ann.delivery_id)).all()
    assert codes == [(250,)]
    person = contact(world.engine, ann.contact_id)
    assert person["status"] == "error" and person["email_invalid"]
    activity = next(a for a in history(world.engine, world.account_id, ann.contact_id) if a.type == "hard_bounce")
    assert activity.delivery_id == ann.delivery_id and activity.category == 2
    assert activity.details is not None and activity.details["matched_by"] == "verp"
    assert activity.details["late"] is True
    [stored] = list_inbound(world.engine)
    assert (stored.state, stored.kind, stored.match_method) == ("processed", "bounce", "verp")
    assert stored.matched_delivery_ids == (ann.delivery_id,)


def test_bounce_matched_by_message_id_when_no_verp(world: World) -> None:
    bob = world.sent["bob@aol.test"]
    receive(world, dsn(to="postmaster@bounces.sender.test", recipient=bob.email, message_id=bob.message_id))
    assert delivery(world.engine, bob.delivery_id)["state"] == "bounced_hard"
    assert list_inbound(world.engine)[0].match_method == "message_id"


def test_bounce_matched_by_recipient_alone_is_unverified_and_changes_nothing(world: World) -> None:
    """Issue 17: a recipient address proves nothing; the email is shown for review, not applied."""
    cy = world.sent["cy@corp.test"]
    with world.engine.begin() as conn:  # a recent delivery: the window counts from delivered_at
        conn.execute(deliveries.update().values(delivered_at=LATER - timedelta(days=1)))
    receive(world, dsn(to="postmaster@bounces.sender.test", recipient=cy.email, status="4.2.2",
                       diagnostic="smtp; 552 4.2.2 mailbox full"))
    row = delivery(world.engine, cy.delivery_id)
    assert row["state"] == "delivered" and row["last_category"] is None
    [stored] = list_inbound(world.engine)
    assert (stored.state, stored.match_method, stored.kind) == ("unverified", "recipient", "bounce")
    assert stored.matched_delivery_ids == (cy.delivery_id,) and stored.account_id == world.account_id
    assert "recipient address alone" in (stored.error or "")
    person = contact(world.engine, cy.contact_id)
    assert person["status"] == "active" and person["consecutive_soft_bounces"] == 0
    assert not [a for a in history(world.engine, world.account_id, cy.contact_id) if "bounce" in a.type]


def test_recipient_match_uses_the_address_the_sender_mailed_before_the_alias_target(world: World) -> None:
    """RFC 3464 2.3.1: Original-Recipient is the address we sent to; the alias target is not ours."""
    cy = world.sent["cy@corp.test"]
    with world.engine.begin() as conn:
        conn.execute(deliveries.update().values(delivered_at=LATER - timedelta(days=1)))
    receive(world, dsn(to="postmaster@bounces.sender.test", recipient="c.young@mailstore.corp.test",
                       original_recipient=cy.email))
    [stored] = list_inbound(world.engine)
    assert (stored.match_method, stored.matched_delivery_ids) == ("recipient", (cy.delivery_id,))


def test_recipient_match_ignores_old_deliveries(world: World) -> None:
    cy = world.sent["cy@corp.test"]
    store_incoming(world.engine, [IncomingEmail(dsn(to="x@y.test", recipient=cy.email), "file")], LATER)
    process_all(world.engine, CTX, T0 + timedelta(days=45))
    assert delivery(world.engine, cy.delivery_id)["state"] == "delivered"
    [stored] = list_inbound(world.engine, states=["unmatched"])
    assert stored.kind == "bounce" and stored.error


def test_forged_verp_changes_nothing(world: World) -> None:
    ann = world.sent["ann@aol.test"]
    local, _, domain = ann.return_path.partition("@")
    forged = local[:-3] + ("aaa" if not local.endswith("aaa") else "bbb") + "@" + domain
    receive(world, dsn(to=forged, recipient=ann.email), envelope_to=(forged,))
    assert delivery(world.engine, ann.delivery_id)["state"] == "delivered"
    assert contact(world.engine, ann.contact_id)["status"] == "active"
    [stored] = list_inbound(world.engine)
    assert stored.state == "unmatched" and "forged" in (stored.error or "")


def test_same_dsn_twice_changes_nothing_the_second_time(world: World) -> None:
    dee = world.sent["dee@corp.test"]
    raw = dsn(to=dee.return_path, recipient=dee.email, status="4.4.7", action="failed",
              diagnostic="smtp; 451 4.4.7 delivery time expired")
    receive(world, raw, envelope_to=(dee.return_path,))
    after_first = contact(world.engine, dee.contact_id)
    again = b"Received: from relay2.test by bounces.sender.test; Fri, 1 May 2026 11:00:00 +0000\n" + \
        raw.replace(b"\r\n", b"\n")
    receive(world, again, envelope_to=(dee.return_path,))
    assert contact(world.engine, dee.contact_id)["consecutive_soft_bounces"] == \
        after_first["consecutive_soft_bounces"] == 1
    states = sorted(m.state for m in list_inbound(world.engine))
    assert states == ["duplicate", "processed"]
    assert content_digest(raw) == content_digest(again)


def test_second_different_bounce_for_same_delivery_is_not_counted_again(world: World) -> None:
    dee = world.sent["dee@corp.test"]
    receive(world, dsn(to=dee.return_path, recipient=dee.email, status="4.2.2",
                       diagnostic="smtp; 452 4.2.2 full", dsn_id="a@x"), envelope_to=(dee.return_path,))
    receive(world, dsn(to=dee.return_path, recipient=dee.email, status="4.2.2",
                       diagnostic="smtp; 452 4.2.2 still full", dsn_id="b@x"), envelope_to=(dee.return_path,))
    assert contact(world.engine, dee.contact_id)["consecutive_soft_bounces"] == 1
    assert [m.state for m in list_inbound(world.engine)] == ["processed", "processed"]


def test_delay_dsn_is_recorded_without_status_change(world: World) -> None:
    ann = world.sent["ann@aol.test"]
    receive(world, dsn(to=ann.return_path, recipient=ann.email, status="4.4.1", action="delayed",
                       diagnostic="smtp; 421 4.4.1 connection timed out"), envelope_to=(ann.return_path,))
    assert delivery(world.engine, ann.delivery_id)["state"] == "delivered"
    assert contact(world.engine, ann.contact_id)["total_bounces"] == 0
    [stored] = list_inbound(world.engine)
    assert (stored.kind, stored.state, stored.match_method) == ("delay", "processed", "verp")


def test_autoreply_is_recorded_and_changes_nothing(world: World) -> None:
    bob = world.sent["bob@aol.test"]
    receive(world, autoreply(to=bob.return_path, sender=bob.email, in_reply_to=bob.message_id),
            envelope_to=(bob.return_path,))
    assert delivery(world.engine, bob.delivery_id)["state"] == "delivered"
    assert contact(world.engine, bob.contact_id)["status"] == "active"
    [stored] = list_inbound(world.engine)
    assert (stored.kind, stored.state) == ("autoreply", "processed")


def test_complaint_opts_out_and_counts_as_complaint_activity(world: World) -> None:
    cy = world.sent["cy@corp.test"]
    receive(world, arf(to="fbl@sender.test", recipient="redacted@corp.test", message_id=cy.message_id))
    assert contact(world.engine, cy.contact_id)["status"] == "opted_out"
    assert delivery(world.engine, cy.delivery_id)["state"] == "delivered"
    complaints = [a for a in history(world.engine, world.account_id, None) if a.type == "complaint"]
    assert [(a.contact_id, a.mailing_id) for a in complaints] == [(cy.contact_id, world.mailing_id)]
    assert list_inbound(world.engine)[0].kind == "complaint"


def test_complaint_matched_by_verp_in_returned_headers(world: World) -> None:
    ann = world.sent["ann@aol.test"]
    receive(world, arf(to="fbl@sender.test", recipient="redacted", message_id=None, return_path=ann.return_path))
    assert contact(world.engine, ann.contact_id)["status"] == "opted_out"
    assert list_inbound(world.engine)[0].match_method == "verp"


@pytest.mark.parametrize("raw", [
    b"\x00\x01garbage\xff" * 100,
    b"Subject: =?bogus-charset?q?x?=\nContent-Type: text/plain; charset=x-unknown\n\n\xe9\xe8",
    b"Content-Type: multipart/mixed; boundary=a\n\n" + b"--a\nContent-Type: multipart/mixed; boundary=a\n\n" * 3000,
    b"   \n\n",
])
def test_bad_input_is_kept_raw_and_changes_nothing(world: World, raw: bytes) -> None:
    ann = world.sent["ann@aol.test"]
    receive(world, raw, envelope_to=(ann.return_path,))
    [stored] = list_inbound(world.engine)
    assert stored.state in ("failed", "processed", "unmatched")
    assert delivery(world.engine, ann.delivery_id)["state"] == "delivered"
    assert contact(world.engine, ann.contact_id)["status"] == "active"


def test_reprocess_reads_failed_emails_again(world: World) -> None:
    receive(world, b"\x00garbage")
    [stored] = list_inbound(world.engine)
    assert stored.state == "failed" and stored.error
    assert release_for_reprocess(world.engine, ["failed"]) == 1
    summary = process_all(world.engine, CTX, LATER)
    assert summary.claimed == 1 and summary.states == {"failed": 1}


def test_user_unknown_across_a_corporate_domain_is_suspected_filtering(empty_engine: Engine) -> None:  # noqa: F811
    corp = [f"u{i}@bigcorp.test" for i in range(6)]
    world = make_world(empty_engine, corp)
    raws = [dsn(to=world.sent[a].return_path, recipient=a, dsn_id=f"{a}@x") for a in corp]
    store_incoming(world.engine, [IncomingEmail(r, "smtp", envelope_to=(world.sent[a].return_path,))
                                  for r, a in zip(raws, corp, strict=True)], LATER)
    process_all(world.engine, CTX, LATER)
    people = [contact(world.engine, world.sent[a].contact_id) for a in corp]
    assert all(not p["email_invalid"] for p in people[-2:])  # 5 of 6 rejected at once: filtering
    assert delivery(world.engine, world.sent[corp[-1]].delivery_id)["suspected_filtering"]


def _delivered_event(world: World, address: str, when: datetime) -> None:
    sent = world.sent[address]
    apply_event(world.engine, CTX.policy, ContactEventRecord(
        world.account_id, sent.contact_id, ContactEvent(EventKind.DELIVERED, when),
        mailing_id=world.mailing_id, delivery_id=sent.delivery_id, cause="delivery engine"), when)


def test_late_bounce_retracts_its_own_250_so_the_address_is_invalidated(world: World) -> None:
    ann = world.sent["ann@aol.test"]
    _delivered_event(world, ann.email, T0)  # what the worker records at the 250
    receive(world, dsn(to=ann.return_path, recipient=ann.email), envelope_to=(ann.return_path,))
    person = contact(world.engine, ann.contact_id)
    assert person["status"] == "error" and person["email_invalid"]
    assert not delivery(world.engine, ann.delivery_id)["suspected_filtering"]


def test_user_unknown_after_a_later_delivery_is_suspected_filtering(world: World) -> None:
    ann = world.sent["ann@aol.test"]
    _delivered_event(world, ann.email, T0 + timedelta(minutes=30))  # another message, delivered later
    receive(world, dsn(to=ann.return_path, recipient=ann.email), envelope_to=(ann.return_path,))
    person = contact(world.engine, ann.contact_id)
    assert person["status"] == "active" and not person["email_invalid"]
    row = delivery(world.engine, ann.delivery_id)
    assert row["state"] == "bounced_hard" and row["suspected_filtering"] and row["last_reason"] == "filtered"


def test_late_bounce_and_complaint_count_against_the_sending_ip_day(world: World) -> None:
    ann, bob = world.sent["ann@aol.test"], world.sent["bob@aol.test"]
    with world.engine.begin() as conn:
        membership.create_pool(conn, "shared", "shared", T0)
        membership.add_ip(conn, "shared", "192.0.2.10", T0, schedule=warmup_schedule(Settings.of()))
        conn.execute(attempts.update().values(local_ip="192.0.2.10"))
    receive(world, dsn(to=ann.return_path, recipient=ann.email),
            arf(to="fbl@sender.test", recipient=bob.email, message_id=bob.message_id),
            envelope_to=())
    with world.engine.connect() as conn:
        rows = conn.execute(select(ip_daily_volume.c.day, ip_daily_volume.c.bounced,
                                   ip_daily_volume.c.complained)).all()
    assert rows == [(T0.date(), 1, 1)]


def test_two_processors_never_act_on_the_same_email(world: World) -> None:
    raws = [dsn(to=s.return_path, recipient=s.email, dsn_id=f"{s.email}@x") for s in world.sent.values()]
    store_incoming(world.engine, [IncomingEmail(r, "smtp") for r in raws * 5], LATER)
    summaries = []
    threads = [threading.Thread(target=lambda: summaries.append(process_all(world.engine, CTX, LATER, batch=3)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(s.claimed for s in summaries) == len(raws) * 5
    states = sorted(m.state for m in list_inbound(world.engine, limit=100))
    assert states.count("processed") == len(raws) and states.count("duplicate") == len(raws) * 4
    for sent in world.sent.values():
        assert contact(world.engine, sent.contact_id)["total_bounces"] == 1


def test_late_bounce_of_a_test_send_is_recorded_on_the_delivery_and_never_changes_the_contact(
        world: World) -> None:
    # Seed 003: a test mailing goes to named test addresses and never changes a contact's
    # status, whether its outcome comes back during the session or later by email.
    with world.engine.begin() as conn:
        conn.execute(mailings.update().where(mailings.c.id == world.mailing_id).values(kind="test"))
    ann = world.sent["ann@aol.test"]
    receive(world, dsn(to=ann.return_path, recipient=ann.email), envelope_to=(ann.return_path,))
    row = delivery(world.engine, ann.delivery_id)
    assert (row["state"], row["last_reason"], row["last_category"]) == ("bounced_hard", "userunknown", 2)
    person = contact(world.engine, ann.contact_id)
    assert person["status"] == "active" and not person["email_invalid"]
    with world.engine.connect() as conn:
        bounces = conn.execute(select(activities.c.id).where(activities.c.contact_id == ann.contact_id,
                                                             activities.c.type == "hard_bounce")).all()
    assert bounces == []
    [stored] = list_inbound(world.engine)
    assert (stored.state, stored.match_method) == ("processed", "verp")
