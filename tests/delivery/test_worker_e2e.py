"""The worker end to end against the sandbox MX, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from email import message_from_bytes
from pathlib import Path

import dkim
from sqlalchemy import Engine, select, update

from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.services.figures import mailing_figures
from mailcarrier.services.mailings import MailingDraft, create_mailing, send_mailing
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.tables import attempts, contacts, deliveries, mailings
from tests.delivery.world import T0, make_world, settings_for, start_mailing
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

ADDRESSES = [
    *(f"user{i}@example.com" for i in range(12)),
    *(f"friend{i}@gmail.com" for i in range(5)),
    "unknown1@gmail.com", "unknown2@outlook.com", "full1@example.org", "grey1@example.net",
    "slowrcpt1@example.net", "slowdata1@example.net", "drop1@example.org",
]


def test_every_recipient_ends_in_one_final_state_with_evidence(empty_engine: Engine,  # noqa: F811
                                                               tmp_path: Path) -> None:
    world = make_world(empty_engine, [*ADDRESSES, "gone@example.com"],
                       statuses={"gone@example.com": "opted_out"})
    mailing_id = start_mailing(world)
    with Sandbox(stall_seconds=3) as sandbox:
        settings = settings_for(tmp_path, sandbox.port)
        stats = asyncio.run(run_worker(settings, empty_engine, until_idle=True, clock=SimulatedClock(T0)))
        received = list(sandbox.received)
    figures = mailing_figures(empty_engine, world.account_id, mailing_id)
    with empty_engine.connect() as conn:
        rows = {r.email: r for r in conn.execute(
            select(deliveries).where(deliveries.c.mailing_id == mailing_id))}
        tries = conn.execute(select(attempts)).all()
        state = conn.execute(select(mailings.c.state)).scalar_one()
        status = dict(conn.execute(select(contacts.c.email, contacts.c.status)).all())
    assert state == "done"
    assert {r.state for r in rows.values()} <= {"delivered", "bounced_hard", "bounced_soft", "suppressed"}
    assert rows["gone@example.com"].state == "suppressed" and figures.suppressed == 1
    assert rows["unknown1@gmail.com"].state == "bounced_hard"
    assert rows["unknown1@gmail.com"].last_category == 2
    assert status["unknown1@gmail.com"] == "error"  # contact rules applied at the final state
    assert rows["full1@example.org"].state == "bounced_soft"
    assert rows["full1@example.org"].attempt_count == 4  # the whole 30 h schedule ran
    assert rows["grey1@example.net"].state == "delivered" and rows["grey1@example.net"].attempt_count == 2
    assert rows["slowrcpt1@example.net"].state == "bounced_soft"  # 146 four times: expired
    # No answer after the final ".": outcome unknown, not resent, counted apart.
    assert rows["slowdata1@example.net"].outcome_unknown and rows["slowdata1@example.net"].attempt_count == 1
    assert figures.outcome_unknown == 1
    delivered = [r for r in rows.values() if r.state == "delivered" and not r.outcome_unknown]
    assert len(delivered) == 12 + 5 + 1
    # What the sandbox got is exactly what the store says was delivered, each once; the
    # outcome-unknown one may or may not have been kept (the sandbox stalls past our timeout).
    got = sorted(r.recipient for r in received if r.recipient != "slowdata1@example.net")
    assert got == sorted(r.email for r in delivered)
    # Evidence on every delivered attempt.
    by_id = {r.id: r for r in rows.values()}
    for attempt in tries:
        if attempt.outcome == "delivered":
            assert attempt.local_ip == "127.0.0.1" and attempt.remote_ip == "127.0.0.1"
            assert attempt.queue_id and attempt.queue_id.startswith("SBX")
            assert "MAIL FROM:<b-" in attempt.dialogue and "250" in attempt.dialogue
            assert attempt.return_path == by_id[attempt.delivery_id].return_path
    assert stats.delivered == len(delivered)


def test_messages_are_signed_personalised_and_carry_list_headers(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    world = make_world(engine, ["ann@example.com"])
    start_mailing(world)
    with Sandbox() as sandbox:
        raw: list[bytes] = []
        original = sandbox.handler.handle_DATA

        async def keep(server, session, envelope):  # type: ignore[no-untyped-def]
            raw.append(envelope.original_content)
            return await original(server, session, envelope)

        sandbox.handler.handle_DATA = keep  # type: ignore[method-assign]
        settings = settings_for(tmp_path, sandbox.port, dkim_algorithm="rsa")
        asyncio.run(run_worker(settings, engine, until_idle=True))
    assert len(raw) == 1
    message = message_from_bytes(raw[0])
    assert message["Subject"] == "Hi N0"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "<https://mail.shop.example/u/" in message["List-Unsubscribe"]
    assert "mailto:unsubscribe@bounces.shop.example" in message["List-Unsubscribe"]
    assert message["Feedback-ID"].endswith(":regular:mailcarrier")
    assert message["Message-ID"].endswith("@shop.example>")
    key_txt = (tmp_path / "data" / "dkim" / "shop.example" / "mc1.txt").read_text()
    record = "".join(key_txt.split('"')[1::2]).encode()  # the zone record's strings, joined
    assert dkim.verify(raw[0], dnsfunc=lambda name, timeout=5: record)
    engine.dispose()


def test_a_contact_whose_data_breaks_the_template_fails_alone(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'bad.db'}")
    world = make_world(engine, ["ok@example.com", "odd@example.com"])
    with engine.begin() as conn:
        conn.execute(update(contacts).where(contacts.c.email == "ok@example.com").values(fields={"n": 41}))
        conn.execute(update(contacts).where(contacts.c.email == "odd@example.com").values(fields={"n": "x"}))
    mailing_id = create_mailing(engine, MailingDraft(
        account_id=world.account_id, from_address="news@shop.example", subject="Hi",
        text="Your number: {{ fields.n + 1 }}", audience_id=world.audience_id), T0)
    send_mailing(engine, world.account_id, mailing_id, T0)
    with Sandbox() as sandbox:
        stats = asyncio.run(run_worker(settings_for(tmp_path, sandbox.port), engine, until_idle=True))
        assert [r.recipient for r in sandbox.received] == ["ok@example.com"]
    with engine.connect() as conn:
        rows = {r.email: r for r in conn.execute(select(deliveries))}
        state = conn.execute(select(mailings.c.state)).scalar_one()
    assert rows["ok@example.com"].state == "delivered"
    odd = rows["odd@example.com"]
    assert odd.state == "failed" and odd.attempt_count == 0 and "odd@example.com" in odd.last_diagnostic
    assert stats.failed == 1 and state == "done"
    engine.dispose()
