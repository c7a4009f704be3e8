"""Hygiene verdicts from DNS answers."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from mailcarrier.domain.dns_checks import (
    CheckStatus,
    check_dkim,
    check_dmarc,
    check_fcrdns,
    check_mx,
    check_spf,
    dnsbl_query_name,
    interpret_dnsbl,
    parse_dkim_key_bits,
    parse_dmarc,
)
from mailcarrier.domain.errors import ParseError


def dkim_record(bits: int, *, spki: bool = True) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo if spki else serialization.PublicFormat.PKCS1
    der = key.public_bytes(serialization.Encoding.DER, fmt)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


@pytest.mark.parametrize(("bits", "spki"), [(1024, True), (2048, True), (2048, False), (4096, True)])
def test_dkim_key_bits(bits: int, spki: bool) -> None:
    assert parse_dkim_key_bits(dkim_record(bits, spki=spki)) == ("rsa", bits)


def test_dkim_check_sizes() -> None:
    assert check_dkim("s1", "example.com", [dkim_record(2048)]).ok
    weak = check_dkim("s1", "example.com", [dkim_record(1024)])
    assert weak.status is CheckStatus.FAIL and "1024 bits" in weak.detail and "2048" in weak.fix
    assert check_dkim("s1", "example.com", []).status is CheckStatus.FAIL
    assert "revoked" in check_dkim("s1", "example.com", ["v=DKIM1; p="]).detail
    assert check_dkim("s1", "example.com", ["v=DKIM1; p=!!!"]).status is CheckStatus.FAIL


@given(st.text(max_size=200))
def test_parse_dkim_raises_only_parse_error(text: str) -> None:
    try:
        parse_dkim_key_bits(text)
    except ParseError:
        return


@given(st.binary(max_size=300))
def test_parse_dkim_random_keys(blob: bytes) -> None:
    try:
        parse_dkim_key_bits("v=DKIM1; p=" + base64.b64encode(blob).decode())
    except ParseError:
        return


@pytest.mark.parametrize(
    ("result", "status"),
    [("pass", CheckStatus.PASS), ("fail", CheckStatus.FAIL), ("softfail", CheckStatus.FAIL),
     ("none", CheckStatus.FAIL), ("permerror", CheckStatus.FAIL), ("temperror", CheckStatus.ERROR),
     ("bogus", CheckStatus.ERROR)],
)
def test_spf_results(result: str, status: CheckStatus) -> None:
    check = check_spf("example.com", "192.0.2.1", result)
    assert check.status is status
    if status is CheckStatus.FAIL:
        assert check.fix


def test_parse_dmarc() -> None:
    record = parse_dmarc("v=DMARC1; p=reject; adkim=s; pct=50; rua=mailto:d@example.com")
    assert record is not None and (record.policy, record.adkim, record.aspf, record.pct) == ("reject", "s", "r", 50)
    assert parse_dmarc("v=spf1 -all") is None
    for bad in ("v=DMARC1; p=maybe", "v=DMARC1; p=none; pct=x", "v=DMARC1; p=none; adkim=q"):
        with pytest.raises(ParseError):
            parse_dmarc(bad)


@given(st.text(max_size=200))
def test_parse_dmarc_raises_only_parse_error(text: str) -> None:
    try:
        parse_dmarc(text)
    except ParseError:
        return


@pytest.mark.parametrize(
    ("records", "dkim", "bounce", "ok", "detail"),
    [
        (["v=DMARC1; p=none"], "example.com", "bounces.mailcarrier.test", True, "aligned"),
        (["v=DMARC1; p=none"], "mail.example.com", "x.test", True, "aligned"),
        (["v=DMARC1; p=none; adkim=s"], "mail.example.com", "b.example.com", True, "aligned"),
        (["v=DMARC1; p=none; adkim=s; aspf=s"], "mail.example.com", "b.example.com", False, "aligns"),
        (["v=DMARC1; p=none"], "esp.test", "bounces.esp.test", False, "aligns"),
        ([], "example.com", "example.com", False, "no DMARC"),
        (["v=DMARC1; p=none", "v=DMARC1; p=reject"], "example.com", "x", False, "several"),
        (["v=DMARC1; p=sometimes"], "example.com", "x", False, "invalid"),
    ],
)
def test_check_dmarc(records: list[str], dkim: str, bounce: str, ok: bool, detail: str) -> None:
    check = check_dmarc("example.com", records, dkim, bounce)
    assert check.ok is ok and detail in check.detail


def test_fcrdns() -> None:
    assert check_fcrdns("192.0.2.1", ["mta1.example.com."], {"mta1.example.com": ["192.0.2.1"]}).ok
    assert not check_fcrdns("192.0.2.1", ["mta1.example.com"], {"mta1.example.com": ["192.0.2.9"]}).ok
    assert "no PTR" in check_fcrdns("192.0.2.1", [], {}).detail


def test_mx() -> None:
    assert check_mx("bounces.example.com", ["MX.MAILCARRIER.TEST."], "mx.mailcarrier.test").ok
    failed = check_mx("bounces.example.com", [], "mx.mailcarrier.test")
    assert not failed.ok and "mx.mailcarrier.test" in failed.fix
    assert failed.detail == "no MX record: bounces cannot come back"  # not "MX is no MX"
    elsewhere = check_mx("bounces.example.com", ["mx1.other.test.", "mx2.other.test"], "mx.mailcarrier.test")
    assert elsewhere.detail == "MX points at mx1.other.test, mx2.other.test, not at mx.mailcarrier.test"
    assert "null MX" in check_mx("bounces.example.com", ["."], "mx.mailcarrier.test").detail


def test_dmarc_p_none_passes_with_a_warning() -> None:
    monitoring = check_dmarc("example.com", ["v=DMARC1; p=none; rua=mailto:d@example.com"], "example.com", "x")
    assert monitoring.status is CheckStatus.WARN and monitoring.ok  # sending is not blocked
    assert "monitoring only" in monitoring.detail and "p=quarantine" in monitoring.fix
    enforced = check_dmarc("example.com", ["v=DMARC1; p=quarantine"], "example.com", "x")
    assert enforced.status is CheckStatus.PASS


@pytest.mark.parametrize(
    ("answers", "status"),
    [([], CheckStatus.PASS), (["127.0.0.2"], CheckStatus.FAIL), (["127.0.0.4", "127.0.0.10"], CheckStatus.FAIL),
     (["127.255.255.254"], CheckStatus.ERROR), (["127.255.255.252"], CheckStatus.ERROR),
     (["127.0.0.2", "127.255.255.255"], CheckStatus.ERROR), (["192.0.2.5"], CheckStatus.ERROR)],
)
def test_dnsbl_answers(answers: list[str], status: CheckStatus) -> None:
    assert interpret_dnsbl("192.0.2.1", "zen.example", answers).status is status


def test_dnsbl_query_names() -> None:
    assert dnsbl_query_name("192.0.2.1", "zen.example.") == "1.2.0.192.zen.example"
    assert dnsbl_query_name("2001:db8::1", "bl.test").endswith(".8.b.d.0.1.0.0.2.bl.test")
