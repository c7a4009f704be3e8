"""Webhooks through the outbox to a real HTTP server on loopback: signed, retried, never lost."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, select, update

from mailcarrier.config_values import parse_host_or_network, parse_list
from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.domain.errors import NotFoundError
from mailcarrier.domain.outbound_targets import TargetPolicy
from mailcarrier.services import webhooks
from mailcarrier.services.webhook_http import webhook_client
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.tables import activities
from mailcarrier.storage.tracking_tables import tracking_hits
from mailcarrier.storage.webhook_tables import webhook_outbox
from tests.delivery.world import T0 as DELIVERY_T0
from tests.delivery.world import make_world, settings_for, start_mailing
from tests.services.report_world import HITS, RECIPIENTS, T0, World, build
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

#: The receivers of these tests listen on loopback, which an operator allows by name.
LOCAL = TargetPolicy.allowing(False, parse_list("127.0.0.1", parse_host_or_network))


class Receiver:
    """A loopback HTTP server that records requests and answers with a scripted status."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def world(empty_engine: Engine) -> Iterator[World]:  # noqa: F811
    upgrade(empty_engine)
    yield build(empty_engine)


def _outbox(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(webhook_outbox).order_by(webhook_outbox.c.id)))


def test_bounce_activity_becomes_signed_post(world: World, receiver: Receiver) -> None:
    endpoint = webhooks.create_endpoint(world.engine, world.account_id, receiver.url,
                                        ["bounced", "unsubscribed"], T0, policy=LOCAL)
    assert endpoint.secret
    queued = webhooks.pump_activities(world.engine, T0)
    assert queued == 5  # four bounces and one unsubscribe of account one; nothing of account two
    assert webhooks.pump_activities(world.engine, T0) == 0  # the watermark moved
    with webhook_client(LOCAL, timeout=5) as client:
        stats = webhooks.send_due(world.engine, client, T0)
    assert stats.delivered == 5 and len(receiver.requests) == 5
    bodies = [json.loads(r["body"]) for r in receiver.requests]
    bounced = [b for b in bodies if b["type"] == "bounced"]
    assert {b["data"]["reason"] for b in bounced} == {"userunknown", "filtered", "blocked", "mailboxfull"}
    assert any(b["data"]["suspected_filtering"] for b in bounced)
    # seed 001's two answers: hard = categories 1 and 2, address invalid = category 2 only
    labels = {b["data"]["reason"]: (b["data"]["bounce_type"], b["data"]["address_invalid"]) for b in bounced}
    assert labels == {"userunknown": ("hard", True), "filtered": ("hard", False),
                      "blocked": ("hard", False), "mailboxfull": ("soft", False)}
    for request in receiver.requests:
        header = request["headers"]["Mailcarrier-Signature"]
        assert webhooks.verify_signature(endpoint.secret, header, request["body"],
                                         now=int(T0.timestamp()))
        assert not webhooks.verify_signature("wrong", header, request["body"], now=int(T0.timestamp()))
        assert not webhooks.verify_signature(endpoint.secret, header, request["body"] + b" ",
                                             now=int(T0.timestamp()))


def test_failures_back_off_then_succeed(world: World, receiver: Receiver) -> None:
    webhooks.create_endpoint(world.engine, world.account_id, receiver.url, ["*"], T0, policy=LOCAL)
    with world.engine.begin() as conn:
        assert webhooks.enqueue_event(conn, world.account_id, "delivered", {"x": 1}, T0) == 1
    receiver.statuses = [500, 503]
    with webhook_client(LOCAL, timeout=5) as client:
        assert webhooks.send_due(world.engine, client, T0).retried == 1
        assert webhooks.send_due(world.engine, client, T0).retried == 0  # not due yet
        (row,) = _outbox(world.engine)
        assert row.next_attempt_at == T0 + webhooks.backoff(1) and row.last_status == 500
        later = T0 + webhooks.backoff(1)
        assert webhooks.send_due(world.engine, client, later).retried == 1
        final = later + webhooks.backoff(2)
        assert webhooks.send_due(world.engine, client, final).delivered == 1
    assert len(receiver.requests) == 3
    assert len({r["headers"]["Mailcarrier-Event-Id"] for r in receiver.requests}) == 1
    (row,) = _outbox(world.engine)
    assert row.delivered_at == final and row.attempts == 3


def test_unreachable_endpoint_is_retried_until_dead(world: World) -> None:
    webhooks.create_endpoint(world.engine, world.account_id, "http://127.0.0.1:9/nothing", ["*"], T0, policy=LOCAL)
    with world.engine.begin() as conn:
        webhooks.enqueue_event(conn, world.account_id, "opened", {}, T0)
    now = T0
    with webhook_client(LOCAL, timeout=2) as client:
        for attempt in range(1, webhooks.MAX_ATTEMPTS + 1):
            stats = webhooks.send_due(world.engine, client, now)
            now += webhooks.backoff(attempt)
    assert stats.dead == 1
    (row,) = _outbox(world.engine)
    assert row.dead_at is not None and "ConnectError" in (row.last_error or "")


def test_crash_mid_send_only_delays_the_event(world: World, receiver: Receiver) -> None:
    webhooks.create_endpoint(world.engine, world.account_id, receiver.url, ["*"], T0, policy=LOCAL)
    with world.engine.begin() as conn:
        webhooks.enqueue_event(conn, world.account_id, "complained", {"contact_id": 1}, T0)
    claimed = webhooks._claim(world.engine, T0, 10)  # a sender claims it, then dies
    assert len(claimed) == 1
    with webhook_client(LOCAL, timeout=5) as client:
        assert webhooks.send_due(world.engine, client, T0 + timedelta(seconds=5)).delivered == 0
        after = T0 + webhooks.LEASE + timedelta(seconds=1)
        assert webhooks.send_due(world.engine, client, after).delivered == 1
    assert len(receiver.requests) == 1


def test_settled_hits_become_opened_and_clicked_with_verdicts(world: World) -> None:
    webhooks.create_endpoint(world.engine, world.account_id, "http://127.0.0.1:9/x",
                             ["opened", "clicked"], T0, policy=LOCAL)
    assert webhooks.pump_activities(world.engine, T0) == 0  # no hit has settled yet
    with world.engine.begin() as conn:
        conn.execute(update(tracking_hits).values(settled_at=T0 + timedelta(minutes=5)))
    assert webhooks.pump_activities(world.engine, T0, chunk=2) == len(HITS)
    assert webhooks.pump_activities(world.engine, T0) == 0
    payloads = [row.payload for row in _outbox(world.engine)]
    verdicts = sorted((p["type"], p["data"]["verdict"], p["data"]["human"]) for p in payloads)
    assert verdicts == sorted(("opened" if kind == "open" else "clicked", verdict, verdict == "human")
                              for _email, kind, verdict in HITS)


def test_new_activity_after_restart_is_pumped_once(world: World) -> None:
    webhooks.create_endpoint(world.engine, world.account_id, "http://127.0.0.1:9/x", ["complained"], T0, policy=LOCAL)
    assert webhooks.pump_activities(world.engine, T0) == 0  # the world has no complaint
    with world.engine.begin() as conn:
        conn.execute(activities.insert().values(
            account_id=world.account_id, contact_id=world.contacts["ann@example.com"],
            mailing_id=world.mailing_id, type="complaint", occurred_at=T0))
    assert webhooks.pump_activities(world.engine, T0, chunk=1) == 1
    assert webhooks.pump_activities(world.engine, T0) == 0
    (row,) = _outbox(world.engine)
    assert row.payload["type"] == "complained" and row.payload["id"].startswith("act-")


def test_endpoint_validation_and_isolation(world: World) -> None:
    with pytest.raises(ValueError, match="absolute https"):
        webhooks.create_endpoint(world.engine, world.account_id, "ftp://x", ["*"], T0, policy=LOCAL)
    with pytest.raises(ValueError, match="unknown"):
        webhooks.create_endpoint(world.engine, world.account_id, "https://x.example/h", ["nope"], T0, policy=LOCAL)
    mine = webhooks.create_endpoint(world.engine, world.account_id, "https://x.example/h", ["*"], T0, policy=LOCAL)
    with pytest.raises(NotFoundError):
        webhooks.get_endpoint(world.engine, world.other_account_id, mine.id)
    with pytest.raises(NotFoundError):
        webhooks.delete_endpoint(world.engine, world.other_account_id, mine.id)
    assert webhooks.list_endpoints(world.engine, world.other_account_id) == []
    webhooks.delete_endpoint(world.engine, world.account_id, mine.id)


def test_backoff_schedule() -> None:
    assert [webhooks.backoff(n).total_seconds() for n in range(1, 6)] == [30, 60, 120, 240, 480]
    assert webhooks.backoff(40) == webhooks.BACKOFF_CAP


@given(st.text(max_size=200), st.binary(max_size=100))
def test_verify_signature_never_fails_on_garbage(header: str, body: bytes) -> None:
    assert webhooks.verify_signature("s", header, body, now=0) in (True, False)


def test_real_mailing_through_sandbox_posts_delivered_and_bounced(tmp_path: Path, receiver: Receiver) -> None:
    """The worker's history (a real send to the sandbox MX) becomes signed webhook POSTs."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    world = make_world(engine, ["ann@example.com", "bob@example.com", "unknown1@gmail.com"])
    mailing_id = start_mailing(world)
    endpoint = webhooks.create_endpoint(engine, world.account_id, receiver.url, ["*"], DELIVERY_T0, policy=LOCAL)
    with Sandbox() as sandbox:
        asyncio.run(run_worker(settings_for(tmp_path, sandbox.port), engine, until_idle=True,
                               clock=SimulatedClock(DELIVERY_T0)))
    assert webhooks.pump_activities(engine, DELIVERY_T0) >= 3
    with webhook_client(LOCAL, timeout=5) as client:
        webhooks.send_due(engine, client, DELIVERY_T0)
    events = {(json.loads(r["body"])["type"], json.loads(r["body"])["data"]["email"])
              for r in receiver.requests if json.loads(r["body"])["type"] in ("delivered", "bounced")}
    assert events == {("delivered", "ann@example.com"), ("delivered", "bob@example.com"),
                      ("bounced", "unknown1@gmail.com")}
    bounced = next(json.loads(r["body"]) for r in receiver.requests
                   if json.loads(r["body"])["type"] == "bounced")
    assert bounced["data"]["mailing_id"] == mailing_id and bounced["data"]["category"] == 2
    assert all(webhooks.verify_signature(endpoint.secret or "", r["headers"]["Mailcarrier-Signature"],
                                         r["body"], now=int(DELIVERY_T0.timestamp()), tolerance=10**9)
               for r in receiver.requests)
    engine.dispose()


def test_deferred_attempts_become_deferred_events_once(world: World) -> None:
    webhooks.create_endpoint(world.engine, world.account_id, "http://127.0.0.1:9/x", ["deferred"], T0, policy=LOCAL)
    deferred = sum(max(0, count - (1 if state in ("delivered", "bounced_hard") else 0))
                   for _l, _d, state, _r, _c, count in RECIPIENTS)
    assert webhooks.pump_activities(world.engine, T0, chunk=2) == deferred
    assert webhooks.pump_activities(world.engine, T0) == 0
    payloads = [row.payload for row in _outbox(world.engine)]
    assert {p["data"]["email"] for p in payloads} == {"bob@example.com", "fay@gmail.com", "gus@gmail.com"}
    assert all(p["data"]["reply_code"] == 451 for p in payloads)
    gus = [p for p in payloads if p["data"]["email"] == "gus@gmail.com"]
    assert gus[0]["data"]["next_attempt_at"] is not None
