"""The sandbox's asynchronous bounce: 250 now, an RFC 3464 DSN to the VERP return path later."""

from __future__ import annotations

import asyncio
import time
from email import message_from_bytes
from pathlib import Path
from typing import Any

from mailcarrier.delivery.sandbox import Sandbox, build_dsn
from mailcarrier.delivery.transport import SmtpSession
from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.domain.bounce import parse_bounce
from mailcarrier.domain.verp import decode_return_path
from mailcarrier.domain.vocabulary import Reason
from mailcarrier.storage.engine import make_engine
from tests.delivery.world import T0, make_world, settings_for, start_mailing


def test_build_dsn_is_a_delivery_status_report_our_parser_reads() -> None:
    headers = b"Message-ID: <m1@shop.example>\r\nSubject: hi\r\nX-Mailcarrier-Delivery: 7\r\n"
    raw = build_dsn("b-1.2.3.abc@bounces.example", "aol1@aol.com", headers, reporting_mta="mx.aol.com")
    message = message_from_bytes(raw)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    parts = [p.get_content_type() for p in message.get_payload()]
    assert parts == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    report = parse_bounce(raw)
    assert report is not None and report.kind == "dsn"
    assert report.original_message_id in {"<m1@shop.example>", "m1@shop.example"}
    (record,) = report.records
    assert record.recipient == "aol1@aol.com" and record.status == "5.1.1"
    assert record.reason is Reason.USERUNKNOWN


def test_accepted_then_bounced_later_to_the_verp_address(tmp_path: Path) -> None:
    with Sandbox() as inbound:  # stands in for `mailcarrier inbound`: it records what it is sent
        raw: list[bytes] = []
        original = inbound.handler.handle_DATA

        async def keep(server: Any, session: Any, envelope: Any) -> str:
            raw.append(envelope.original_content)
            return await original(server, session, envelope)

        inbound.handler.handle_DATA = keep  # type: ignore[method-assign]
        with Sandbox(dsn_target=(inbound.host, inbound.port), dsn_delay=0.2) as mx:
            engine = make_engine(f"sqlite:///{tmp_path / 'dsn.db'}")
            world = make_world(engine, ["aol1@aol.com", "ann@example.com"])
            start_mailing(world)
            settings = settings_for(tmp_path, mx.port)
            stats = asyncio.run(run_worker(settings, engine, until_idle=True, clock=SimulatedClock(T0)))
            deadline = time.monotonic() + 5
            while not mx.handler.dsns_sent and time.monotonic() < deadline:
                time.sleep(0.05)
            assert mx.handler.dsn_errors == []
    assert stats.delivered == 2  # both accepted with 250 at the time
    assert len(mx.handler.dsns_sent) == 1
    (dsn,) = [r for r in inbound.received if r.recipient.startswith("b-")]
    assert dsn.mail_from in {"<>", ""}
    verp = decode_return_path(dsn.recipient, key=settings.resolved_secret())
    assert verp is not None and verp.account_id == world.account_id
    report = parse_bounce(raw[0])
    assert report is not None and report.records[0].recipient == "aol1@aol.com"
    engine.dispose()


def test_pipelining_is_offered_and_used() -> None:
    async def run(port: int) -> str:
        session = await SmtpSession.open("127.0.0.1", port, helo_name="mta.test", timeout=5)
        try:
            assert "PIPELINING" in session.extensions
            ok = await session.send("b@bounce.test", "ann@example.com", b"Subject: x\r\n\r\nhi\r\n")
            refused = await session.send("b@bounce.test", "unknown@example.com", b"Subject: x\r\n\r\nhi\r\n")
            again = await session.send("b@bounce.test", "bob@example.com", b"Subject: x\r\n\r\nhi\r\n")
        finally:
            await session.close()
        assert ok.reply is not None and ok.reply.code == 250 and ok.queue_id
        assert refused.reply is not None and refused.reply.code == 550
        assert again.reply is not None and again.reply.code == 250
        return again.dialogue

    with Sandbox() as sandbox:
        dialogue = asyncio.run(run(sandbox.port))
        assert [r.recipient for r in sandbox.received] == ["ann@example.com", "bob@example.com"]
    # Pipelined: the three envelope commands precede their replies in the dialogue.
    lines = [line.split(" ", 1)[1] for line in dialogue.splitlines()]  # without each step's time
    start = lines.index("C: MAIL FROM:<b@bounce.test>")
    assert lines[start + 1].startswith("C: RCPT TO:") and lines[start + 2] == "C: DATA"
