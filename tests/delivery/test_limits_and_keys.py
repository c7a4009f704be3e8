"""Destination limits (shipped table + overrides) and DKIM key storage."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import dkim
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcarrier.config_values import parse_destination_limit, parse_list
from mailcarrier.delivery.dkim_keys import dns_record, generate_key, load_or_create_key
from mailcarrier.delivery.limits import load_limits, override_rules
from mailcarrier.delivery.smtp_sessions import ConnectionLimits
from mailcarrier.domain.errors import ConfigurationError
from mailcarrier.services.composition import DkimSigner


def test_providers_by_domain_or_mx_and_default() -> None:
    limits = load_limits()
    assert limits.for_destination("gmail.com", "127.0.0.1") == ("gmail", ConnectionLimits(5, 50))
    assert limits.for_destination("corp.example", "aspmx.l.google.com")[0] == "gmail"
    assert limits.for_destination("hotmail.fr", "x")[0] == "microsoft"
    assert limits.for_destination("contoso.com", "contoso-com.mail.protection.outlook.com")[0] == "microsoft"
    assert limits.for_destination("tiny.example", "mx.tiny.example") == ("default", limits.default)


def test_overrides_come_first_and_bad_ones_are_refused() -> None:
    limits = load_limits(parse_list("gmail.com=2x10, *.corp=1X5", parse_destination_limit))
    assert limits.for_destination("gmail.com", "x") == ("setting:gmail.com", ConnectionLimits(2, 10))
    assert limits.for_destination("a.corp", "x")[1] == ConnectionLimits(1, 5)
    for bad in ("gmail.com", "gmail.com=5", "=5x5", "x=0x5", "x=ax5", "x=²x5"):
        with pytest.raises(ConfigurationError):
            parse_list(bad, parse_destination_limit)


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_key_generated_once_private_and_verifiable(tmp_path: Path, algorithm: str) -> None:
    key = load_or_create_key(tmp_path, "Shop.Example", "mc1", algorithm)
    pem = tmp_path / "dkim" / "shop.example" / "mc1.pem"
    assert stat.S_IMODE(os.stat(pem).st_mode) == 0o600
    again = load_or_create_key(tmp_path, "shop.example", "mc1", "rsa")  # existing key wins
    assert again.algorithm == key.algorithm == ("rsa-sha256" if algorithm == "rsa" else "ed25519-sha256")
    message = b"From: a@shop.example\r\nTo: b@x.example\r\nSubject: hi\r\n\r\nbody\r\n"
    signed = DkimSigner(again).sign(message, timestamp=1_700_000_000)
    record = dns_record(key).encode()
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)
    txt = (tmp_path / "dkim" / "shop.example" / "mc1.txt").read_text()
    assert txt.startswith("mc1._domainkey.shop.example. IN TXT")
    with pytest.raises(ConfigurationError, match="already exists"):
        generate_key(tmp_path, "shop.example", "mc1")


@pytest.mark.parametrize(("domain", "selector"), [("../etc", "mc1"), ("shop.example", "../x"),
                                                  ("", "mc1"), ("a b.example", "mc1")])
def test_unsafe_names_are_refused(tmp_path: Path, domain: str, selector: str) -> None:
    with pytest.raises(ConfigurationError):
        load_or_create_key(tmp_path, domain, selector)
    assert not (tmp_path / "dkim").exists() or not any((tmp_path / "dkim").rglob("*.pem"))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_override_text_parses_or_is_a_configuration_error(text: str) -> None:
    try:
        rules = override_rules(parse_list(text, parse_destination_limit))
    except ConfigurationError:
        return
    for rule in rules:
        assert rule.limits.connections >= 1 and rule.limits.messages_per_connection >= 1
        assert rule.name.startswith("setting:")
