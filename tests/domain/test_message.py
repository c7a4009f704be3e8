import email
import email.policy
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailcarrier.domain.message import MessageParts, compose_message

PARTS = MessageParts(
    from_header="Shop <news@shop.example>",
    to="ada@example.com",
    subject="Hello Ada",
    text="Hi Ada,\nnew things.\n",
    html="<p>Hi <b>Ada</b></p>",
    message_id="d42.m7@shop.example",
    date=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    return_path="b-1.7.16.abcdefghijklmnop@bounce.shop.example",
    unsubscribe_url="https://shop.example/u/tok",
    unsubscribe_mailto="unsub-tok@shop.example",
    feedback_id="7:1:newsletter:mailcarrier",
    delivery_token="tok",
    boundary="=_b42",
)


def _parse(data: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def test_headers_and_parts_read_back() -> None:
    composed = compose_message(PARTS)
    assert composed.envelope_from == PARTS.return_path
    assert composed.envelope_to == "ada@example.com"
    assert b"\r\n" in composed.data and b"\n" not in composed.data.replace(b"\r\n", b"")
    message = _parse(composed.data)
    assert message["Message-ID"] == "<d42.m7@shop.example>"
    assert message["List-Unsubscribe"] == "<https://shop.example/u/tok>, <mailto:unsub-tok@shop.example>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Feedback-ID"] == "7:1:newsletter:mailcarrier"
    assert message["X-Mailcarrier-Delivery"] == "tok"
    assert message["Return-Path"] is None
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().replace("\r\n", "\n") == "Hi Ada,\nnew things.\n"
    assert html.get_content().strip() == "<p>Hi <b>Ada</b></p>"
    assert not message.defects


_PRINTABLE = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))


@given(st.text(max_size=300), st.text(max_size=300), st.text(_PRINTABLE, max_size=80))
def test_any_unicode_content_round_trips(text: str, html: str, subject: str) -> None:
    composed = compose_message(replace(PARTS, text=text, html=html, subject=subject))
    message = _parse(composed.data)
    assert " ".join(str(message["Subject"]).split()) == " ".join(subject.split())
    plain = message.get_body(("plain",))
    assert plain is not None
    got = plain.get_content()
    want = text.replace("\r\n", "\n").replace("\r", "\n")
    assert got.replace("\r\n", "\n").rstrip("\n") == want.rstrip("\n")


@pytest.mark.parametrize("field", ["to", "subject", "from_header", "message_id", "feedback_id", "delivery_token"])
def test_header_injection_is_refused(field: str) -> None:
    with pytest.raises(ValueError, match="line break"):
        compose_message(replace(PARTS, **{field: "x\r\nBcc: victim@example.com"}))


def test_naive_date_and_bad_boundary_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        compose_message(replace(PARTS, date=datetime(2026, 1, 1)))
    with pytest.raises(ValueError, match="boundary"):
        compose_message(replace(PARTS, boundary="has space"))
