"""The production routing path: MX look-ups through DNS (a local authoritative responder)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import select

from mailcarrier.config_values import parse_static_route
from mailcarrier.delivery.mx import MxResolver
from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.tables import attempts, deliveries
from tests.delivery.world import T0, make_world, settings_for, start_mailing
from tests.services.local_dns import local_dns

ZONE = {
    ("nullmx.test", "MX"): ["0 ."],
    ("bare.test", "TXT"): ['"v=spf1 -all"'],  # exists, but neither MX nor A/AAAA
}


def test_dead_domains_bounce_hard_without_smtp_and_the_rest_is_sent(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'dns.db'}")
    world = make_world(engine, ["ann@ok.example", "x@nullmx.test", "y@nowhere.test", "z@bare.test"])
    start_mailing(world)
    with Sandbox() as sandbox, local_dns(ZONE) as dns_resolver:
        settings = settings_for(tmp_path, sandbox.port, static_routes="")
        resolver = MxResolver(dns_resolver, (parse_static_route(f"ok.example=127.0.0.1:{sandbox.port}"),))
        stats = asyncio.run(run_worker(settings, engine, until_idle=True, clock=SimulatedClock(T0),
                                       resolver=resolver))
        assert [r.recipient for r in sandbox.received] == ["ann@ok.example"]
    with engine.connect() as conn:
        rows = {r.email: r for r in conn.execute(select(deliveries))}
        codes = {r.delivery_id: r.internal_code for r in conn.execute(select(attempts))}
    assert rows["ann@ok.example"].state == "delivered"
    expected = {"x@nullmx.test": (172, "notaccept"), "y@nowhere.test": (170, "hostunknown"),
                "z@bare.test": (173, "hostunknown")}
    for email, (code, reason) in expected.items():
        row = rows[email]
        assert (row.state, row.last_reason, row.last_category, row.attempt_count) == (
            "bounced_hard", reason, 2, 1), email
        assert codes[row.id] == code
    assert stats.bounced == 3
    engine.dispose()
