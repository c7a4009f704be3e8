"""Postfix as the receiving MX (STARTTLS, SMTPUTF8) and as the source of genuine DSNs.

The worker delivers a mailing to an own Postfix instance. Postfix accepts every recipient with
250 (``smtpd_reject_unlisted_recipient = no``), delivers the known mailboxes and bounces the
unknown one at once with its own RFC 3464 DSN, which it mails to our VERP return path through
its transport map, i.e. to ``mailcarrier inbound``: the fast bounce of issue 21, which can
reach inbound before the worker has committed the 250.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from sqlalchemy import Engine, select

from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.inbound.smtp_server import InboundServer, accepted_addresses
from mailcarrier.services.inbound import InboundContext, list_inbound
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.tables import attempts, contacts, deliveries
from tests.delivery.world import T0, make_world, settings_for, start_mailing
from tests.interop.servers import Postfix, free_port

UTF8 = "jösé@pf.test"


def _wait(check: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def _state(engine: Engine, email: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(deliveries.c.state).where(deliveries.c.email == email)).scalar_one())


def test_postfix_receives_over_starttls_and_its_dsn_bounces_the_unknown_user(tmp_path: Path) -> None:
    inbound_port = free_port()
    postfix = Postfix(mailboxes=["ann", "jösé"],
                      routes={"bounces.shop.example": f"[127.0.0.1]:{inbound_port}"})
    engine = make_engine(f"sqlite:///{tmp_path / 'mc.db'}")
    start_mailing(make_world(engine, ["ann@pf.test", "gone@pf.test", UTF8]))
    settings = settings_for(tmp_path, postfix.port)
    with postfix, InboundServer(engine, InboundContext.from_settings(settings),
                                accept=accepted_addresses(settings), port=inbound_port) as inbound:
        stats = asyncio.run(run_worker(settings, engine, until_idle=True, clock=SimulatedClock(T0)))
        assert stats.delivered == 3  # Postfix said 250 to all three, the unknown user included
        log = postfix.wait_log("sender non-delivery notification")
        postfix.wait_log(f"relay=127.0.0.1[127.0.0.1]:{inbound_port}")  # the DSN reached inbound
        assert _wait(lambda: _state(engine, "gone@pf.test") == "bounced_hard"), postfix.maillog()[-3000:]
        assert inbound.wait_idle(30)
        [ann_copy] = postfix.delivered("ann")
        [utf8_copy] = postfix.delivered("jösé")
    with engine.connect() as conn:
        rows = {r.email: r for r in conn.execute(select(deliveries))}
        tried = {r.delivery_id: r for r in conn.execute(select(attempts))}
        people = {r.email: r for r in conn.execute(select(contacts))}
    ann = tried[rows["ann@pf.test"].id]
    # evidence: Postfix's queue id from its 250, the TLS it negotiated, the dialogue
    assert ann.queue_id and f"{ann.queue_id}: to=<ann@pf.test>" in log and "status=sent" in log
    assert ann.tls_version == "TLSv1.3" and ann.tls_cipher
    assert "STARTTLS" in (ann.dialogue or "")
    assert rows["ann@pf.test"].message_id.strip("<>") in ann_copy.decode()
    assert ann_copy.count(b"DKIM-Signature:") == 2  # ed25519 beside RSA (settings_for's algorithm)
    # SMTPUTF8 declared: Postfix (strict_smtputf8 = yes) took the UTF-8 address
    assert rows[UTF8].state == "delivered" and "SMTPUTF8" in (tried[rows[UTF8].id].dialogue or "")
    assert UTF8.encode() in utf8_copy
    # the genuine Postfix DSN: matched by VERP, a hard bounce, the contact invalid
    assert re.search(r"to=<gone@pf\.test>.*dsn=5\.1\.1, status=bounced", log)
    gone = rows["gone@pf.test"]
    assert gone.state == "bounced_hard" and gone.last_enhanced_status == "5.1.1"
    assert gone.delivered_at is not None  # the 250 stays on record beside the bounce
    assert people["gone@pf.test"].status == "error" and people["gone@pf.test"].email_invalid
    assert people["ann@pf.test"].status == "active" and people[UTF8].status == "active"
    [dsn] = [m for m in list_inbound(engine) if m.kind == "bounce"]
    assert (dsn.state, dsn.match_method, dsn.matched_delivery_ids) == ("processed", "verp", (gone.id,))
    engine.dispose()


def test_postfix_dsn_that_outruns_the_workers_commit_still_bounces(tmp_path: Path) -> None:
    """The first recipient is unknown; Postfix mails its DSN while the worker is still sending
    the rest of the batch, before the batch (and that 250) is committed: the DSN waits.
    (3 runs of 3 here logged "inbound email 1 waits for delivery 1's send to be recorded".)"""
    inbound_port = free_port()
    known = [f"user{i}" for i in range(40)]
    postfix = Postfix(mailboxes=known, routes={"bounces.shop.example": f"[127.0.0.1]:{inbound_port}"})
    engine = make_engine(f"sqlite:///{tmp_path / 'mc.db'}")
    start_mailing(make_world(engine, ["gone@pf.test", *(f"{u}@pf.test" for u in known)]))
    settings = settings_for(tmp_path, postfix.port, delivery_concurrency=1, dkim_algorithm="ed25519-only")
    with postfix, InboundServer(engine, InboundContext.from_settings(settings),
                                accept=accepted_addresses(settings), port=inbound_port) as inbound:
        stats = asyncio.run(run_worker(settings, engine, until_idle=True, clock=SimulatedClock(T0)))
        assert stats.delivered == len(known) + 1
        postfix.wait_log(f"relay=127.0.0.1[127.0.0.1]:{inbound_port}")
        assert _wait(lambda: _state(engine, "gone@pf.test") == "bounced_hard"), postfix.maillog()[-3000:]
        assert inbound.wait_idle(30)
    with engine.connect() as conn:
        people = {r.email: r for r in conn.execute(select(contacts))}
    assert people["gone@pf.test"].status == "error" and people["gone@pf.test"].email_invalid
    assert all(people[f"{u}@pf.test"].status == "active" for u in known)
    engine.dispose()
