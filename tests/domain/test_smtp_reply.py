import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailcarrier.domain import EnhancedStatus, ParseError, SMTPStage, parse_reply
from mailcarrier.domain.smtp_reply import find_enhanced_status, status_in_text


def test_single_line_with_enhanced_status() -> None:
    reply = parse_reply("550 5.1.1 <a@example.com>: Recipient address rejected", SMTPStage.RCPT)
    assert reply.code == 550
    assert reply.enhanced == EnhancedStatus(5, 1, 1)
    assert reply.text == "<a@example.com>: Recipient address rejected"
    assert reply.stage is SMTPStage.RCPT
    assert reply.is_permanent


def test_multi_line_joins_text_and_keeps_first_status() -> None:
    raw = (
        "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n"
        "550-5.1.1 double-checking the recipient's email address for typos or\r\n"
        "550 5.1.1 unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser x1si\r\n"
    )
    reply = parse_reply(raw)
    assert reply.code == 550
    assert str(reply.enhanced) == "5.1.1"
    assert reply.text.startswith("The email account that you tried to reach does not exist. Please try double")
    assert "5.1.1" not in reply.text


def test_reply_without_enhanced_status() -> None:
    reply = parse_reply(b"421 mx.example.net Service not available")
    assert reply.enhanced is None and reply.is_transient


def test_status_written_with_a_hash_after_the_code() -> None:
    reply = parse_reply("550 #5.1.0 Address rejected.", SMTPStage.RCPT)  # Cisco Secure Email (IronPort)
    assert reply.enhanced == EnhancedStatus(5, 1, 0) and reply.text == "Address rejected."


def test_ip_address_is_not_an_enhanced_status() -> None:
    assert find_enhanced_status("Client host [5.1.1.2] blocked") is None
    assert find_enhanced_status("said: 550 5.7.1 blocked") == EnhancedStatus(5, 7, 1)


@pytest.mark.parametrize("raw", ["", "   ", "hello world", "5.1.1 only a status"])
def test_garbage_raises_parse_error(raw: str) -> None:
    with pytest.raises(ParseError):
        parse_reply(raw)


def test_parse_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_reply("nonsense")


@given(st.text())
def test_parse_reply_never_crashes_on_any_text(raw: str) -> None:
    try:
        reply = parse_reply(raw)
    except ParseError:
        return
    assert 200 <= reply.code <= 599


@given(
    st.integers(200, 599),
    st.one_of(st.none(), st.tuples(st.sampled_from([2, 4, 5]), st.integers(0, 999), st.integers(0, 999))),
    st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1).map(str.strip).filter(bool), min_size=1, max_size=4),
)
def test_round_trip_of_generated_replies(code: int, status: tuple[int, int, int] | None, lines: list[str]) -> None:
    prefix = f"{status[0]}.{status[1]}.{status[2]} " if status else ""
    raw = "\r\n".join(
        f"{code}{'-' if i < len(lines) - 1 else ' '}{prefix}{line}" for i, line in enumerate(lines)
    )
    reply = parse_reply(raw)
    assert reply.code == code
    if status:
        assert reply.enhanced == EnhancedStatus(*status)


@given(st.text(max_size=200))
def test_status_in_text_agrees_with_find_enhanced_status(text: str) -> None:
    found, as_text = find_enhanced_status(text), status_in_text(text)
    assert (found is None) == (as_text == "")
    if found is not None:
        assert EnhancedStatus.parse(as_text) == found


def test_status_in_text_skips_ip_addresses() -> None:
    assert status_in_text("from 192.0.2.1 said 550 5.1.1 unknown") == "5.1.1"
    assert status_in_text("host 4.4.4.4 refused") == ""
