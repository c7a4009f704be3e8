"""Delivery evidence for one recipient: attempts, later events, guidance; text, JSON and PDF."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from mailcarrier.domain.errors import NotFoundError
from mailcarrier.services.evidence import collect_evidence, to_json, to_pdf, to_text
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.tables import activities
from tests.services.report_world import T0, World, build
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

NOW = T0 + timedelta(days=2)


@pytest.fixture
def world(empty_engine: Engine) -> Iterator[World]:  # noqa: F811
    upgrade(empty_engine)
    yield build(empty_engine)


def test_delivered_evidence_has_the_four_facts_and_dialogue(world: World) -> None:
    report = collect_evidence(world.engine, world.account_id, "Bob@Example.com", NOW)
    (dv,) = report.deliveries
    assert dv.state == "delivered" and len(dv.attempts) == 2
    last = dv.attempts[-1]
    assert (last.local_ip, last.remote_ip, last.mx_host) == ("192.0.2.10", "198.51.100.7", "mx1.example.net")
    assert last.queue_id == "4AbC123" and last.tls_version == "TLSv1.3"
    assert last.started_at.utcoffset() == timedelta(0)
    text = to_text(report)
    for fact in ("192.0.2.10", "198.51.100.7", "mx1.example.net", "4AbC123", "(UTC)",
                 dv.return_path or "", "RCPT TO:<bob@example.com>", "safelist"):
        assert fact in text, fact
    assert "queue id 4AbC123" in " ".join(dv.guidance)


def test_later_bounce_and_filtering_are_shown(world: World) -> None:
    with world.engine.begin() as conn:
        conn.execute(activities.insert().values(
            account_id=world.account_id, contact_id=world.contacts["ann@example.com"],
            mailing_id=world.mailing_id, type="soft_bounce", occurred_at=T0 + timedelta(hours=5),
            reason="mailboxfull", category=3, reply_code=452, enhanced_status="4.2.2",
            diagnostic="mailbox over quota", remote_mta="mx1.example.net"))
    report = collect_evidence(world.engine, world.account_id, "ann@example.com", NOW,
                              mailing_id=world.mailing_id)
    (dv,) = report.deliveries
    (later,) = dv.later
    assert later.type == "soft_bounce" and later.explanation and "quota" in later.explanation
    assert "mailbox over quota" in to_text(report)
    filtered = collect_evidence(world.engine, world.account_id, "dee@corp.example", NOW)
    assert filtered.deliveries[0].suspected_filtering
    assert filtered.deliveries[0].later == []  # the refusal is the attempt itself, not a later event
    assert "refused" in filtered.deliveries[0].guidance[0]


def test_not_sent_recipient_says_nothing_reached_them(world: World) -> None:
    report = collect_evidence(world.engine, world.account_id, "ida@example.org", NOW)
    assert report.deliveries[0].attempts == []
    assert "Nothing reached your servers" in report.deliveries[0].guidance[0]


def test_json_and_pdf_exports(world: World) -> None:
    report = collect_evidence(world.engine, world.account_id, "cy@example.com", NOW)
    data = json.loads(json.dumps(to_json(report)))
    assert data["deliveries"][0]["attempts"][0]["reply_code"] == 550
    assert data["deliveries"][0]["attempts"][0]["started_at"].endswith("+00:00")
    pdf = to_pdf(report)
    assert pdf.startswith(b"%PDF-") and len(pdf) > 1000


def test_other_accounts_evidence_is_not_found(world: World) -> None:
    with pytest.raises(NotFoundError):
        collect_evidence(world.engine, world.account_id, "zed@example.com", NOW)
    with pytest.raises(NotFoundError):
        collect_evidence(world.engine, world.other_account_id, "ann@example.com", NOW)
    with pytest.raises(NotFoundError):
        collect_evidence(world.engine, world.account_id, "ann@example.com", NOW,
                         mailing_id=world.other_mailing_id)
    with pytest.raises(NotFoundError):
        collect_evidence(world.engine, world.account_id, "ann\x00@example.com", NOW)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(address=st.text(max_size=80))
def test_any_address_gives_evidence_or_not_found(world: World, address: str) -> None:
    try:
        report = collect_evidence(world.engine, world.account_id, address, NOW)
    except NotFoundError:
        return
    to_pdf(report)
