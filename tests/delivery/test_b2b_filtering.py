"""B2B fake "user unknown" recognised during the SMTP session (seeds 002, 004).

The sandbox MX plays a corporate gateway that refuses real mailboxes with 550 5.1.1. The
worker must hold those contacts as suspected filtering (active, not invalid) instead of
invalidating them, within one mailing and across mailings, while a genuine unknown user
elsewhere is still invalidated; the response page and the contact show the hold.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, select, update

from mailcarrier.delivery.contact_outcomes import apply_pending
from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.domain.contact_status import StatusPolicy
from mailcarrier.services import reports
from mailcarrier.storage import contacts as contact_repo
from mailcarrier.storage.tables import activities, audience_members, contacts, deliveries
from tests.delivery.world import T0, make_world, settings_for, start_mailing
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

GATEWAY = [*(f"staff{i}@gateway.example" for i in range(6)), *(f"vip{i}@gateway.example" for i in range(4))]


def _contacts(engine: Engine) -> dict[str, object]:
    with engine.connect() as conn:
        return {r.email: r for r in conn.execute(select(contacts))}


def _deliveries(engine: Engine, mailing_id: int) -> dict[str, object]:
    with engine.connect() as conn:
        return {r.email: r for r in conn.execute(select(deliveries).where(deliveries.c.mailing_id == mailing_id))}


def test_gateway_refusing_six_of_ten_real_mailboxes_holds_them(empty_engine: Engine,  # noqa: F811
                                                              tmp_path: Path) -> None:
    world = make_world(empty_engine, [*GATEWAY, "unknown1@example.org", "ann@example.org"])
    mailing_id = start_mailing(world)
    with Sandbox() as sandbox:
        settings = settings_for(tmp_path, sandbox.port)
        asyncio.run(run_worker(settings, empty_engine, until_idle=True, clock=SimulatedClock(T0)))
    people, rows = _contacts(empty_engine), _deliveries(empty_engine, mailing_id)
    for i in range(6):
        held, row = people[f"staff{i}@gateway.example"], rows[f"staff{i}@gateway.example"]
        assert (held.status, held.email_invalid, held.suspected_filtering) == ("active", False, True)  # type: ignore[attr-defined]
        assert row.suspected_filtering and row.last_reason == "filtered" and row.last_category == 1  # type: ignore[attr-defined]
        assert row.state == "bounced_hard"  # type: ignore[attr-defined]
    # a genuine unknown user at a domain that accepts everyone else is still invalid
    genuine = people["unknown1@example.org"]
    assert (genuine.status, genuine.email_invalid, genuine.suspected_filtering) == ("error", True, False)  # type: ignore[attr-defined]
    assert not rows["unknown1@example.org"].suspected_filtering  # type: ignore[attr-defined]
    page = reports.response_page(empty_engine, world.account_id, mailing_id)
    assert page.suspected_filtering == 6
    with empty_engine.connect() as conn:
        why = conn.execute(select(activities.c.details).where(
            activities.c.type == "hard_bounce", activities.c.reason == "filtered")).scalars().all()
    assert len(why) == 6 and all(d["suspected_filtering"] for d in why)
    assert any("rejected 6 of 10 recipients of this mailing" in note for note in why[0]["policy"])


def test_gateway_suddenly_refusing_addresses_it_accepted_before(empty_engine: Engine,  # noqa: F811
                                                               tmp_path: Path) -> None:
    staff = [f"staff{i}@corp.example" for i in range(6)]
    vips = [f"vip{i}@corp.example" for i in range(30)]
    world = make_world(empty_engine, [*staff, *vips])
    first = start_mailing(world)
    with Sandbox() as sandbox:
        settings = settings_for(tmp_path, sandbox.port)
        asyncio.run(run_worker(settings, empty_engine, until_idle=True, clock=SimulatedClock(T0)))
        assert {r.state for r in _deliveries(empty_engine, first).values()} == {"delivered"}
        # a week later the gateway refuses the staff it took mail for, and a newcomer
        later = T0 + timedelta(days=7)
        with empty_engine.begin() as conn:
            newcomer = contact_repo.add_contact(conn, world.account_id, "newcomer@corp.example", later)
            conn.execute(audience_members.insert().values(audience_id=world.audience_id,
                                                          contact_id=newcomer, added_at=later))
        second = start_mailing(world, now=later)
        sandbox.handler.filtering_domains.add("corp.example")
        asyncio.run(run_worker(settings, empty_engine, until_idle=True, clock=SimulatedClock(later)))
    rows = _deliveries(empty_engine, second)
    refused = [e for e, r in rows.items() if r.state == "bounced_hard"]  # type: ignore[attr-defined]
    assert sorted(refused) == sorted([*staff, "newcomer@corp.example"])  # 7 of 37: under 30%
    people = _contacts(empty_engine)
    for address in refused:
        assert people[address].suspected_filtering and people[address].status == "active"  # type: ignore[attr-defined]
        assert not people[address].email_invalid  # type: ignore[attr-defined]
    with empty_engine.connect() as conn:
        notes = conn.execute(select(activities.c.details).join(contacts, contacts.c.id == activities.c.contact_id)
                             .where(contacts.c.email == "newcomer@corp.example",
                                    activities.c.type == "hard_bounce")).scalar_one()
    # the newcomer was never delivered to: only the domain's behaviour across mailings tells
    assert any("suddenly rejects 6 addresses it accepted in earlier mailings" in n for n in notes["policy"])


def test_refusals_applied_before_the_evidence_crossed_the_threshold_are_rejudged(
        empty_engine: Engine) -> None:  # noqa: F811
    """A big domain's recipients land in several batches: the first refusals are applied as
    invalid before the domain has refused enough to look like a gateway; once it does, those
    contacts are held too instead of staying invalid."""
    world = make_world(empty_engine, GATEWAY)
    mailing_id = start_mailing(world)

    def refuse(addresses: list[str]) -> None:
        with empty_engine.begin() as conn:
            conn.execute(update(deliveries).where(deliveries.c.email.in_(addresses)).values(
                state="bounced_hard", last_reason="userunknown", last_category=2, last_reply_code=550,
                attempt_count=1, final_at=T0, contact_event_pending=True))

    refuse([f"staff{i}@gateway.example" for i in range(3)])  # first batch: 3 of 10, under 5
    apply_pending(empty_engine, StatusPolicy(), T0)
    assert [_contacts(empty_engine)[f"staff{i}@gateway.example"].email_invalid for i in range(3)] \
        == [True, True, True]  # type: ignore[attr-defined]
    refuse([f"staff{i}@gateway.example" for i in range(3, 6)])  # second batch: now 6 of 10
    apply_pending(empty_engine, StatusPolicy(), T0 + timedelta(minutes=1))
    people, rows = _contacts(empty_engine), _deliveries(empty_engine, mailing_id)
    for i in range(6):
        person = people[f"staff{i}@gateway.example"]
        assert (person.status, person.email_invalid, person.suspected_filtering) == ("active", False, True)  # type: ignore[attr-defined]
        assert rows[f"staff{i}@gateway.example"].suspected_filtering  # type: ignore[attr-defined]
    assert reports.response_page(empty_engine, world.account_id, mailing_id).suspected_filtering == 6
    apply_pending(empty_engine, StatusPolicy(), T0 + timedelta(minutes=2))  # nothing left to redo
    with empty_engine.connect() as conn:
        redone = conn.execute(select(activities.c.id).where(
            activities.c.type == "filtering_suspected")).all()
    assert len(redone) == 3
