"""Forged bounces (issue 17): a match by recipient address alone is recorded, shown, never applied.

Before: one email to ``postmaster@<bounce domain>`` listing 2,000 subscriber addresses with
status 5.1.1 turned 2,000 delivered deliveries into hard bounces and 1,480 active contacts into
``error``. Now the same email, sent over SMTP to the inbound server, changes no delivery and no
contact; it is stored ``unverified`` with the reporting host's address and HELO name, and listed
by ``bounces list --unverified`` and ``GET /api/v1/bounces/unverified``.
"""

from __future__ import annotations

import json
import smtplib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from mailcarrier.api.app import create_app
from mailcarrier.cli.main import app as cli
from mailcarrier.config import Settings
from mailcarrier.inbound.smtp_server import InboundServer
from mailcarrier.services.inbound import list_inbound
from mailcarrier.storage.api_keys import create_api_key
from mailcarrier.storage.tables import activities, contacts, deliveries
from tests.inbound.factory import BOUNCE_DOMAIN, CTX, KEY, T0, World, _crlf, delivery, dsn, make_world
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

ADDRESSES = [f"user{i}@isp{i % 7}.test" for i in range(2000)]
NOW = T0 + timedelta(hours=1)


@pytest.fixture
def world(empty_engine: Engine) -> Iterator[World]:  # noqa: F811
    yield make_world(empty_engine, ADDRESSES)


@pytest.fixture
def small_world(empty_engine: Engine) -> Iterator[World]:  # noqa: F811
    yield make_world(empty_engine, ADDRESSES[:60])


def forged_dsn(addresses: list[str]) -> bytes:
    """One DSN naming every address as 5.1.1 user unknown, with none of our tokens or ids."""
    groups = "".join(f"Final-Recipient: rfc822; {a}\nAction: failed\nStatus: 5.1.1\n"
                     f"Diagnostic-Code: smtp; 550 5.1.1 <{a}>: User unknown\n\n" for a in addresses)
    return _crlf(f"""From: MAILER-DAEMON@attacker.test
To: postmaster@{BOUNCE_DOMAIN}
Subject: Undelivered Mail Returned to Sender
Message-ID: <forged-1@attacker.test>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain

Delivery failed.

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; attacker.test

{groups}--B1--
""")


def _unchanged(world: World) -> None:
    expected = len(world.sent)
    with world.engine.connect() as conn:
        states = dict(conn.execute(select(deliveries.c.state, func.count()).group_by(deliveries.c.state)).all())
        statuses = dict(conn.execute(select(contacts.c.status, func.count()).group_by(contacts.c.status)).all())
        bounces = conn.execute(select(func.count()).select_from(activities)
                               .where(activities.c.type.in_(("hard_bounce", "soft_bounce")))).scalar_one()
    assert states == {"delivered": expected}
    assert statuses == {"active": expected}
    assert bounces == 0


def test_postmaster_dsn_listing_2000_subscribers_changes_nothing(world: World) -> None:
    with InboundServer(world.engine, CTX, accept=frozenset({f"postmaster@{BOUNCE_DOMAIN}"}),
                       max_bytes=5_000_000, clock=lambda: NOW) as server:
        with smtplib.SMTP(server.host, server.port, timeout=30) as client:
            client.ehlo("mx.attacker.test")
            client.sendmail("", [f"postmaster@{BOUNCE_DOMAIN}"], forged_dsn(ADDRESSES))
        assert server.wait_idle(60)
    _unchanged(world)
    [stored] = list_inbound(world.engine)
    assert (stored.state, stored.kind, stored.match_method) == ("unverified", "bounce", "recipient")
    assert len(stored.matched_delivery_ids) == 1000  # candidates kept, capped
    assert "2000 deliveries by recipient address alone" in (stored.error or "")
    assert stored.account_id == world.account_id
    assert (stored.peer_ip, stored.helo) == ("127.0.0.1", "mx.attacker.test")


def test_a_verp_signed_bounce_still_applies_next_to_a_forged_one(small_world: World) -> None:
    world = small_world
    ann = world.sent[ADDRESSES[0]]
    with InboundServer(world.engine, CTX, accept=frozenset({f"postmaster@{BOUNCE_DOMAIN}"}),
                       max_bytes=5_000_000, clock=lambda: NOW) as server:
        with smtplib.SMTP(server.host, server.port, timeout=30) as client:
            client.sendmail("", [f"postmaster@{BOUNCE_DOMAIN}"], forged_dsn(ADDRESSES[:50]))
            client.sendmail("", [ann.return_path], dsn(to=ann.return_path, recipient=ann.email))
        assert server.wait_idle(60)
    assert delivery(world.engine, ann.delivery_id)["state"] == "bounced_hard"
    assert delivery(world.engine, world.sent[ADDRESSES[1]].delivery_id)["state"] == "delivered"
    assert sorted(m.state for m in list_inbound(world.engine)) == ["processed", "unverified"]


async def test_unverified_bounces_are_listed_by_cli_and_api(small_world: World, tmp_path: Path) -> None:
    world = small_world
    with InboundServer(world.engine, CTX, accept=frozenset({f"postmaster@{BOUNCE_DOMAIN}"}),
                       max_bytes=5_000_000, clock=lambda: NOW) as server:
        with smtplib.SMTP(server.host, server.port, timeout=30) as client:
            client.ehlo("mx.attacker.test")
            client.sendmail("", [f"postmaster@{BOUNCE_DOMAIN}"], forged_dsn(ADDRESSES[:3]))
        assert server.wait_idle(60)
    url = world.engine.url.render_as_string(hide_password=False)
    listed = CliRunner().invoke(cli, ["bounces", "list", "--unverified", "--format", "jsonl",
                                      "--database-url", url])
    assert listed.exit_code == 0, listed.output
    [row] = [json.loads(line) for line in listed.output.splitlines() if line.strip()]
    assert row["state"] == "unverified" and row["peer_ip"] == "127.0.0.1" and row["helo"] == "mx.attacker.test"
    assert sorted(row["matched_delivery_ids"]) == sorted(world.sent[a].delivery_id for a in ADDRESSES[:3])
    table = CliRunner().invoke(cli, ["bounces", "list", "--database-url", url], env={"COLUMNS": "250"})
    assert "unverified" in table.output

    with world.engine.begin() as conn:
        _, key = create_api_key(conn, world.account_id, "r", ["reports:read"], T0)
    settings = Settings.of(data_dir=tmp_path, secret_key="k" * 32)
    app = create_app(settings, world.engine, clock=lambda: NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        r = await http.get("/api/v1/bounces/unverified", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    [item] = r.json()["items"]
    assert item["peer_ip"] == "127.0.0.1" and item["helo"] == "mx.attacker.test"
    assert sorted(c["email"] for c in item["candidates"]) == sorted(ADDRESSES[:3])
    assert "recipient address alone" in item["note"]


def test_our_message_ids_cannot_be_guessed_from_the_delivery_id() -> None:
    """A Message-ID match is applied, so the id carries an HMAC tag under the installation secret."""
    from types import SimpleNamespace  # noqa: PLC0415

    from mailcarrier.services.composition import MailingRenderer  # noqa: PLC0415

    mailing = SimpleNamespace(id=7, account_id=3, kind="regular", sending_domain="shop.test", subject="s",
                              html_body="h", text_body="t", from_name="", from_address="n@shop.test")
    one = MailingRenderer(mailing, secret=b"a" * 32, bounce_domain=BOUNCE_DOMAIN, public_url="http://x")
    other = MailingRenderer(mailing, secret=b"b" * 32, bounce_domain=BOUNCE_DOMAIN, public_url="http://x")
    assert one.message_id(42) == one.message_id(42)  # stable across retries
    assert one.message_id(42) != other.message_id(42)
    assert one.message_id(42) != "mc.42.7.3@shop.test"
    assert one.message_id(42).startswith("mc.42.7.3.") and one.message_id(42).endswith("@shop.test")


def test_an_operator_can_accept_an_unverified_bounce_after_review(small_world: World) -> None:
    """Never applied automatically; ``bounces accept ID`` applies it, and says it was a person's call."""
    from mailcarrier.services.contacts import history  # noqa: PLC0415
    from mailcarrier.services.inbound import IncomingEmail, process_all, store_incoming  # noqa: PLC0415

    world = small_world
    named = ADDRESSES[:2]
    store_incoming(world.engine, [IncomingEmail(forged_dsn(named), "smtp", "192.0.2.1:25", "",
                                                (f"postmaster@{BOUNCE_DOMAIN}",), peer_ip="192.0.2.1",
                                                helo="mx.isp.test")], NOW)
    process_all(world.engine, CTX, NOW)
    [stored] = list_inbound(world.engine, states=["unverified"])
    _unchanged(world)
    url = world.engine.url.render_as_string(hide_password=False)
    env = {"MAILCARRIER_SECRET_KEY": KEY.decode(), "MAILCARRIER_BOUNCE_DOMAIN": BOUNCE_DOMAIN}
    wrong = CliRunner().invoke(cli, ["bounces", "accept", str(stored.id + 99), "--database-url", url], env=env)
    assert wrong.exit_code != 0 and "0 of 1" in wrong.output
    done = CliRunner().invoke(cli, ["bounces", "accept", str(stored.id), "--database-url", url], env=env)
    assert done.exit_code == 0, done.output
    for address in named:
        sent = world.sent[address]
        assert delivery(world.engine, sent.delivery_id)["state"] == "bounced_hard"
        [bounce] = [a for a in history(world.engine, world.account_id, sent.contact_id) if a.type == "hard_bounce"]
        assert bounce.details is not None and bounce.details["accepted_by_operator"] is True
        assert bounce.details["matched_by"] == "recipient"
    assert delivery(world.engine, world.sent[ADDRESSES[2]].delivery_id)["state"] == "delivered"
    [after] = list_inbound(world.engine)
    assert (after.state, after.match_method) == ("processed", "recipient")
