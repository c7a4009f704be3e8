"""Evidence a recipient's IT department can use (seed 000), from real sessions with the
sandbox MX: every fact of a connection that failed is kept, the text says what happened,
the reply keeps its enhanced status, the subject is the one received, and the PDF is one
readable page."""

from __future__ import annotations

import asyncio
import io
import re
from datetime import timedelta
from pathlib import Path

import pypdf
from sqlalchemy import Engine, select

from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.services.evidence import collect_evidence, to_pdf, to_text
from mailcarrier.storage.tables import activities, contacts, deliveries
from tests.delivery.world import T0, make_world, settings_for, start_mailing
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

ADDRESSES = ["ok@example.com", "slowdata1@example.net", "slowrcpt1@example.net", "grey1@example.net",
             "unknown1@example.org", "aol1@example.com"]
TIMED_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} ")


def _send(engine: Engine, tmp_path: Path) -> int:
    world = make_world(engine, ADDRESSES)
    start_mailing(world)
    with Sandbox(stall_seconds=3) as sandbox:
        settings = settings_for(tmp_path, sandbox.port)
        asyncio.run(run_worker(settings, engine, until_idle=True, clock=SimulatedClock(T0)))
    return world.account_id


def test_failed_connections_keep_their_facts_and_the_text_says_what_happened(
        empty_engine: Engine, tmp_path: Path) -> None:  # noqa: F811
    account_id = _send(empty_engine, tmp_path)
    now = T0 + timedelta(days=2)
    # 147: no answer after the final "." -- the addresses, ports and dialogue are kept
    report = collect_evidence(empty_engine, account_id, "slowdata1@example.net", now)
    (attempt,) = report.deliveries[0].attempts
    assert attempt.internal_code == 147
    assert attempt.local_ip == "127.0.0.1" and attempt.remote_ip == "127.0.0.1"
    assert attempt.mx_host == "127.0.0.1" and attempt.dialogue is not None
    lines = attempt.dialogue.splitlines()
    assert all(TIMED_LINE.match(line) for line in lines)  # a UTC time on every step
    assert re.search(r"\(connected \S+: 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+, MX 127\.0\.0\.1\)", lines[0])
    assert any(line.endswith("C: .") for line in lines) and "no answer within" in lines[-1]
    assert attempt.explanation is not None and "may have accepted" in attempt.explanation
    assert "could not be reached" not in to_text(report)
    # 146 (no answer to RCPT): facts kept on every one of the four attempts
    slow = collect_evidence(empty_engine, account_id, "slowrcpt1@example.net", now).deliveries[0]
    assert [t.internal_code for t in slow.attempts] == [146, 146, 146, 146]
    assert all(t.local_ip and t.remote_ip and t.dialogue for t in slow.attempts)
    # greylisting is described as greylisting, not as a blocklist
    grey = collect_evidence(empty_engine, account_id, "grey1@example.net", now).deliveries[0]
    assert grey.attempts[0].explanation is not None and "Greylisting" in grey.attempts[0].explanation
    assert "blocklist" not in to_text(collect_evidence(empty_engine, account_id, "grey1@example.net", now))
    # the reply line keeps the enhanced status
    unknown = collect_evidence(empty_engine, account_id, "unknown1@example.org", now)
    assert "Reply:         550 5.1.1 <unknown1@example.org>" in to_text(unknown)
    # the subject the recipient received, not the template
    ok = collect_evidence(empty_engine, account_id, "ok@example.com", now)
    assert ok.deliveries[0].subject == "Hi N0"
    with empty_engine.connect() as conn:
        assert conn.execute(select(deliveries.c.subject).where(
            deliveries.c.email == "grey1@example.net")).scalar_one() == "Hi N3"


def test_accepted_then_bounced_says_so(empty_engine: Engine, tmp_path: Path) -> None:  # noqa: F811
    account_id = _send(empty_engine, tmp_path)
    with empty_engine.begin() as conn:
        row = conn.execute(select(deliveries.c.mailing_id, deliveries.c.contact_id).where(
            deliveries.c.email == "aol1@example.com")).one()
        conn.execute(activities.insert().values(
            account_id=account_id, contact_id=row.contact_id, mailing_id=row.mailing_id,
            type="hard_bounce", occurred_at=T0 + timedelta(hours=3), reason="userunknown", category=2,
            reply_code=550, enhanced_status="5.1.1", diagnostic="550 5.1.1 user unknown",
            remote_mta="mx.example.com", details={"late": True}))
    report = collect_evidence(empty_engine, account_id, "aol1@example.com", T0 + timedelta(days=1))
    first = report.deliveries[0].guidance[0] + report.deliveries[0].guidance[1]
    assert "accepted this message" in first and "answering: 250" in first
    assert "a bounce came back for it from mx.example.com: 550 5.1.1" in first
    assert "refused this message" not in to_text(report)


def test_pdf_is_one_page_with_fields_dialogue_and_whole_words(empty_engine: Engine,  # noqa: F811
                                                              tmp_path: Path) -> None:
    account_id = _send(empty_engine, tmp_path)
    report = collect_evidence(empty_engine, account_id, "slowrcpt1@example.net", T0 + timedelta(days=2))
    reader = pypdf.PdfReader(io.BytesIO(to_pdf(report)))
    assert len(reader.pages) == 1
    text = reader.pages[0].extract_text()
    for fact in ("Delivery evidence for slowrcpt1@example.net", "Subject", "Hi N2", "Return-path",
                 "Sending IP", "Receiving IP / MX", "SMTP dialogue of attempt 4", "RCPT TO:",
                 "What the receiving side can check", "127.0.0.1"):
        assert fact in text, fact
    words = set(re.findall(r"[A-Za-z]+", text))
    # wrapping at word boundaries: the guidance's long words come out whole
    assert {"connections", "greylisting", "envelope", "accepted", "deliver"} <= words
    assert "never accepted it" in text and "refused this message" not in text
    with empty_engine.connect() as conn:
        assert conn.execute(select(contacts.c.status).where(
            contacts.c.email == "slowrcpt1@example.net")).scalar_one() == "active"
