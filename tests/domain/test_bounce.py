import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcarrier.domain import Category, ParseError, Reason, SMTPStage, classify
from mailcarrier.domain.bounce import parse_bounce

SAMPLES = Path(__file__).parents[2] / "src" / "mailcarrier" / "samples" / "bounces"


def _parse(name: str):  # type: ignore[no-untyped-def]
    return parse_bounce((SAMPLES / name).read_bytes())


def test_standard_dsn_gives_recipient_status_code_and_our_headers() -> None:
    report = _parse("dsn-user-unknown.eml")
    assert report is not None and report.kind == "dsn"
    (record,) = report.records
    assert record.recipient == "nina.rossi@sample-receiver.test"
    assert (record.status, record.reply_code, record.reason, record.hard_bounce) == ("5.1.1", 550, Reason.USERUNKNOWN, True)
    assert record.remote_mta == "mx.sample-receiver.test"
    assert report.original_message_id == "<m7.d42@sample-sender.test>"
    assert ("X-Mailcarrier-Delivery", "d42") in report.original_headers


def test_non_standard_exim_bounce() -> None:
    report = _parse("exim-mailbox-full.eml")
    assert report is not None and report.kind == "nonstandard"
    (record,) = report.records
    assert record.recipient == "paul.martin@sample-receiver.test"
    assert (record.reason, record.reply_code, record.hard_bounce) == (Reason.MAILBOXFULL, 552, False)


def test_arf_complaint_has_feedback_type() -> None:
    report = _parse("arf-complaint.eml")
    assert report is not None and report.kind == "feedback" and report.feedback_type == "abuse"
    assert report.records[0].recipient == "lea.bianchi@sample-isp.test"
    assert report.records[0].reason is Reason.FEEDBACK


def test_vacation_is_an_autoreply_not_a_bounce() -> None:
    report = _parse("vacation.eml")
    assert report is not None and report.kind == "autoreply"
    assert report.records[0].reason is Reason.VACATION and not report.records[0].hard_bounce


def test_ordinary_mail_is_not_a_bounce() -> None:
    assert _parse("not-a-bounce.eml") is None


@pytest.mark.parametrize("raw", [b"", b"   \r\n", b"\x00\x01\x02garbage without headers"])
def test_malformed_input_raises_parse_error(raw: bytes) -> None:
    with pytest.raises(ParseError):
        parse_bounce(raw)


@settings(max_examples=300)
@given(st.binary(max_size=4000))
def test_any_bytes_return_or_raise_parse_error_only(raw: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_bounce(raw)


# Valid dot-atoms only: "a..0@example.org" is not an address, and parse_bounce rejects it.
_LOCAL = st.from_regex(r"[a-z][a-z0-9]{0,7}(?:\.[a-z0-9]{1,7}){0,2}", fullmatch=True)


@given(_LOCAL, st.sampled_from(["5.1.1", "5.2.2", "4.4.7", "5.7.1"]), st.sampled_from(["failed", "delayed"]))
def test_generated_dsn_round_trips_recipient_and_status(local: str, status: str, action: str) -> None:
    rcpt = f"{local}@example.org"
    raw = (
        "From: MAILER-DAEMON@mx.example.net\r\nTo: b@example.com\r\nSubject: report\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="x"\r\n\r\n'
        "--x\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        "--x\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\nAction: {action}\r\nStatus: {status}\r\n\r\n--x--\r\n"
    ).encode()
    report = parse_bounce(raw)
    assert report is not None
    (record,) = report.records
    assert (record.recipient, record.status, record.action) == (rcpt, status, action)


def _dsn(notice: str, *blocks: tuple[str, str, str], headers: str = "") -> bytes:
    """A multipart/report DSN: a notification text, one block per (rcpt, status, reply), and
    the returned header section when ``headers`` is given."""
    fields = "\r\n".join(
        f"Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {reply}\r\n" for rcpt, status, reply in blocks)
    return (
        "From: Mail Delivery Subsystem <MAILER-DAEMON@relay.sample-sender.test>\r\n"
        "To: news@sample-sender.test\r\nSubject: Returned mail: see transcript for details\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n'
        f"\r\n--b1\r\nContent-Type: text/plain\r\n\r\n{notice}\r\n"
        "--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; relay.sample-sender.test\r\n\r\n{fields}\r\n"
        + (f"--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n{headers}\r\n" if headers else "")
        + "--b1--\r\n").encode()


def test_the_notification_of_a_one_recipient_dsn_may_name_the_mailbox_state() -> None:
    # The relay reduced a quota refusal to "5.1.1 user unknown"; its own notice says why.
    raw = _dsn("Your message to ivo could not be delivered:\r\n"
               "   the recipient's mailbox is full and cannot take more mail.",
               ("ivo.petrov@sample-receiver.test", "5.1.1", "550 5.1.1 <ivo.petrov@sample-receiver.test>... User unknown"))
    report = parse_bounce(raw)
    assert report is not None
    (record,) = report.records
    assert (record.reason, record.hard_bounce, record.rule) == (Reason.MAILBOXFULL, False, "notice:mailboxfull")
    # Without that sentence the same DSN is a missing mailbox.
    plain = parse_bounce(_dsn("Your message could not be delivered.",
                              ("ivo.petrov@sample-receiver.test", "5.1.1", "550 5.1.1 User unknown")))
    assert plain is not None and plain.records[0].reason is Reason.USERUNKNOWN


def test_a_notification_about_several_recipients_does_not_decide_for_each() -> None:
    raw = _dsn("One of the recipients' mailbox is full.",
               ("ana@sample-receiver.test", "5.1.1", "550 5.1.1 User unknown"),
               ("bo@sample-receiver.test", "5.2.2", "552 5.2.2 Mailbox full"))
    report = parse_bounce(raw)
    assert report is not None
    assert [r.reason for r in report.records] == [Reason.USERUNKNOWN, Reason.MAILBOXFULL]


def test_a_disabled_account_told_in_the_notice_is_suspend() -> None:
    raw = _dsn("The recipient's account has been suspended by its provider.",
               ("kai@sample-carrier.test", "5.0.0", "550 user unknown"))
    report = parse_bounce(raw)
    assert report is not None and report.records[0].reason is Reason.SUSPEND


def test_a_gateway_notice_is_explained_by_the_bounce_it_forwards() -> None:
    forwarded = (
        "From: MAILER-DAEMON@mx.sample-receiver.test\r\nTo: eva@sample-sender.test\r\n"
        "Subject: Returned mail: see transcript for details\r\n\r\n"
        "----- The following addresses had permanent fatal errors -----\r\n"
        "<tom.weber@sample-receiver.test>\r\n\r\n"
        "----- Transcript of session follows -----\r\n"
        ">>> RCPT To:<tom.weber@sample-receiver.test>\r\n"
        "<<< 550 5.1.1 <tom.weber@sample-receiver.test>... Mailbox unavailable\r\n")
    raw = (
        "From: postmaster@gw.sample-receiver.test\r\nTo: eva@sample-sender.test\r\n"
        "Subject: Mail could not be delivered\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="gw"\r\n\r\n'
        "--gw\r\nContent-Type: text/plain\r\n\r\n"
        "****** Message from the mail security gateway ******\r\n"
        "The following mail could not be delivered.\r\n"
        "Reason: Unable to deliver message to <tom.weber@sample-receiver.test>.\r\n"
        f"--gw\r\nContent-Type: message/rfc822\r\n\r\n{forwarded}--gw--\r\n").encode()
    report = parse_bounce(raw)
    assert report is not None
    (record,) = report.records
    assert (record.recipient, record.reason, record.hard_bounce) == (
        "tom.weber@sample-receiver.test", Reason.USERUNKNOWN, True)


def test_a_content_filter_notice_below_quoted_headers_still_explains_the_refusal() -> None:
    # A content filter quotes the offending header lines in its notice, then says what is
    # wrong with them; the returned headers travel in their own part.
    notice = ("Your message to <lin@sample-receiver.test> was stopped by the content filter.\r\n\r\n"
              "Return-Path: <news@sample-sender.test>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\n"
              "Date: Mon, 2 Nov 2026 10:00:01 +0000\r\n\r\nDuplicate header field: \"Date\"\r\n")
    raw = _dsn(notice, ("lin@sample-receiver.test", "5.7.0", "554 5.7.0 Reject, id=31337-04 - BAD HEADER"),
               headers="From: news@sample-sender.test\r\nTo: lin@sample-receiver.test\r\nSubject: hi")
    report = parse_bounce(raw)
    assert report is not None and report.records[0].reason is Reason.NOTCOMPLIANTRFC


def _postfix_expiry(action: str, status: str, reply: str) -> bytes:
    """A Postfix-style DSN returning a message after its queue lifetime, quoting the last reply."""
    return _dsn("I'm sorry to have to inform you that your message could not\r\nbe delivered.",
                ("mila@sample-receiver.test", status, reply)).replace(
        b"Action: failed", f"Action: {action}".encode())


def test_a_failed_dsn_whose_last_reply_denied_the_mailbox_invalidates_it_even_as_4xx() -> None:
    # Postfix gives up after its queue lifetime on a server that kept answering 450 4.1.1
    # (unknown_local_recipient_reject_code = 450): the mailbox was refused to the end.
    reply = "450 4.1.1 <mila@sample-receiver.test>: Recipient address rejected: User unknown in local recipient table"
    report = parse_bounce(_postfix_expiry("failed", "4.1.1", reply))
    assert report is not None
    (record,) = report.records
    assert (record.reason, record.category, record.hard_bounce) == (Reason.USERUNKNOWN, Category.INVALID_ADDRESS, True)
    # While the sender is still retrying, the same answer proves nothing yet.
    delayed = parse_bounce(_postfix_expiry("delayed", "4.1.1", reply))
    assert delayed is not None
    assert (delayed.records[0].category, delayed.records[0].hard_bounce) == (Category.TEMPORARY, False)
    # Live, the 450 is a deferral: category 3, retried.
    live = classify(reply, code=450, stage=SMTPStage.RCPT)
    assert (live.category, live.address_invalid, live.retry) == (Category.TEMPORARY, False, True)


def test_a_failed_dsn_on_a_temporary_dns_answer_stays_soft() -> None:
    # Gmail reports a Null MX as 4.0.0; a domain-level 4xx is no verdict on the address.
    reply = ("DNS Error: DNS type 'mx' lookup of sample-receiver.test responded with code SERVFAIL "
             "Domain name not found")
    report = parse_bounce(_postfix_expiry("failed", "4.0.0", reply))
    assert report is not None
    assert report.records[0].hard_bounce is False
