"""``mailcarrier domains check`` against the loopback DNS server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailcarrier.cli.exit_codes import ExitCode
from mailcarrier.cli.main import app
from tests.services.local_dns import local_dns
from tests.services.test_hygiene import ZONE

runner = CliRunner()


def run(*args: str) -> tuple[int, list[dict[str, str]]]:
    with local_dns(ZONE) as resolver:
        server = f"127.0.0.1:{resolver.port}"
        result = runner.invoke(app, ["domains", "check", *args, "--nameserver", server, "--timeout", "2", "--format", "json"])
    return result.exit_code, json.loads(result.stdout)


def test_clean_domain_exits_zero() -> None:
    code, checks = run("good.test", "--ip", "127.0.0.2", "--selector", "s1",
                       "--bounce-domain", "bounces.good.test", "--inbound-host", "mx.mailcarrier.test")
    assert code == 0, checks
    assert {c["status"] for c in checks} == {"pass"}


def test_failing_domain_exits_three_and_says_what_to_fix() -> None:
    code, checks = run("bad.test", "--ip", "127.0.0.2", "--selector", "s1",
                       "--bounce-domain", "bounces.bad.test", "--inbound-host", "mx.mailcarrier.test",
                       "--dnsbl", "bl.test")
    assert code == 3  # a check found a problem
    failed = {c["check"]: c for c in checks if c["status"] != "pass"}
    assert "SPF bad.test for 127.0.0.2" in failed
    assert "DMARC _dmarc.bad.test" in failed
    assert "mx.mailcarrier.test" in failed["MX bounces.bad.test"]["fix"]
    assert failed["DNSBL bl.test for 127.0.0.2"]["status"] == "fail"
    assert all(c["fix"] for c in failed.values() if c["status"] == "fail")


def test_bad_nameserver_option_is_a_usage_error() -> None:
    for bad, why in (("127.0.0.1:dns", "port 'dns'"), ("ns.good.test", "'ns.good.test' is not an IP address")):
        result = CliRunner(env={"COLUMNS": "300"}).invoke(app, ["domains", "check", "good.test", "--nameserver", bad])
        assert result.exit_code == 2
        assert "--nameserver" in result.output and why in result.output and "ADDRESS[:PORT]" in result.output


def test_account_option_checks_the_pool_ips_and_its_listings(tmp_path: Path) -> None:
    url = ["--database-url", f"sqlite:///{tmp_path / 'mc.db'}"]
    for step in (["db", "upgrade"], ["accounts", "create", "acme"], ["accounts", "create", "loner"],
                 ["pools", "create", "house", "dedicated"], ["pools", "add-ip", "house", "127.0.0.2", "--warm"],
                 ["pools", "add-ip", "house", "127.0.0.3", "--warm"], ["pools", "assign", "acme", "house"]):
        assert runner.invoke(app, [*step, *url]).exit_code == 0, step
    args = ["--selector", "s1", "--bounce-domain", "bounces.good.test", "--inbound-host", "mx.mailcarrier.test"]
    code, checks = run("good.test", "--account", "acme", *args, *url)
    assert code == 3  # a check found a problem
    by_name = {c["check"]: c for c in checks}
    assert by_name["SPF good.test for 127.0.0.3"]["status"] == "pass"
    assert by_name["FCrDNS 127.0.0.2"]["status"] == "pass"
    assert by_name["FCrDNS 127.0.0.3"]["status"] == "fail"  # mta3 resolves elsewhere
    with local_dns(ZONE) as resolver:  # the scheduled look-up finds 127.0.0.2 listed
        listed = runner.invoke(app, ["pools", "dnsbl-check", "--zone", "bl.test", "--nameserver",
                                     f"127.0.0.1:{resolver.port}", *url])
    assert listed.exit_code == 3
    _, checks = run("good.test", "--account", "acme", *args, *url)
    assert {c["check"]: c["status"] for c in checks}["DNSBL bl.test for 127.0.0.2"] == "fail"
    result = runner.invoke(app, ["domains", "check", "good.test", "--account", "loner", *url])
    assert result.exit_code == ExitCode.CONFLICT and "on no pool" in result.output


def test_default_selector_is_the_one_keys_are_signed_with(monkeypatch: pytest.MonkeyPatch) -> None:
    """One selector setting everywhere: `dkim generate` and signing use dkim_selector, so does
    the check (it looked up 'mailcarrier._domainkey' while keys were published as 'mc1')."""
    monkeypatch.setenv("MAILCARRIER_DKIM_SELECTOR", "s1")
    code, checks = run("good.test", "--ip", "127.0.0.2", "--bounce-domain", "bounces.good.test",
                       "--inbound-host", "mx.mailcarrier.test")
    assert code == 0, checks
    assert "DKIM s1._domainkey.good.test" in {c["check"] for c in checks}
