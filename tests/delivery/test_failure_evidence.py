"""Evidence of failures before any server answered: refused connections, DNS, no SMTPUTF8.

The worker really tries: a first-choice MX on a port where nothing listens (connection refused)
before the second one that accepts, a domain whose every MX refuses, a domain DNS says does not
exist. The evidence keeps the refused first choice in the dialogue, and its guidance does not
claim that a server "refused" or "asked us to try again" when none answered.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine

from mailcarrier.delivery.mx import MailHost, MxResolver, RouteError
from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.services.evidence import collect_evidence, to_text
from mailcarrier.storage.engine import make_engine
from tests.delivery.world import T0, make_world, settings_for, start_mailing


def _dead_port() -> int:
    with socket.socket() as probe:  # bound then closed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Routes(MxResolver):
    """The MX answers a DNS server would give, as mail hosts in preference order."""

    def __init__(self, table: dict[str, tuple[MailHost, ...] | RouteError]) -> None:
        super().__init__()
        self._table = table

    def resolve(self, domain: str) -> tuple[MailHost, ...]:
        found = self._table[domain]
        if isinstance(found, RouteError):
            raise found
        return found


def _send(tmp_path: Path, live_port: int, dead: int) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'evidence.db'}")
    world = make_world(engine, ["ann@backup.test", "bob@down.test", "cy@nowhere.test"])
    start_mailing(world)
    resolver = _Routes({
        "backup.test": (MailHost("127.0.0.1", dead, 10), MailHost("127.0.0.1", live_port, 20)),
        "down.test": (MailHost("127.0.0.1", dead, 10),),
        "nowhere.test": RouteError("nowhere.test", 170, "the domain does not exist (NXDOMAIN)"),
    })
    asyncio.run(run_worker(settings_for(tmp_path, 0, static_routes=""),
                           engine, until_idle=True, clock=SimulatedClock(T0), resolver=resolver))
    return engine


def test_refused_first_mx_is_in_the_evidence_and_wording_fits_the_failure(tmp_path: Path) -> None:
    dead = _dead_port()
    with Sandbox() as sandbox:
        engine = _send(tmp_path, sandbox.port, dead)
        assert [r.recipient for r in sandbox.received] == ["ann@backup.test"]
    later = T0 + timedelta(days=3)

    delivered = to_text(collect_evidence(engine, 1, "ann@backup.test", later))
    assert f"MX 127.0.0.1 port {dead}, preference 10: 161 connection_refused" in delivered
    assert "accepted this message" in delivered

    unreachable = to_text(collect_evidence(engine, 1, "bob@down.test", later))
    assert "could not open a connection to your mail server 127.0.0.1" in unreachable
    assert "asked us to try again" not in unreachable and "refused this message" not in unreachable

    no_host = to_text(collect_evidence(engine, 1, "cy@nowhere.test", later))
    assert "DNS said the domain accepts no mail" in no_host
    assert "(not recorded) refused" not in no_host and "refused this message" not in no_host
    engine.dispose()
