"""Property and hostile-input tests of the receiving path (store raw, read, match, act)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailcarrier.inbound.mailbox_import import ImportProblem, iter_emails
from mailcarrier.services.inbound import (
    IncomingEmail,
    content_digest,
    list_inbound,
    process_all,
    store_incoming,
)
from mailcarrier.storage.engine import make_engine
from tests.inbound.factory import CTX, T0, World, contact, delivery, dsn, make_world

LATER = T0 + timedelta(hours=1)
_TRACE = st.sampled_from(["Received", "Delivered-To", "X-Original-To", "Return-Path", "ARC-Seal"])
_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    yield make_world(engine, ["ann@aol.test"])
    engine.dispose()


@given(body=st.binary(max_size=500), traces=st.lists(st.tuples(_TRACE, _TEXT), max_size=4))
def test_digest_ignores_trace_headers_and_line_ends(body: bytes, traces: list[tuple[str, str]]) -> None:
    base = b"From: a@b.test\nSubject: s\n\n" + body.replace(b"\r", b"")
    added = "".join(f"{name}: {value}\n" for name, value in traces).encode() + base
    assert content_digest(added) == content_digest(base)
    assert content_digest(base.replace(b"\n", b"\r\n")) == content_digest(base)


@given(a=st.binary(min_size=1, max_size=200), b=st.binary(min_size=1, max_size=200))
def test_digest_tells_different_bodies_apart(a: bytes, b: bytes) -> None:
    norm = [x.replace(b"\r\n", b"\n").replace(b"\r", b"\n") for x in (a, b)]
    if norm[0] != norm[1]:
        head = b"Subject: s\n\n"
        assert content_digest(head + a) != content_digest(head + b)


_HEADER = st.sampled_from(["Content-Type: multipart/report; report-type=delivery-status; boundary=x",
                           "Content-Type: message/delivery-status", "Content-Type: text/plain; charset=x-bogus",
                           "Content-Transfer-Encoding: base64", "Auto-Submitted: auto-replied",
                           "From: MAILER-DAEMON@x.test", "Subject: Undelivered Mail", "To: b-1.2.3.abc@bounces.sender.test"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=st.lists(_HEADER, max_size=6), body=st.binary(max_size=800),
       parts=st.lists(st.sampled_from([b"--x\r\nContent-Type: message/delivery-status\r\n\r\n",
                                       b"--x\r\nContent-Type: message/rfc822\r\n\r\n",
                                       b"Final-Recipient: rfc822; ann@aol.test\r\nAction: failed\r\nStatus: 5.1.1\r\n",
                                       b"--x--\r\n"]), max_size=6))
def test_any_email_is_stored_read_and_never_changes_a_delivery_without_proof(
        world: World, headers: list[str], body: bytes, parts: list[bytes]) -> None:
    raw = "\r\n".join(headers).encode() + b"\r\n\r\n" + b"".join(parts) + body
    store_incoming(world.engine, [IncomingEmail(raw, "smtp", envelope_to=("postmaster",))], LATER)
    summary = process_all(world.engine, CTX, LATER + timedelta(days=60))  # beyond the recipient window
    assert summary.claimed == 1 and set(summary.states) <= {"failed", "unmatched", "processed", "duplicate"}
    ann = world.sent["ann@aol.test"]
    assert delivery(world.engine, ann.delivery_id)["state"] == "delivered"  # no VERP, no Message-ID
    assert contact(world.engine, ann.contact_id)["status"] == "active"


def test_bounce_of_a_bounce_changes_nothing(world: World) -> None:
    ann = world.sent["ann@aol.test"]
    inner = dsn(to="someone@else.test", recipient="else@else.test", dsn_id="inner@x")
    outer = dsn(to="postmaster@bounces.sender.test", recipient="MAILER-DAEMON@else.test", dsn_id="outer@x")
    outer = outer.replace(b"--B1--", b"--B1\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--B1--")
    store_incoming(world.engine, [IncomingEmail(outer, "smtp", envelope_to=("postmaster",))], LATER)
    process_all(world.engine, CTX, LATER)
    [stored] = list_inbound(world.engine)
    assert stored.state == "unmatched"
    assert delivery(world.engine, ann.delivery_id)["state"] == "delivered"


def test_oversized_file_is_kept_truncated_and_not_acted_on(world: World, tmp_path: Path) -> None:
    ann = world.sent["ann@aol.test"]
    big = tmp_path / "big.eml"
    big.write_bytes(dsn(to=ann.return_path, recipient=ann.email) + b"x" * 5000)
    items = list(iter_emails([big, tmp_path / "missing"], max_bytes=2048))
    emails = [i for i in items if isinstance(i, IncomingEmail)]
    assert [type(i) for i in items] == [IncomingEmail, ImportProblem]
    assert emails[0].truncated and len(emails[0].raw) == 2048
    store_incoming(world.engine, emails, LATER)
    process_all(world.engine, CTX, LATER)
    [stored] = list_inbound(world.engine)
    assert stored.state == "failed" and "size limit" in (stored.error or "")
    assert delivery(world.engine, ann.delivery_id)["state"] == "delivered"
