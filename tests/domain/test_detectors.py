"""Bounce detectors, the lean MIME reader and the field/paragraph parsers they rely on."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from mailcarrier.domain.bounce import parse_bounce
from mailcarrier.domain.detectors import DETECTORS, BounceMail, detect
from mailcarrier.domain.detectors.base import addresses, split_diagnostic_type, wording
from mailcarrier.domain.detectors.dsn import parse_fields
from mailcarrier.domain.detectors.mime import MimePart, normalise_newlines
from mailcarrier.domain.detectors.prose import address_paragraphs
from mailcarrier.domain.errors import ParseError
from mailcarrier.domain.smtp_reply import SMTPStage
from mailcarrier.domain.vocabulary import Reason


def _mail(raw: str) -> BounceMail:
    return BounceMail(MimePart(normalise_newlines(raw.encode())))


# -- MIME reader ----------------------------------------------------------------------------

NESTED = (
    "From: a@example.org\r\nSubject: =?utf-8?q?Caf=C3=A9_report?=\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="outer"\r\n\r\npreamble\r\n'
    "--outer\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n"
    "\r\nd=E9j=E0 vu\r\n"
    "--outer\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    "aGVsbG8g\r\nd29ybGQ=\r\n"
    "--outer\r\nContent-Type: message/rfc822\r\n\r\nMessage-ID: <inner@example.org>\r\n"
    "X-Mailcarrier-Delivery: d1\r\nSubject: inner\r\n\r\nbody\r\n"
    "--outer--\r\nepilogue\r\n"
)


def test_mime_reader_walks_nested_parts_and_decodes_payloads() -> None:
    msg = MimePart(normalise_newlines(NESTED.encode()))
    assert msg.get("subject") == "Café report"
    types = [p.content_type for p in msg.walk()]
    assert types == ["multipart/mixed", "text/plain", "application/octet-stream", "message/rfc822",
                     "text/plain"]
    text_part, binary, encapsulated = msg.children
    assert text_part.text().strip() == "déjà vu"
    assert binary.payload() == b"hello world"
    assert encapsulated.children[0].get("Message-ID") == "<inner@example.org>"


def test_mime_reader_accepts_bare_cr_line_endings_and_mbox_separator() -> None:
    raw = b"From MAILER-DAEMON Thu Apr 29 23:34:45 2010\rFrom: x@example.org\rSubject: hi\r\rbody\r"
    msg = MimePart(normalise_newlines(raw))
    assert msg.get("From") == "x@example.org" and msg.text().strip() == "body"


def test_mime_reader_keeps_a_part_with_a_missing_boundary_childless() -> None:
    msg = MimePart(b"Content-Type: multipart/mixed\n\n--x\nContent-Type: text/plain\n\nhi\n")
    assert msg.children == [] and not msg.is_multipart


@settings(max_examples=300)
@given(st.binary(max_size=3000))
def test_mime_reader_never_raises_on_any_bytes(raw: bytes) -> None:
    msg = MimePart(normalise_newlines(raw))
    for part in msg.walk():
        assert isinstance(part.headers(), list)
        assert "/" in part.content_type
        assert isinstance(part.text(), str) and isinstance(part.filename, str)


# -- field blocks and paragraphs -------------------------------------------------------------

def test_parse_fields_splits_recipients_without_blank_lines_and_unfolds() -> None:
    blocks = parse_fields(
        "Reporting-MTA: dns; mx.example.net\n\n"
        "Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.2.2\n"
        "Diagnostic-Code: smtp; 552 5.2.2 mailbox\n full\n"
        "Final-Recipient: rfc822; b@example.org\nOriginal-Recipient: rfc822; b@example.org\n"
        "Action: failed\nStatus: 5.1.1\n")
    assert [b.get("final-recipient") for b in blocks] == [None, "rfc822; a@example.org", "rfc822; b@example.org"]
    assert blocks[1]["diagnostic-code"] == "smtp; 552 5.2.2 mailbox full"
    assert blocks[2]["original-recipient"] == "rfc822; b@example.org"


@given(st.text(max_size=2000))
def test_parse_fields_on_any_text_gives_lowercase_names(text: str) -> None:
    for block in parse_fields(text):
        assert all(name == name.lower() and name for name in block)


def test_address_paragraphs_keep_folded_lines_with_their_recipient() -> None:
    body = ("<a@example.org>: host mx.example.org[192.0.2.1] said: 550 5.1.1\n"
            "    <a@example.org>... User unknown (in reply to RCPT TO command)\n\n"
            "  b@example.org\n    retry timeout exceeded\n")
    found = dict(address_paragraphs(body))
    assert "in reply to RCPT TO command" in found["a@example.org"]
    assert found["b@example.org"] == "retry timeout exceeded"


@given(st.text(max_size=1500))
def test_address_paragraphs_only_name_addresses_present_in_the_text(text: str) -> None:
    lowered = text.lower()
    for address, _ in address_paragraphs(text):
        assert address in lowered and "@" in address


@given(st.text(max_size=300))
def test_split_diagnostic_type_keeps_the_text(text: str) -> None:
    dtype, rest = split_diagnostic_type(text)
    assert rest in text and (not dtype or text.startswith(dtype))


def test_addresses_are_lowercased_in_order_without_repeats() -> None:
    assert addresses("To <B@Example.org>, a@example.org; b@example.org.") == ["b@example.org", "a@example.org"]


# -- detectors -------------------------------------------------------------------------------

def test_registry_starts_with_the_standard_dsn() -> None:
    assert DETECTORS[0].name == "rfc3464"
    assert {"rfc3464", "amazonses", "prose"} <= {d.name for d in DETECTORS}


def test_ordinary_mail_is_read_by_no_detector() -> None:
    mail = _mail("From: ann@example.org\nTo: bob@example.net\nSubject: lunch\n\nSee you at noon, bob@example.net\n")
    assert detect(mail) is None


def test_dsn_takes_the_command_from_the_human_readable_part() -> None:
    raw = (
        "From: MAILER-DAEMON@mx.example.net\nTo: news@example.com\nSubject: Undelivered Mail\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\n<ann@example.org>: host mx.example.org[192.0.2.9] said: 550\n"
        "    Unknown user ann (in reply to end of DATA command)\n\n"
        "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
        "Final-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 5.0.0\n"
        "Diagnostic-Code: smtp; 550 Unknown user ann\n\n--b--\n")
    name, (found,) = detect(_mail(raw)) or ("", ())
    assert name == "rfc3464" and found.command is SMTPStage.EOD
    (record,) = (parse_bounce(raw.encode()) or _fail()).records
    # "unknown user" answered to the end of DATA is a content filter speaking.
    assert record.reason is Reason.FILTERED and not record.hard_bounce


def test_exim_prose_bounce_reads_command_and_expiry_wording() -> None:
    raw = (
        "From: Mail Delivery System <Mailer-Daemon@relay.example.net>\nTo: news@example.com\n"
        "Subject: Mail delivery failed: returning message to sender\n\n"
        "This message was created automatically by mail delivery software.\n\n"
        "A message that you sent could not be delivered to one or more of its\n"
        "recipients. This is a permanent error. The following address(es) failed:\n\n"
        "  ann@example.org\n    host mx.example.org [192.0.2.7]\n"
        "    SMTP error from remote mail server after RCPT TO:<ann@example.org>:\n"
        "    550 5.1.1 <ann@example.org>: Recipient address rejected: User unknown\n\n"
        "  bob@example.org\n    retry timeout exceeded\n\n"
        "------ This is a copy of the message, including all the headers. ------\n\n"
        "To: ann@example.org, bob@example.org\nFrom: news@example.com\n\nhello\n")
    report = parse_bounce(raw.encode())
    assert report is not None and report.kind == "nonstandard"
    ann, bob = report.records
    assert (ann.recipient, ann.reason, ann.hard_bounce) == ("ann@example.org", Reason.USERUNKNOWN, True)
    assert (bob.recipient, bob.reason, bob.hard_bounce) == ("bob@example.org", Reason.EXPIRED, False)


def test_qmail_full_mailbox_beats_its_giving_up_wording() -> None:
    raw = (
        "From: MAILER-DAEMON@mail.example.net\nTo: news@example.com\nSubject: failure notice\n\n"
        "Hi. This is the qmail-send program at mail.example.net.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n\n"
        "<carl@example.org>:\n192.0.2.3 does not like recipient.\n"
        "Remote host said: 452 4.2.2 <carl@example.org>... Mailbox full\nGiving up on 192.0.2.3.\n"
        "I'm not going to try again; this message has been in the queue too long.\n\n"
        "--- Below this line is a copy of the message.\n\nSubject: hi\n\nhello\n")
    (record,) = (parse_bounce(raw.encode()) or _fail()).records
    assert (record.recipient, record.reason) == ("carl@example.org", Reason.MAILBOXFULL)


def _ses(doc: dict[str, object]) -> bytes:
    return ("From: no-reply@sns.amazonaws.com\nTo: ops@example.com\nSubject: AWS Notification Message\n"
            "Content-Type: text/plain; charset=UTF-8\n\n" + json.dumps(doc) + "\n\n--\nunsubscribe\n").encode()


def test_amazon_ses_bounce_complaint_and_delivery_notifications() -> None:
    bounce = _ses({"notificationType": "Bounce", "bounce": {
        "bounceType": "Permanent", "bouncedRecipients": [
            {"emailAddress": "dan@example.org", "action": "failed", "status": "5.1.1",
             "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]}})
    (record,) = (parse_bounce(bounce) or _fail()).records
    assert (record.recipient, record.reason, record.hard_bounce, record.reply_code) == (
        "dan@example.org", Reason.USERUNKNOWN, True, 550)
    complaint = parse_bounce(_ses({"notificationType": "Complaint", "complaint": {
        "complainedRecipients": [{"emailAddress": "eve@example.org"}], "complaintFeedbackType": "abuse"}}))
    assert complaint is not None and complaint.kind == "feedback" and complaint.feedback_type == "abuse"
    assert complaint.records[0].recipient == "eve@example.org"
    delivered = parse_bounce(_ses({"notificationType": "Delivery", "delivery": {
        "recipients": ["fay@example.org"], "smtpResponse": "250 2.6.0 Message received"}}))
    assert delivered is not None and delivered.records[0].reason is Reason.DELIVERED


def test_ses_notification_folded_by_sns_is_still_read() -> None:
    doc = json.dumps({"notificationType": "Bounce", "bounce": {"bounceType": "Transient", "bouncedRecipients": [
        {"emailAddress": "gil@example.org", "status": "4.2.2", "diagnosticCode": "smtp; 452 4.2.2 over quota"}]}})
    folded = doc[:60] + "!\n " + doc[60:]
    raw = ("From: no-reply@sns.amazonaws.com\nSubject: AWS Notification Message\n\n" + folded + "\n").encode()
    (record,) = (parse_bounce(raw) or _fail()).records
    assert (record.recipient, record.reason) == ("gil@example.org", Reason.MAILBOXFULL)


def test_google_groups_refusal_is_rejected_in_any_language() -> None:
    raw = ("From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\nTo: ann@example.com\n"
           "Subject: Delivery Status Notification (Failure)\nX-Failed-Recipients: team@googlegroups.com\n\n"
           "Hola ann@example.com, el grupo que intentaste contactar (team) puede no existir.\n")
    (record,) = (parse_bounce(raw.encode()) or _fail()).records
    assert (record.recipient, record.reason, record.hard_bounce) == ("team@googlegroups.com", Reason.REJECTED, False)


def _fail() -> object:
    raise AssertionError("expected a bounce report")


def test_a_person_talking_about_a_failed_delivery_is_not_a_bounce() -> None:
    raw = ("From: Ann <ann@example.org>\nTo: ops@example.com\nSubject: Re: delivery failed?\n\n"
           "I think bob@example.net blocked us, or marked the newsletter as spam.\n")
    assert parse_bounce(raw.encode()) is None


_LINE = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)
_FIELD_NAMES = st.sampled_from(["Final-Recipient", "Original-Recipient", "Action", "Status", "Diagnostic-Code",
                                "Remote-MTA", "Content-Type", "X-Failed-Recipients", "Subject", "From"])


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from(["text/plain", "message/delivery-status", "message/rfc822",
                                           "text/rfc822-headers", "text/html", "multipart/mixed"]),
                          st.sampled_from(["", "base64", "quoted-printable", "7bit"]),
                          st.lists(st.tuples(_FIELD_NAMES, _LINE), max_size=6),
                          st.lists(_LINE, max_size=8)), max_size=5),
       st.sampled_from(["\n", "\r\n", "\r"]))
def test_structured_random_bounces_parse_or_raise_parse_error_only(
        parts: list[tuple[str, str, list[tuple[str, str]], list[str]]], newline: str) -> None:
    lines = ["From: MAILER-DAEMON@mx.example.net", "Subject: Undelivered Mail",
             'Content-Type: multipart/report; report-type=delivery-status; boundary="zz"', ""]
    for ctype, encoding, fields, body in parts:
        lines += ["--zz", f"Content-Type: {ctype}"] + ([f"Content-Transfer-Encoding: {encoding}"] if encoding else [])
        lines += [""] + [f"{name}: {value}" for name, value in fields] + [""] + body
    lines.append("--zz--")
    raw = newline.join(lines).encode("utf-8", "surrogatepass")
    try:
        report = parse_bounce(raw)
    except ParseError:
        return
    for record in report.records if report else ():
        assert isinstance(record.reason, Reason)
        assert "@" in record.recipient or record.recipient == ""


def test_a_huge_prose_body_is_read_from_its_top_only() -> None:
    raw = (b"From: MAILER-DAEMON@mx.example.net\nSubject: Undelivered Mail\n\n"
           + b"ann@example.org: 550 5.1.1 user unknown (in reply to RCPT TO command)\n" * 100_000)
    (record,) = (parse_bounce(raw) or _fail()).records
    assert (record.recipient, record.reason) == ("ann@example.org", Reason.USERUNKNOWN)


SENDMAIL_TRANSCRIPT = (
    "From: MAILER-DAEMON@gw.sample-sender.test (Mail Delivery Subsystem)\n"
    "To: lists@sample-sender.test\nSubject: Returned mail: Remote protocol error\n\n"
    "   ----- Transcript of session follows -----\n"
    "... while talking to mx2.sample-receiver.test.:\n"
    ">>> MAIL From:<lists@sample-sender.test> SIZE=2048\n"
    "<<< 553 5.7.1 Sorry, we do not relay for your domain\n"
    "554 <omar@sample-receiver.test>... Remote protocol error\n"
    "451 sample-receiver.test (smtp)... Deferred: Connection reset by peer\n\n"
    "   ----- Unsent message follows -----\n"
    "To: omar@sample-receiver.test\nSubject: hello\n\nhi\n"
)


def test_sendmail_transcript_reply_before_the_summary_line_is_the_evidence() -> None:
    report = parse_bounce(SENDMAIL_TRANSCRIPT.encode())
    assert report is not None
    (record,) = report.records
    assert record.recipient == "omar@sample-receiver.test"
    # The server's own reply to MAIL FROM says why; Sendmail's summary only "protocol error".
    assert "<<< 553 5.7.1 Sorry, we do not relay" in record.diagnostic
    assert (record.reason, record.reply_code) == (Reason.NORELAYING, 553)


def test_of_two_accounts_of_a_recipient_the_one_quoting_the_reply_wins() -> None:
    raw = (
        "From: Mail Delivery Subsystem <MAILER-DAEMON@gw.sample-sender.test>\n"
        "To: lists@sample-sender.test\nSubject: Returned mail: User unknown\n\n"
        "----- The following addresses had permanent fatal errors -----\n"
        "<zoe.lambert@sample-receiver.test>\n\n"
        "----- Transcript of session follows -----\n"
        "... while talking to inbound-smtp.sample-receiver.test.:\n"
        ">>> RCPT To:<zoe.lambert@sample-receiver.test>\n"
        "<<< 550 5.1.1 <zoe.lambert@sample-receiver.test>... User unknown\n"
    )
    report = parse_bounce(raw.encode())
    assert report is not None
    (record,) = report.records
    assert (record.reason, record.reply_code, record.status) == (Reason.USERUNKNOWN, 550, "5.1.1")



def test_gmail_dialogue_state_gives_the_command_a_reply_answered() -> None:
    assert wording().command_in("550 550 5.1.1 <x@example.net>... User Unknown (state 14).") is SMTPStage.RCPT
    assert wording().command_in("554 554 5.7.0 Message refused (state 18).") is SMTPStage.EOD
