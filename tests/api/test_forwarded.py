"""X-Forwarded-For is believed only from configured proxies (issue 17).

Before: ``mailcarrier serve`` ran uvicorn with proxy headers trusted from loopback, so any local
client (or a proxy that passes the header through) chose its own address with
X-Forwarded-For and the subscription form's per-address rate limit counted nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from mailcarrier.api.app import create_app
from mailcarrier.api.proxies import TrustedProxies
from mailcarrier.config import Settings
from mailcarrier.config_values import parse_list, parse_network
from tests.api.conftest import Clock
from tests.api.live import free_port
from tests.api.test_tracking import start_server


async def _client_seen(trusted: str, peer: str, headers: list[tuple[bytes, bytes]]) -> tuple[Any, Any]:
    seen: dict[str, Any] = {}

    async def app(scope: Any, _receive: Any, _send: Any) -> None:
        seen.update(client=scope["client"][0], scheme=scope["scheme"])

    await TrustedProxies(app, parse_list(trusted, parse_network))({"type": "http", "client": (peer, 5000), "scheme": "http",
                                        "headers": headers}, None, None)  # type: ignore[arg-type]
    return seen["client"], seen["scheme"]


async def test_forwarded_headers_only_from_trusted_proxies() -> None:
    xff = [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.9"), (b"x-forwarded-proto", b"https")]
    assert await _client_seen("", "127.0.0.1", xff) == ("127.0.0.1", "http")
    assert await _client_seen("10.0.0.0/8", "127.0.0.1", xff) == ("127.0.0.1", "http")
    # behind the proxy: the rightmost untrusted hop; the client-written left part is ignored
    assert await _client_seen("127.0.0.1", "127.0.0.1", xff) == ("203.0.113.9", "https")
    chain = [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.9, 10.1.1.1")]
    assert await _client_seen("127.0.0.1,10.0.0.0/8", "127.0.0.1", chain) == ("203.0.113.9", "http")
    assert await _client_seen("127.0.0.1", "127.0.0.1", [(b"x-forwarded-for", b"garbage")]) == \
        ("127.0.0.1", "http")
    assert await _client_seen("::1", "::1", [(b"x-forwarded-for", b"[2001:db8::1]:443")]) == \
        ("2001:db8::1", "http")


def test_a_typo_in_trusted_proxies_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        Settings.of(data_dir=tmp_path, trusted_proxies="127.0.0.1,proxy.local")


async def _burst(http: httpx.AsyncClient, headers: list[dict[str, str]]) -> list[int]:
    return [(await http.post("/subscribe/acme", json={"email": f"p{n}@example.com"}, headers=h)).status_code
            for n, h in enumerate(headers)]


async def test_subscribe_rate_limit_counts_the_proxied_client(settings: Settings, db: Engine,
                                                              clock: Clock) -> None:
    spoofed = [{"X-Forwarded-For": f"192.0.2.{n}"} for n in range(8)]
    for trusted, peer, expect_limited in (("", "127.0.0.1", True), ("127.0.0.1", "127.0.0.1", False),
                                          ("127.0.0.1", "198.51.100.7", True)):
        app = create_app(settings.with_values(trusted_proxies=trusted), db, clock=clock)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=(peer, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://mc.test") as http:
                codes = await _burst(http, spoofed)
        assert (429 in codes) is expect_limited, (trusted, peer, codes)


@pytest.fixture
def served(db: Engine, settings: Settings, account_id: int) -> Iterator[str]:
    port = free_port()
    proc = start_server(db, settings, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


def test_serve_ignores_x_forwarded_for_from_loopback_by_default(served: str) -> None:
    codes = [httpx.post(f"{served}/subscribe/acme", json={"email": f"p{n}@example.com"},
                        headers={"X-Forwarded-For": f"192.0.2.{n}"}, timeout=10).status_code
             for n in range(8)]
    assert codes.count(429) == 3, codes  # the default limit is 5 per address per 10 minutes
