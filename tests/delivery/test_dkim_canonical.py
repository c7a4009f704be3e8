"""Signatures over arbitrary bodies (blank runs, tabs, trailing blanks, empty lines) verify with dkimpy."""

from __future__ import annotations

import tempfile
from pathlib import Path

import dkim
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcarrier.delivery.dkim_keys import dns_record, load_or_create_key
from mailcarrier.services.composition import DkimSigner

KEY = load_or_create_key(Path(tempfile.mkdtemp()), "shop.example", "mc1", "rsa")
RECORD = dns_record(KEY).encode()
SIGNER = DkimSigner(KEY)
LINES = st.lists(st.text(alphabet=" \t\xe9ab<>.", max_size=14), max_size=10)


@settings(max_examples=150, deadline=None)
@given(LINES)
def test_any_body_signs_and_verifies(lines: list[str]) -> None:
    body = "\r\n".join(lines).encode("utf-8") + b"\r\n"
    message = b"From: a@shop.example\r\nTo: b@x.example\r\nSubject: s\r\n\r\n" + body
    signed = SIGNER.sign(message, timestamp=1_700_000_000)
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: RECORD)
