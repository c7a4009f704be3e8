import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailcarrier.domain.verp import VerpAddress, decode_return_path, encode_return_path

KEY = b"installation-secret"
ids = st.integers(min_value=0, max_value=2**63 - 1)


def test_round_trip_example() -> None:
    address = VerpAddress(1, 22, 333)
    path = encode_return_path(address, key=KEY, bounce_domain="Bounce.Example.com")
    assert path.startswith("b-1.m.99.")
    assert path.endswith("@bounce.example.com")
    assert decode_return_path(path, key=KEY) == address


@given(ids, ids, ids)
def test_decode_is_exact_inverse(account: int, mailing: int, delivery: int) -> None:
    address = VerpAddress(account, mailing, delivery)
    path = encode_return_path(address, key=KEY, bounce_domain="b.example")
    assert len(path.partition("@")[0]) <= 64
    assert decode_return_path(path, key=KEY) == address
    assert decode_return_path(path.upper(), key=KEY) == address
    assert decode_return_path(f"<{path}>", key=KEY) == address


def test_altered_ids_are_rejected() -> None:
    path = encode_return_path(VerpAddress(1, 2, 3), key=KEY, bounce_domain="b.example")
    forged = path.replace("b-1.2.3.", "b-1.2.4.")
    assert decode_return_path(forged, key=KEY) is None


def test_other_key_is_rejected() -> None:
    path = encode_return_path(VerpAddress(1, 2, 3), key=KEY, bounce_domain="b.example")
    assert decode_return_path(path, key=b"another-secret") is None
    assert decode_return_path(path, key=b"") is None


@pytest.mark.parametrize(
    "text",
    ["", "@", "nobody@example.com", "b-1.2.3@b.example", "b-1.2.3.x.y@b.example",
     "b-01.2.3.abcdefghijklmnop@b.example", "b-_.2.3.abcdefghijklmnop@b.example", "b-1.2.3.sig"],
)
def test_foreign_or_malformed_addresses_give_none(text: str) -> None:
    assert decode_return_path(text, key=KEY) is None


@given(st.text(max_size=120))
def test_decode_never_crashes(text: str) -> None:
    assert decode_return_path(text, key=KEY) is None


@given(ids, ids, ids, st.integers(min_value=0, max_value=40), st.characters(min_codepoint=33, max_codepoint=126))
def test_any_single_character_change_is_rejected(
    account: int, mailing: int, delivery: int, position: int, char: str
) -> None:
    path = encode_return_path(VerpAddress(account, mailing, delivery), key=KEY, bounce_domain="b.example")
    local, _, domain = path.partition("@")
    position %= len(local)
    if local[position].lower() == char.lower():
        return
    altered = local[:position] + char + local[position + 1:] + "@" + domain
    assert decode_return_path(altered, key=KEY) is None


@pytest.mark.parametrize(
    ("address", "kwargs"),
    [
        (VerpAddress(-1, 2, 3), {"key": KEY, "bounce_domain": "b.example"}),
        (VerpAddress(1, 2, 3), {"key": b"", "bounce_domain": "b.example"}),
        (VerpAddress(1, 2, 3), {"key": KEY, "bounce_domain": ""}),
        (VerpAddress(1, 2, 3), {"key": KEY, "bounce_domain": "a@b"}),
    ],
)
def test_encode_refuses_undecodable_input(address: VerpAddress, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        encode_return_path(address, **kwargs)  # type: ignore[arg-type]
