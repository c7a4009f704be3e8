"""swaks (a third-party SMTP client) against ``mailcarrier inbound``.

What a mail client or a remote MTA does to our bounce domain: write to the ``mailto:`` of
``List-Unsubscribe`` (token in the subject, then in the body), mail a DSN to a VERP return
path, and try an address that is not ours (refused at RCPT: we never relay).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from sqlalchemy import Engine, select

from mailcarrier.domain.tracking import TokenPurpose, TrackingToken, encode_token
from mailcarrier.inbound.smtp_server import InboundServer
from mailcarrier.services.inbound import list_inbound
from mailcarrier.storage.tracking_tables import consent_records
from tests.inbound.factory import BOUNCE_DOMAIN, CTX, KEY, contact, dsn, make_world
from tests.interop.servers import need
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture


def _swaks(swaks: str, port: int, to: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([swaks, "--server", "127.0.0.1", "--port", str(port), "--from", "reader@example.com",
                           "--to", to, "--helo", "client.example.com", "--timeout", "20", *extra],
                          capture_output=True, text=True, timeout=60, check=False)


def test_swaks_unsubscribes_bounces_and_is_refused_elsewhere(empty_engine: Engine,  # noqa: F811
                                                             tmp_path: Path) -> None:
    swaks = need("swaks")["swaks"]
    world = make_world(empty_engine, ["ann@aol.test", "bob@aol.test"])
    ann, bob = world.sent["ann@aol.test"], world.sent["bob@aol.test"]
    token = encode_token(TrackingToken(TokenPurpose.UNSUBSCRIBE, world.account_id, world.mailing_id,
                                       ann.delivery_id), master_secret=KEY, key_id=1)
    unsubscribe = f"unsubscribe@{BOUNCE_DOMAIN}"
    dsn_file = tmp_path / "dsn.eml"
    dsn_file.write_bytes(dsn(to=bob.return_path, recipient=bob.email))
    with InboundServer(empty_engine, CTX, accept=frozenset()) as inbound:
        by_subject = _swaks(swaks, inbound.port, unsubscribe, "--header", f"Subject: unsubscribe-{token}")
        by_body = _swaks(swaks, inbound.port, unsubscribe, "--header", "Subject: stop",
                         "--body", f"Please unsubscribe {token}\n")
        bounce = _swaks(swaks, inbound.port, bob.return_path, "--from", "", "--data", f"@{dsn_file}")
        relay = _swaks(swaks, inbound.port, "someone@elsewhere.example")
        assert inbound.wait_idle(30)
    for done in (by_subject, by_body, bounce):
        assert done.returncode == 0, done.stdout + done.stderr
        assert "<-  250 2.0.0 stored" in done.stdout
    assert relay.returncode != 0 and "<** 550 5.1.1" in relay.stdout  # refused at RCPT
    assert contact(empty_engine, ann.contact_id)["status"] == "opted_out"
    assert contact(empty_engine, bob.contact_id)["status"] == "error"
    with empty_engine.connect() as conn:
        records = [tuple(r) for r in conn.execute(select(consent_records.c.action, consent_records.c.source))]
    assert records == [("opted_out", "mailto")]  # once, although asked twice
    kinds = sorted((m.kind, m.match_method, m.state) for m in list_inbound(empty_engine))
    assert kinds == [("bounce", "verp", "processed"), ("unsubscribe", "token", "processed"),
                     ("unsubscribe", "token", "processed")]
