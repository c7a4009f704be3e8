"""Inbound SMTP limits (issue 17): sessions per peer and in total, connections and messages per minute.

Before: one host could open any number of sessions (each may buffer a message up to
``inbound_max_bytes``, about 10 MB) and send any number of forged bounces.
"""

from __future__ import annotations

import ipaddress
import smtplib
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from mailcarrier.config import Settings, load_settings
from mailcarrier.inbound.peer_limits import PeerLimits, PeerQuota, peer_key
from mailcarrier.inbound.smtp_server import InboundServer
from mailcarrier.services.inbound import list_inbound
from tests.inbound.factory import BOUNCE_DOMAIN, CTX, T0, World, dsn, make_world
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

POSTMASTER = f"postmaster@{BOUNCE_DOMAIN}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_per_peer_and_in_total() -> None:
    limits = PeerLimits(PeerQuota(max_sessions=3, max_sessions_per_peer=2, exempt=()))
    assert limits.open_session("192.0.2.1") is None
    assert limits.open_session("192.0.2.1") is None
    assert "from your address" in (limits.open_session("192.0.2.1") or "")
    assert limits.open_session("192.0.2.2") is None
    assert limits.open_session("192.0.2.3") == "too many connections; try again later"
    limits.close_session("192.0.2.1")
    assert limits.open_session("192.0.2.3") is None
    assert limits.sessions == 3


def test_rates_slide_with_the_clock() -> None:
    clock = Clock()
    limits = PeerLimits(PeerQuota(connections_per_minute=2, messages_per_minute=3, exempt=()), clock=clock)
    for _ in range(2):
        assert limits.open_session("192.0.2.1") is None
        limits.close_session("192.0.2.1")
    assert "last minute" in (limits.open_session("192.0.2.1") or "")
    assert [limits.allow_message("192.0.2.1") for _ in range(4)] == [True, True, True, False]
    assert limits.allow_message("192.0.2.9")  # another peer has its own window
    clock.now += 61
    assert limits.open_session("192.0.2.1") is None
    assert limits.allow_message("192.0.2.1")


def test_ipv6_peers_count_by_slash_64_and_exempt_networks_are_not_limited() -> None:
    assert peer_key("2001:db8:1:2::5") == peer_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert peer_key("::ffff:192.0.2.1") == "192.0.2.1"
    limits = PeerLimits(PeerQuota(max_sessions=10, max_sessions_per_peer=1,
                                  exempt=(ipaddress.ip_network("10.0.0.0/8"),)))
    assert limits.open_session("2001:db8:1:2::5") is None
    assert limits.open_session("2001:db8:1:2::6") is not None
    assert all(limits.open_session("10.1.1.1") is None for _ in range(5))
    assert "total" not in str(limits.open_session("10.1.1.1"))


def test_settings_build_the_quota() -> None:
    quota = Settings.of().inbound.unlimited_peers
    assert ipaddress.ip_address("127.0.0.1") in quota[0]
    with pytest.raises(ValueError, match=r"inbound_unlimited_peers .*not-a-network"):
        load_settings(inbound_unlimited_peers="not-a-network")


@pytest.fixture
def world(empty_engine: Engine) -> Iterator[World]:  # noqa: F811
    yield make_world(empty_engine, ["ann@aol.test"])


def _client(server: InboundServer, source: str) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port, timeout=10, source_address=(source, 0))


def test_the_server_refuses_sessions_over_the_limits_with_421(world: World) -> None:
    quota = PeerQuota(max_sessions=3, max_sessions_per_peer=2, exempt=())
    with InboundServer(world.engine, CTX, accept=frozenset({POSTMASTER}), clock=lambda: T0,
                       quota=quota, process=False) as server:
        first, second = _client(server, "127.0.0.1"), _client(server, "127.0.0.1")
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            _client(server, "127.0.0.1")
        assert refused.value.smtp_code == 421 and b"from your address" in refused.value.smtp_error
        other = _client(server, "127.0.0.2")  # another peer still gets in
        with pytest.raises(smtplib.SMTPConnectError) as full:
            _client(server, "127.0.0.3")
        assert full.value.smtp_code == 421
        first.quit()
        for _ in range(50):  # the server notices the close
            try:
                again = _client(server, "127.0.0.3")
                break
            except smtplib.SMTPConnectError:
                time.sleep(0.05)
        assert again.noop()[0] == 250
        for client in (second, other, again):
            client.quit()


def test_the_server_defers_messages_over_the_rate_with_451_and_keeps_the_peer(world: World) -> None:
    ann = world.sent["ann@aol.test"]
    quota = PeerQuota(messages_per_minute=2, exempt=())
    with InboundServer(world.engine, CTX, accept=frozenset({POSTMASTER}),
                       clock=lambda: T0 + timedelta(hours=1), quota=quota, process=False) as server:
        with _client(server, "127.0.0.5") as client:
            client.ehlo("mx.receiver.test")
            for n in range(2):
                client.sendmail("", [POSTMASTER], dsn(to=POSTMASTER, recipient=ann.email, dsn_id=f"{n}@x"))
            with pytest.raises(smtplib.SMTPRecipientsRefused) as deferred:
                client.sendmail("", [POSTMASTER], dsn(to=POSTMASTER, recipient=ann.email, dsn_id="3@x"))
            [(code, text)] = deferred.value.recipients.values()
            assert code == 451 and b"try again later" in text
        with _client(server, "127.0.0.6") as client:  # another peer is not held back
            client.ehlo("mx.other.test")
            client.sendmail("", [POSTMASTER], dsn(to=POSTMASTER, recipient=ann.email, dsn_id="4@x"))
    stored = list_inbound(world.engine)
    assert sorted((m.peer_ip, m.helo) for m in stored) == [
        ("127.0.0.5", "mx.receiver.test"), ("127.0.0.5", "mx.receiver.test"), ("127.0.0.6", "mx.other.test")]
