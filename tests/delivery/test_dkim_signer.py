import base64
from dataclasses import replace
from datetime import UTC, datetime

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcarrier.domain.message import MessageParts, compose_message
from mailcarrier.services.composition import DkimKey, DkimSigner

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()

PARTS = MessageParts(
    from_header="Shop <news@shop.example>", to="ada@example.com", subject="Héllo  Ada  ",
    text="Hi Ada,  \n\nnew\tthings.\n\n\n", html="<p>Hi <b>Ada</b></p>" * 500,
    message_id="d42.m7@shop.example", date=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    return_path="b-1.7.g.abcdefghijklmnop@bounce.shop.example",
    unsubscribe_url="https://shop.example/u/tok", unsubscribe_mailto="unsub-tok@shop.example",
    feedback_id="7:1:newsletter:mailcarrier", delivery_token="tok", boundary="=_b42",
)


def _dns_record(key: DkimKey) -> bytes:
    public = key.private_key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def _verify(key: DkimKey, signed: bytes) -> bool:
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == f"{key.selector}._domainkey.{key.domain}.".encode()
        return _dns_record(key)

    return bool(dkim.verify(signed, dnsfunc=dnsfunc))


KEYS = [DkimKey("shop.example", "s2026", RSA_KEY), DkimKey("shop.example", "ed", ED_KEY)]


@pytest.mark.parametrize("key", KEYS, ids=["rsa-2048", "ed25519"])
def test_signature_verifies_with_dkimpy(key: DkimKey) -> None:
    signed = DkimSigner(key).sign(compose_message(PARTS).data, timestamp=1_767_000_000)
    assert signed.startswith(f"DKIM-Signature: v=1; a={key.algorithm}; c=relaxed/relaxed".encode())
    assert _verify(key, signed)


@pytest.mark.parametrize("key", KEYS, ids=["rsa-2048", "ed25519"])
def test_tampered_body_or_header_fails(key: DkimKey) -> None:
    signed = DkimSigner(key).sign(compose_message(PARTS).data, timestamp=1)
    assert b"new\tthings" in signed
    assert not _verify(key, signed.replace(b"new\tthings", b"new\tthangs", 1))
    assert not _verify(key, signed.replace(b"Subject: ", b"Subject: Re: ", 1))


@settings(max_examples=25, deadline=None)
@given(st.text(max_size=200), st.text(max_size=200), st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=60))
def test_any_content_verifies(text: str, html: str, subject: str) -> None:
    message = compose_message(replace(PARTS, text=text, html=html, subject=subject)).data
    for key in KEYS:
        assert _verify(key, DkimSigner(key).sign(message, timestamp=1))


def test_pem_loading_refuses_weak_or_foreign_keys() -> None:
    pem = RSA_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    assert DkimKey.from_pem("shop.example", "s", pem).algorithm == "rsa-sha256"
    foreign = ec.generate_private_key(ec.SECP256R1())
    foreign_pem = foreign.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="RSA or Ed25519"):
        DkimKey.from_pem("shop.example", "s", foreign_pem)
