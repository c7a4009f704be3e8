"""Automated mailings (a welcome on audience join, a per-contact trigger) and test mailings
(named addresses only, no contact status change), end to end with the worker and the
sandbox MX (seed 003)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.domain.errors import ConflictError
from mailcarrier.services import automation, reports
from mailcarrier.services.mailings import MailingDraft, create_mailing, get_mailing, send_mailing
from mailcarrier.services.test_sends import send_test
from mailcarrier.storage import contacts as contact_repo
from mailcarrier.storage.tables import audience_members, contacts, deliveries
from tests.delivery.world import HTML, T0, TEXT, World, make_world, settings_for
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture


def _draft(world: World, kind: str, subject: str = "Welcome {{ first_name }}") -> int:
    return create_mailing(world.engine, MailingDraft(
        account_id=world.account_id, from_address="news@shop.example", subject=subject,
        html=HTML, text=TEXT, kind=kind, audience_id=world.audience_id), T0)


def _join(world: World, address: str, when: object, status: str = "active") -> int:
    with world.engine.begin() as conn:
        cid = contact_repo.add_contact(conn, world.account_id, address, when, first_name="Neo")  # type: ignore[arg-type]
        conn.execute(update(contacts).where(contacts.c.id == cid).values(status=status))
        conn.execute(audience_members.insert().values(audience_id=world.audience_id, contact_id=cid,
                                                      added_at=when))
    return cid


def _run(world: World, tmp_path: Path, start: object) -> list[str]:
    with Sandbox() as sandbox:
        settings = settings_for(tmp_path, sandbox.port)
        asyncio.run(run_worker(settings, world.engine, until_idle=True,
                               clock=SimulatedClock(start)))  # type: ignore[arg-type]
        return [r.recipient for r in sandbox.received]


def test_welcome_goes_to_each_contact_joining_after_activation(empty_engine: Engine,  # noqa: F811
                                                                tmp_path: Path) -> None:
    world = make_world(empty_engine, ["old@example.com"])
    welcome = _draft(world, "automated")
    with pytest.raises(ConflictError, match="only an automated"):
        automation.activate(empty_engine, world.account_id, _draft(world, "regular"), "audience_join", T0)
    automation.activate(empty_engine, world.account_id, welcome, "audience_join", T0)
    with pytest.raises(ConflictError, match="only a draft"):
        send_mailing(empty_engine, world.account_id, welcome, T0)
    later = T0 + timedelta(minutes=5)
    _join(world, "new@example.com", later)
    _join(world, "gone@example.com", later, status="opted_out")
    assert _run(world, tmp_path, later) == ["new@example.com"]  # not the old member, not the opted-out
    summary = get_mailing(empty_engine, world.account_id, welcome)
    assert (summary.state, summary.trigger, summary.recipients_total) == ("sending", "audience_join", 1)
    with empty_engine.connect() as conn:
        subject = conn.execute(select(deliveries.c.subject).where(deliveries.c.mailing_id == welcome)).scalar_one()
    assert subject == "Welcome Neo"
    # a second joiner later gets it too; the automation is listed with its own figures
    _join(world, "newer@example.com", later + timedelta(days=1))
    assert _run(world, tmp_path, later + timedelta(days=1)) == ["newer@example.com"]
    [listed] = reports.list_mailings(empty_engine, world.account_id, "automated")
    assert (listed.id, listed.delivered) == (welcome, 2)
    assert reports.list_mailings(empty_engine, world.account_id, "in_progress") == []


def test_api_trigger_sends_a_stored_automation_to_one_contact(empty_engine: Engine,  # noqa: F811
                                                              tmp_path: Path) -> None:
    world = make_world(empty_engine, ["ann@example.com", "bob@example.com"])
    ids = {e: i for e, i in empty_engine.connect().execute(select(contacts.c.email, contacts.c.id))}
    mailing = _draft(world, "automated", subject="Your order, {{ first_name }}")
    with pytest.raises(ConflictError, match="not an active automated"):
        automation.trigger_for_contact(empty_engine, world.account_id, mailing, ids["ann@example.com"], T0)
    automation.activate(empty_engine, world.account_id, mailing, "api", T0)
    automation.trigger_for_contact(empty_engine, world.account_id, mailing, ids["ann@example.com"], T0)
    with pytest.raises(ConflictError, match="already had"):
        automation.trigger_for_contact(empty_engine, world.account_id, mailing, ids["ann@example.com"], T0)
    assert _run(world, tmp_path, T0) == ["ann@example.com"]
    with empty_engine.begin() as conn:
        conn.execute(update(contacts).where(contacts.c.id == ids["bob@example.com"]).values(status="error"))
    with pytest.raises(ConflictError, match="only active contacts"):
        automation.trigger_for_contact(empty_engine, world.account_id, mailing, ids["bob@example.com"], T0)


def test_test_mailing_goes_to_named_addresses_and_changes_no_contact(empty_engine: Engine,  # noqa: F811
                                                                     tmp_path: Path) -> None:
    world = make_world(empty_engine, ["unknown1@example.org", *(f"user{i}@example.com" for i in range(3))])
    regular = _draft(world, "regular")
    with pytest.raises(ConflictError, match="only to named addresses"):
        send_mailing(empty_engine, world.account_id, _draft(world, "test"), T0)  # the whole audience
    test = send_test(empty_engine, world.account_id, regular, ["unknown1@example.org", "qa@example.net"], T0)
    assert test.kind == "test" and test.recipients_total == 2
    assert sorted(_run(world, tmp_path, T0)) == ["qa@example.net"]  # unknown1 refused with 550 5.1.1
    with empty_engine.connect() as conn:
        person = conn.execute(select(contacts).where(contacts.c.email == "unknown1@example.org")).one()
        refused = conn.execute(select(deliveries.c.state).where(
            deliveries.c.mailing_id == test.id, deliveries.c.email == "unknown1@example.org")).scalar_one()
    assert refused == "bounced_hard"
    assert (person.status, person.email_invalid, person.total_bounces) == ("active", False, 0)
    with pytest.raises(ValueError, match="at most 20"):
        send_test(empty_engine, world.account_id, regular, [f"t{i}@example.net" for i in range(21)], T0)
