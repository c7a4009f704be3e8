"""NSD as the authoritative DNS: MX routing and ``domains check`` read real zones.

Zones as an operator publishes them, served by an own NSD on a loopback port: MX records with
preferences, a null MX, a domain with only an A record, a name that does not exist; SPF, the
DKIM records exactly as ``dkim show`` prints them (split strings), DMARC p=none, PTR.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import dns.resolver
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from mailcarrier.cli.main import app
from mailcarrier.delivery.dkim_keys import signing_keys, zone_record
from mailcarrier.delivery.mx import MailHost, MxResolver, RouteError
from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.tables import attempts, deliveries
from tests.delivery.world import T0, make_world, settings_for, start_mailing
from tests.interop.servers import Nsd

SOA = "@ IN SOA ns1.{o}. hostmaster.{o}. 1 3600 600 86400 300\n@ IN NS ns1.{o}.\nns1 IN A 127.0.0.1\n"


def _zone(origin: str, body: str) -> str:
    return f"$ORIGIN {origin}.\n$TTL 300\n" + SOA.format(o=origin) + body


def _zones(dkim_records: str) -> dict[str, str]:
    return {
        "mx.test": _zone("mx.test", "@ IN MX 20 mx2\n@ IN MX 10 mx1\nmx1 IN A 127.0.0.11\nmx2 IN A 127.0.0.12\n"
                                    "nullmx IN MX 0 .\nonlya IN A 127.0.0.13\n"),
        "shop.test": _zone("shop.test", '@ IN TXT "v=spf1 ip4:127.0.0.2 -all"\n'
                                        '_dmarc IN TXT "v=DMARC1; p=none; rua=mailto:dmarc@shop.test"\n'
                                        "bounces IN MX 10 mx.mailcarrier.test.\n"
                                        "mail IN A 127.0.0.2\n" + dkim_records),
        "0.0.127.in-addr.arpa": _zone("0.0.127.in-addr.arpa", "2 IN PTR mail.shop.test.\n"),
    }


def _resolver(nsd: Nsd) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = nsd.port
    resolver.lifetime = 5.0
    return resolver


@pytest.fixture
def keys_and_zones(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    keys = signing_keys(tmp_path / "data", "shop.test", "mc1", "ed25519")
    records = "".join(zone_record(k) + "\n" for k in keys)
    return tmp_path / "data", _zones(records)


def test_mx_routing_follows_the_zones_nsd_serves(keys_and_zones: tuple[Path, dict[str, str]],
                                                 tmp_path: Path) -> None:
    _data, zones = keys_and_zones
    with Nsd(zones) as nsd:
        resolver = MxResolver(_resolver(nsd))
        assert resolver.resolve("mx.test") == (MailHost("mx1.mx.test", 25, 10), MailHost("mx2.mx.test", 25, 20))
        assert resolver.resolve("onlya.mx.test") == (MailHost("onlya.mx.test", 25, 0),)  # A fallback
        for name, code in (("nullmx.mx.test", 172), ("nowhere.mx.test", 170)):
            with pytest.raises(RouteError) as caught:
                resolver.resolve(name)
            assert caught.value.internal_code == code, name
        # the worker: dead domains end without any SMTP (no server runs for them)
        engine = make_engine(f"sqlite:///{tmp_path / 'mc.db'}")
        start_mailing(make_world(engine, ["x@nullmx.mx.test", "y@nowhere.mx.test"]))
        asyncio.run(run_worker(settings_for(tmp_path, 0, static_routes=""), engine, until_idle=True,
                               clock=SimulatedClock(T0), resolver=MxResolver(_resolver(nsd))))
    with engine.connect() as conn:
        rows = {r.email: r for r in conn.execute(select(deliveries))}
        codes = {r.delivery_id: r.internal_code for r in conn.execute(select(attempts))}
    assert (rows["x@nullmx.mx.test"].state, codes[rows["x@nullmx.mx.test"].id]) == ("bounced_hard", 172)
    assert (rows["y@nowhere.mx.test"].state, codes[rows["y@nowhere.mx.test"].id]) == ("bounced_hard", 170)
    engine.dispose()


def test_domains_check_reads_split_dkim_records_and_warns_on_p_none(
        keys_and_zones: tuple[Path, dict[str, str]]) -> None:
    _data, zones = keys_and_zones
    with Nsd(zones) as nsd:
        checks = {}
        for selector in ("mc1", "mc1-rsa"):
            result = CliRunner().invoke(app, [
                "domains", "check", "shop.test", "--ip", "127.0.0.2", "--selector", selector,
                "--bounce-domain", "bounces.shop.test", "--inbound-host", "mx.mailcarrier.test",
                "--nameserver", f"127.0.0.1:{nsd.port}", "--timeout", "3", "--format", "json"])
            assert result.exit_code == 0, result.output  # a warning does not fail the check
            checks.update({c["check"]: c for c in json.loads(result.stdout)})
    assert checks["DKIM mc1-rsa._domainkey.shop.test"]["status"] == "pass", checks
    assert "2048" in checks["DKIM mc1-rsa._domainkey.shop.test"]["detail"]  # the joined strings parse
    assert checks["DKIM mc1._domainkey.shop.test"]["status"] == "pass", checks
    assert checks["DMARC _dmarc.shop.test"]["status"] == "warn"
    assert checks["SPF shop.test for 127.0.0.2"]["status"] == "pass"
    assert checks["FCrDNS 127.0.0.2"]["status"] == "pass"
    assert checks["MX bounces.shop.test"]["status"] == "pass"
