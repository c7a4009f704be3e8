"""DKIM records a DNS server loads, and dual signing (Ed25519 beside RSA, RFC 8463).

Zone-file loading by NSD, BIND and Knot themselves is in ``tests/interop``; here the record's
shape (strings of at most 255 octets that join back into the key) and dkimpy's verdict on
every signature of a dual-signed message.
"""

from __future__ import annotations

import re
from pathlib import Path

import dkim
import pytest
from typer.testing import CliRunner

from mailcarrier.cli.main import app
from mailcarrier.delivery.dkim_keys import dns_record, load_or_create_key, signing_keys, zone_record
from mailcarrier.services.composition import DkimKey, DkimSigner

MESSAGE = (b"From: News <news@shop.example>\r\nTo: ann@example.com\r\nSubject: hi\r\n"
           b"Message-ID: <x@shop.example>\r\n\r\nbody  with  spaces \r\n.\r\n")


def _strings(record: str) -> list[str]:
    """The character-strings of a zone-file TXT line (no escapes inside: base64 and tags only)."""
    return re.findall(r'"([^"]*)"', record)


def _dns(keys: tuple[DkimKey, ...]) -> dict[bytes, bytes]:
    """What a resolver returns for each key: the strings of its zone record joined (RFC 6376 3.6.2.2)."""
    return {f"{k.selector}._domainkey.{k.domain}.".encode(): "".join(_strings(zone_record(k))).encode()
            for k in keys}


def test_rsa_record_is_split_into_strings_of_at_most_255_octets(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path, "shop.example", "mc1", "rsa")
    record = zone_record(key)
    strings = _strings(record)
    assert len(dns_record(key)) > 255 and len(strings) == 2
    assert all(len(s.encode()) <= 255 for s in strings)
    assert "".join(strings) == dns_record(key)
    assert record.startswith("mc1._domainkey.shop.example. IN TXT (") and record.endswith(")")
    assert (tmp_path / "dkim" / "shop.example" / "mc1.txt").read_text() == record + "\n"


def test_short_ed25519_record_is_one_string(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path, "shop.example", "ed", "ed25519-only")
    assert zone_record(key) == f'ed._domainkey.shop.example. IN TXT "{dns_record(key)}"'


@pytest.mark.parametrize(("algorithm", "expected"), [
    ("ed25519", [("mc1", "ed25519-sha256"), ("mc1-rsa", "rsa-sha256")]),
    ("ed25519-only", [("mc1", "ed25519-sha256")]),
    ("rsa", [("mc1", "rsa-sha256")]),
])
def test_ed25519_signs_beside_rsa_by_default(tmp_path: Path, algorithm: str,
                                             expected: list[tuple[str, str]]) -> None:
    keys = signing_keys(tmp_path, "shop.example", "mc1", algorithm)
    assert [(k.selector, k.algorithm) for k in keys] == expected
    signed = DkimSigner(*keys).sign(MESSAGE, timestamp=1_767_000_000)
    assert signed.count(b"DKIM-Signature:") == len(keys)
    records = _dns(keys)
    verifier = dkim.DKIM(signed)
    for index in range(len(keys)):  # each signature on its own, not just "one of them passed"
        assert verifier.verify(idx=index, dnsfunc=lambda name, timeout=5: records[name])
    # the same keys again: nothing regenerated
    assert [dns_record(k) for k in signing_keys(tmp_path, "shop.example", "mc1", algorithm)] == \
        [dns_record(k) for k in keys]


def test_an_ed25519_key_made_earlier_signs_beside_rsa_whatever_the_setting(tmp_path: Path) -> None:
    load_or_create_key(tmp_path, "shop.example", "mc1", "ed25519")  # e.g. dkim generate --algorithm ed25519
    keys = signing_keys(tmp_path, "shop.example", "mc1", "rsa")
    assert [(k.selector, k.algorithm) for k in keys] == [("mc1", "ed25519-sha256"), ("mc1-rsa", "rsa-sha256")]


def test_existing_rsa_selector_is_not_doubled(tmp_path: Path) -> None:
    load_or_create_key(tmp_path, "shop.example", "mc1", "rsa")
    assert [k.algorithm for k in signing_keys(tmp_path, "shop.example", "mc1", "ed25519")] == ["rsa-sha256"]


def test_dkim_show_prints_every_record_in_zone_syntax(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILCARRIER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MAILCARRIER_DKIM_ALGORITHM", "ed25519")
    result = CliRunner().invoke(app, ["dkim", "show", "shop.example"])
    assert result.exit_code == 0, result.output
    keys = signing_keys(tmp_path, "shop.example", "mc1", "ed25519")
    assert result.output == "".join(zone_record(k) + "\n" for k in keys)
    assert all(len(s) <= 255 for s in _strings(result.output))
