"""Tracking tokens: exact round-trip, and anything forged, altered or expired gives None."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailcarrier.domain.tracking import TokenPurpose, TrackingToken, decode_token, encode_token

SECRET = b"master-secret-one"
OTHER = b"master-secret-two"
ids = st.integers(min_value=0, max_value=2**63 - 1)
tokens = st.builds(
    TrackingToken,
    purpose=st.sampled_from(list(TokenPurpose)),
    account_id=ids,
    mailing_id=ids,
    delivery_id=ids,
    link_id=ids,
    expires_at=st.integers(min_value=0, max_value=2**40),
)


@given(tokens, st.integers(min_value=0, max_value=255))
def test_round_trip(token: TrackingToken, key_id: int) -> None:
    text = encode_token(token, master_secret=SECRET, key_id=key_id)
    decoded = decode_token(text, secrets={key_id: SECRET}, purpose=token.purpose, now=0)
    assert decoded == token


@given(tokens, st.data())
def test_any_altered_character_is_rejected(token: TrackingToken, data: st.DataObject) -> None:
    text = encode_token(token, master_secret=SECRET, key_id=1)
    position = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    replacement = data.draw(st.sampled_from("AbZ09-_").filter(lambda c: c != text[position]))
    altered = text[:position] + replacement + text[position + 1 :]
    assert decode_token(altered, secrets={1: SECRET}, purpose=token.purpose, now=0) is None


@given(st.text(max_size=120))
def test_garbage_is_ignored(text: str) -> None:
    assert decode_token(text, secrets={1: SECRET}, purpose=TokenPurpose.CLICK, now=0) is None


def test_wrong_secret_purpose_or_key_id_is_rejected() -> None:
    token = TrackingToken(TokenPurpose.OPEN, 1, 2, 3)
    text = encode_token(token, master_secret=SECRET, key_id=1)
    assert decode_token(text, secrets={1: OTHER}, purpose=TokenPurpose.OPEN, now=0) is None
    assert decode_token(text, secrets={1: SECRET}, purpose=TokenPurpose.UNSUBSCRIBE, now=0) is None
    assert decode_token(text, secrets={2: SECRET}, purpose=TokenPurpose.OPEN, now=0) is None


def test_rotation_keeps_old_keys_working() -> None:
    old = encode_token(TrackingToken(TokenPurpose.CLICK, 1, 2, 3, 4), master_secret=SECRET, key_id=1)
    new = encode_token(TrackingToken(TokenPurpose.CLICK, 1, 2, 3, 5), master_secret=OTHER, key_id=2)
    keys = {1: SECRET, 2: OTHER}
    assert decode_token(old, secrets=keys, purpose=TokenPurpose.CLICK, now=0) is not None
    assert decode_token(new, secrets=keys, purpose=TokenPurpose.CLICK, now=0) is not None


def test_expired_token_is_rejected() -> None:
    token = TrackingToken(TokenPurpose.CONFIRM, 1, 0, 9, expires_at=1000)
    text = encode_token(token, master_secret=SECRET, key_id=0)
    assert decode_token(text, secrets={0: SECRET}, purpose=TokenPurpose.CONFIRM, now=999) == token
    assert decode_token(text, secrets={0: SECRET}, purpose=TokenPurpose.CONFIRM, now=1000) is None
