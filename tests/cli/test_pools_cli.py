"""``mailcarrier pools`` end to end on a SQLite file, DNSBL look-ups against a loopback DNS server."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mailcarrier.cli.exit_codes import ExitCode
from mailcarrier.cli.main import app
from tests.services.local_dns import local_dns

RUN = CliRunner(env={"COLUMNS": "300"}).invoke  # rich tables must not wrap


def setup(tmp_path: Path) -> list[str]:
    url = ["--database-url", f"sqlite:///{tmp_path / 'mc.db'}"]
    assert RUN(app, ["db", "upgrade", *url]).exit_code == 0
    for slug in ("acme", "bolt"):
        assert RUN(app, ["accounts", "create", slug, *url]).exit_code == 0
    for name, kind in (("shared-1", "shared"), ("trusted-1", "trusted")):
        assert RUN(app, ["pools", "create", name, kind, *url]).exit_code == 0, name
    added = RUN(app, ["pools", "add-ip", "shared-1", "127.0.0.2", "--schedule", "conservative", *url])
    assert added.exit_code == 0 and "warm-up day 1 of conservative" in added.output
    assert RUN(app, ["pools", "add-ip", "trusted-1", "127.0.0.3", "--warm", *url]).exit_code == 0
    for slug in ("acme", "bolt"):
        assert RUN(app, ["pools", "assign", slug, "shared-1", *url]).exit_code == 0
    return url


def test_pool_setup_and_errors(tmp_path: Path) -> None:
    url = setup(tmp_path)
    dup = RUN(app, ["pools", "create", "shared-1", "shared", *url])
    assert dup.exit_code == ExitCode.CONFLICT and "already exists" in dup.output
    bad = RUN(app, ["pools", "add-ip", "shared-1", "not-an-ip", *url])
    assert bad.exit_code == ExitCode.INVALID_INPUT and "not an IP address" in bad.output
    unknown = RUN(app, ["pools", "add-ip", "shared-1", "127.0.0.5", "--schedule", "reckless", *url])
    assert unknown.exit_code == ExitCode.INVALID_INPUT and "unknown schedule" in unknown.output
    listing = RUN(app, ["pools", "list", *url])
    assert "127.0.0.2" in listing.output and "acme, bolt" in listing.output
    assert "conservative day 1" in listing.output


def test_apply_approve_trap_and_evaluate(tmp_path: Path) -> None:
    url = setup(tmp_path)
    applied = RUN(app, ["pools", "apply", "acme", "trusted", *url])
    assert applied.exit_code == 0 and "waiting for approval" in applied.output, applied.output
    pending = RUN(app, ["pools", "applications", "--state", "pending", *url])
    assert "acme" in pending.output and "trusted" in pending.output
    approved = RUN(app, ["pools", "approve", "1", "--who", "alice", *url])
    assert approved.exit_code == 0, approved.output
    assert "acme" in RUN(app, ["pools", "list", *url]).output.split("trusted-1")[1]

    trap = RUN(app, ["pools", "trap", "--ip", "127.0.0.2", "--account", "bolt", "--evidence", "partner", *url])
    assert trap.exit_code == 0 and "accounts on the IP then: bolt" in trap.output  # acme had moved
    listing = RUN(app, ["pools", "listing", "--ip", "127.0.0.3", "--list", "zen.spamhaus.org", *url])
    assert "accounts on the IP then: acme" in listing.output
    events = RUN(app, ["pools", "events", "--account", "acme", *url])
    assert "zen.spamhaus.org" in events.output and "trap" not in events.output

    refused = RUN(app, ["pools", "apply", "bolt", "trusted", *url])
    assert refused.exit_code == 5 and "spam-trap hit" in refused.output
    evaluated = json.loads(RUN(app, ["pools", "evaluate", "--format", "json", *url]).output)
    by_account = {row["account"]: row for row in evaluated}
    assert by_account["acme"]["trusted_eligible"] and by_account["acme"]["pool"] == "trusted-1"
    assert not by_account["bolt"]["trusted_eligible"]
    assert any("spam-trap" in r for r in by_account["bolt"]["reasons"])

    RUN(app, ["pools", "trap", "--account", "acme", *url])
    enforced = RUN(app, ["pools", "evaluate", "--enforce", "--account", "acme", *url])
    assert enforced.exit_code == 0 and "moved" in enforced.output
    assert "acme, bolt" in RUN(app, ["pools", "list", *url]).output
    missing = RUN(app, ["pools", "approve", "99", "--who", "alice", *url])
    assert missing.exit_code == ExitCode.NOT_FOUND and "no pool application #99" in missing.output


def test_dnsbl_check_and_throttle_log(tmp_path: Path) -> None:
    url = setup(tmp_path)
    zone = {("2.0.0.127.bl.test", "A"): ["127.0.0.2"], ("3.0.0.127.bl.test", "A"): ["127.255.255.252"]}
    with local_dns(zone) as resolver:
        nameserver = f"127.0.0.1:{resolver.port}"
        checked = RUN(app, ["pools", "dnsbl-check", "--zone", "bl.test", "--nameserver", nameserver,
                            "--timeout", "2", *url])
    assert checked.exit_code == 3, checked.output
    assert "LISTED" in checked.output and "(new)" in checked.output and "error" in checked.output
    events = RUN(app, ["pools", "events", "--ip", "127.0.0.2", *url])
    assert "bl.test" in events.output and "dnsbl" in events.output
    assert "bl.test" not in RUN(app, ["pools", "events", "--ip", "127.0.0.3", *url]).output
    assert RUN(app, ["pools", "throttle", "--active", *url]).exit_code == 0


def test_dnsbl_check_on_a_schedule_records_each_round(tmp_path: Path) -> None:
    url = setup(tmp_path)
    zone = {("2.0.0.127.bl.test", "A"): ["127.0.0.2"], ("3.0.0.127.bl.test", "A"): ["127.255.255.254"]}
    with local_dns(zone) as resolver:
        scheduled = RUN(app, ["pools", "dnsbl-check", "--zone", "bl.test", "--nameserver",
                              f"127.0.0.1:{resolver.port}", "--timeout", "2", "--every", "0.001", "--rounds", "3",
                              *url])
    assert scheduled.exit_code == 3, scheduled.output  # the last round still sees the listing
    assert scheduled.output.count("DNSBL look-ups") == 3
    assert scheduled.output.count("(new)") == 1  # one listing event, not one per round
    assert scheduled.output.count("LISTED") == 3 and scheduled.output.count("error") == 3
    events = RUN(app, ["pools", "events", *url]).output
    assert events.count("bl.test") == 1 and "127.0.0.3" not in events  # 127.255.255.x is no listing

