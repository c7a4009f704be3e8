"""Webhook SSRF (issue 17): internal targets are refused at registration and at connect time.

Before: ``http://127.0.0.1:9/``, ``http://169.254.169.254/latest/meta-data/``,
``http://[::1]:8125/``, ``http://0x7f000001/``, ``http://2130706433/`` and
``http://10.0.0.1/`` were accepted and POSTed to.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from mailcarrier.config_values import parse_host_or_network, parse_list
from mailcarrier.domain.outbound_targets import (
    IPAddress,
    TargetPolicy,
    UnsafeTargetError,
    check_url,
    forbidden_reason,
    numeric_host,
)
from mailcarrier.services import webhooks
from mailcarrier.services.webhook_http import RefusedTargetError, webhook_client
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.webhook_tables import webhook_outbox
from tests.services.report_world import T0, World, build
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

STRICT = TargetPolicy()
ISSUE_URLS = ["http://127.0.0.1:9/", "http://169.254.169.254/latest/meta-data/", "http://[::1]:8125/",
              "http://0x7f000001/", "http://2130706433/", "http://10.0.0.1/"]
INTERNAL_HTTPS = ["https://127.0.0.1/", "https://169.254.169.254/latest/meta-data/", "https://[::1]:8125/",
                  "https://0x7f000001/", "https://2130706433/", "https://10.0.0.1/", "https://0177.0.0.1/",
                  "https://127.1/", "https://0/", "https://[::ffff:127.0.0.1]/", "https://[::ffff:7f00:1]/",
                  "https://[::]/", "https://192.168.1.1/", "https://172.16.0.1/", "https://100.64.0.1/",
                  "https://224.0.0.1/", "https://240.0.0.1/", "https://255.255.255.255/",
                  "https://[fe80::1]/", "https://[fc00::1]/", "https://[ff02::1]/",
                  "https://[2002:7f00:1::]/", "https://[64:ff9b::a00:1]/", "https://localhost/",
                  "https://api.localhost/", "https://intranet/", "https://0x7f.1/"]
PUBLIC = ipaddress.ip_address("93.184.215.14")
LOOPBACK = ipaddress.ip_address("127.0.0.1")


@pytest.mark.parametrize("url", ISSUE_URLS + INTERNAL_HTTPS)
def test_internal_targets_are_refused_without_dns(url: str) -> None:
    with pytest.raises(UnsafeTargetError):
        check_url(url, STRICT)
    with pytest.raises(UnsafeTargetError):  # allowing http changes nothing for internal hosts
        check_url(url, TargetPolicy(allow_http=True))


def test_public_https_passes_and_http_needs_the_setting() -> None:
    assert check_url("https://hooks.example.com/in", STRICT).port == 443
    assert check_url("https://93.184.215.14:8443/x", STRICT).address == PUBLIC
    with pytest.raises(UnsafeTargetError, match="https"):
        check_url("http://hooks.example.com/in", STRICT)
    assert check_url("http://hooks.example.com/in", TargetPolicy(allow_http=True)).port == 80
    with pytest.raises(UnsafeTargetError, match="user name"):
        check_url("https://user:pw@hooks.example.com/", STRICT)


def test_named_internal_hosts_are_allowed_by_setting() -> None:
    policy = TargetPolicy.allowing(False, parse_list("hooks.internal, 10.0.0.0/8, [::1]", parse_host_or_network))
    assert check_url("http://hooks.internal:8080/in", policy).host == "hooks.internal"
    assert check_url("http://10.1.2.3/in", policy).address == ipaddress.ip_address("10.1.2.3")
    assert check_url("http://[::1]:8125/", policy).port == 8125
    with pytest.raises(UnsafeTargetError):
        check_url("http://127.0.0.1/", policy)
    with pytest.raises(UnsafeTargetError):
        check_url("http://other.internal/", policy)


@pytest.mark.parametrize(("host", "address"), [
    ("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
    ("127.1", "127.0.0.1"), ("10.1", "10.0.0.1"), ("192.168.257", "192.168.1.1"), ("[::1]", "::1"),
    ("1.2.3.4.", "1.2.3.4"), ("example.com", None), ("1.2.3.com", None), ("08.1.1.1", None),
    ("256.1.1.1", None), ("1.2.3.256", None), ("4294967296", None)])
def test_numeric_hosts_read_as_inet_aton_does(host: str, address: str | None) -> None:
    found = numeric_host(host)
    assert (str(found) if found else None) == address


@given(st.integers(0, 2**32 - 1))
def test_every_decimal_ipv4_spelling_is_judged_like_its_address(value: int) -> None:
    address = ipaddress.IPv4Address(value)
    assert numeric_host(str(value)) == address
    assert numeric_host(hex(value)) == address
    assert (forbidden_reason(address) is None) == (forbidden_reason(ipaddress.IPv6Address(
        f"::ffff:{address}")) is None)


class Receiver:
    """A loopback HTTP server that records requests; answers 302 to another receiver when told to."""

    def __init__(self, redirect_to: str | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(dict(self.headers))
                self.send_response(302 if redirect_to else 200)
                if redirect_to:
                    self.send_header("Location", redirect_to)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def world(empty_engine: Engine) -> World:  # noqa: F811
    upgrade(empty_engine)
    return build(empty_engine)


class Dns:
    """A scripted resolver: each look-up pops the next answer (the last one repeats)."""

    def __init__(self, *answers: list[IPAddress]) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    def __call__(self, host: str, _port: int) -> list[IPAddress]:
        self.asked.append(host)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def _last_errors(engine: Engine) -> list[str | None]:
    with engine.connect() as conn:
        return [r.last_error for r in conn.execute(select(webhook_outbox.c.last_error))]


def _queue_one(world: World, url: str, policy: TargetPolicy) -> None:
    webhooks.create_endpoint(world.engine, world.account_id, url, ["*"], T0, policy=policy)
    assert webhooks.pump_activities(world.engine, T0) > 0


def test_a_name_resolving_to_loopback_is_refused_at_connect_time(world: World, receiver: Receiver) -> None:
    """Registration cannot know what a name resolves to when called: the sender checks it then."""
    policy = TargetPolicy(allow_http=True)
    _queue_one(world, f"http://hooks.example.com:{receiver.port}/in", policy)
    dns = Dns([LOOPBACK])
    with webhook_client(policy, timeout=5, resolver=dns) as client:
        stats = webhooks.send_due(world.engine, client, T0)
        with pytest.raises(RefusedTargetError, match="loopback"):
            client.post(f"http://hooks.example.com:{receiver.port}/in", content=b"{}")
    assert stats.delivered == 0 and stats.retried > 0
    assert receiver.requests == []
    assert all(e and "RefusedTargetError" in e and "127.0.0.1" in e for e in _last_errors(world.engine))


def test_any_internal_answer_refuses_the_request(receiver: Receiver) -> None:
    dns = Dns([PUBLIC, LOOPBACK])
    with webhook_client(TargetPolicy(allow_http=True), timeout=5, resolver=dns) as client, \
            pytest.raises(RefusedTargetError, match="loopback"):
        client.post(f"http://hooks.example.com:{receiver.port}/in", content=b"{}")
    assert receiver.requests == []


def test_the_checked_address_is_the_one_connected_to(world: World, receiver: Receiver) -> None:
    """Rebinding: the first answer is checked and pinned; a later answer cannot switch the connection.

    ``hooks.internal`` is allowed on the loopback network only; the system resolver does not know
    it, so a delivery proves the connection went to the address the transport checked, with the
    name kept in the Host header.
    """
    policy = TargetPolicy.allowing(False, parse_list("127.0.0.0/8", parse_host_or_network))
    url = f"http://hooks.internal.example:{receiver.port}/in"
    with pytest.raises(UnsafeTargetError):  # a name is not an allowed network: https only
        _queue_one(world, url, policy)
    policy = TargetPolicy.allowing(True, parse_list("127.0.0.0/8", parse_host_or_network))
    _queue_one(world, url, policy)
    dns = Dns([LOOPBACK], [ipaddress.ip_address("10.9.9.9")])
    with webhook_client(policy, timeout=5, resolver=dns) as client:
        stats = webhooks.send_due(world.engine, client, T0)
        assert stats.delivered == len(receiver.requests) > 0
        assert {r["Host"] for r in receiver.requests} == {f"hooks.internal.example:{receiver.port}"}
        # The next look-up answers 10.9.9.9: refused, not connected by name.
        with pytest.raises(RefusedTargetError, match=r"10\.9\.9\.9"):
            client.post(url, content=b"{}")
    assert dns.asked[0] == "hooks.internal.example"


def test_redirects_are_not_followed(world: World, receiver: Receiver) -> None:
    bouncer = Receiver(redirect_to=f"http://127.0.0.1:{receiver.port}/in")
    try:
        policy = TargetPolicy.allowing(False, parse_list("127.0.0.1", parse_host_or_network))
        _queue_one(world, f"http://127.0.0.1:{bouncer.port}/in", policy)
        with webhook_client(policy, timeout=5) as client:
            stats = webhooks.send_due(world.engine, client, T0)
        assert stats.delivered == 0 and stats.retried == len(bouncer.requests) > 0
        assert receiver.requests == []
        assert set(_last_errors(world.engine)) == {"HTTP 302"}
    finally:
        bouncer.close()
