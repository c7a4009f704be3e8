"""Who failed: the recipients parse_bounce reports, whatever the report's format and decoration.

The bounces here are written after the MTAs' own templates (Exchange 5.5's "did not reach
the following recipient(s)", Sendmail's and Exim's recipient lists, RFC 3464 fields), with
addresses of our own: they test the rules, not a sample file.
"""

from __future__ import annotations

import pytest

from mailcarrier.domain.addresses import find_mailboxes, mailbox
from mailcarrier.domain.bounce import parse_bounce
from mailcarrier.domain.detectors import BounceMail, detect
from mailcarrier.domain.detectors.mime import MimePart


def _recipients(raw: str) -> list[str]:
    report = parse_bounce(raw.encode())
    return [r.recipient for r in report.records] if report else []


# -- one address, however a report decorates it -----------------------------------------------

@pytest.mark.parametrize("token", [
    "nina@example.org", "<nina@example.org>", "NINA@Example.ORG", "'nina@example.org'",
    '"nina@example.org"', "rfc822;nina@example.org", "RFC822; <nina@example.org>",
    "SMTP=nina@example.org", "smtp:nina@example.org", "dda:SMTP=nina@example.org;",
    "(nina@example.org)", "[nina@example.org]:", "nina@example.org.", "mailto:nina@example.org",
    "<'nina@example.org'>",
])
def test_mailbox_strips_what_reports_put_around_an_address(token: str) -> None:
    assert mailbox(token) == "nina@example.org"


@pytest.mark.parametrize("token", [
    "david...@gmail.com", ".nina@example.org@", "nina@localhost", "nina@example", "nina@-x.example.org",
    "nina@example..org", "", "@example.org", "nina@", "a" * 70 + "@example.org",
])
def test_mailbox_refuses_what_is_not_a_valid_address(token: str) -> None:
    assert mailbox(token) == ""


def test_find_mailboxes_keeps_order_and_drops_repeats_and_invalid_ones() -> None:
    text = "to 'b@example.org', SMTP=a@example.org; then <B@example.org> and x...@example.org"
    assert find_mailboxes(text) == ["b@example.org", "a@example.org"]


# -- formats ------------------------------------------------------------------------------------

DSN_INVALID_RECIPIENT = (
    "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\nTo: news@shop.example\n"
    "Subject: Mail delivery failed\nMIME-Version: 1.0\n"
    'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
    "--b\nContent-Type: text/plain\n\nThe following address(es) failed:\n\n  nina..x@example.org\n\n"
    "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
    "Action: failed\nFinal-Recipient: rfc822;nina..x@example.org\nStatus: 5.0.0\n\n--b--\n")


def test_a_syntactically_invalid_recipient_is_not_reported() -> None:
    assert _recipients(DSN_INVALID_RECIPIENT) == []


# Exchange 5.5 / 2000: the notice quotes the original's To, Cc and Subject, then lists the
# recipients it could not reach; X.400 gateways prefix the SMTP address with "dda:SMTP=".
EXCHANGE_SUMMARY = (
    "From: System Administrator <postmaster@corp.example>\nTo: news-bounces@shop.example\n"
    "Subject: Undeliverable: Spring sale\nMIME-Version: 1.0\n"
    'Content-Type: multipart/mixed; boundary="p"\n\n'
    "--p\nContent-Type: text/plain\n\nYour message\n\n"
    "  To:      team@lists.example\n  Cc:      other@lists.example\n  Subject: Spring sale\n"
    "  Sent:    Fri, 4 Oct 2002 17:10:56 -0400\n\n"
    "did not reach the following recipient(s):\n\n"
    "{line} on Fri, 4 Oct 2002 17:12:28 -0400\n"
    "    The recipient name is not recognized\n"
    "    MSEXCH:IMS:CORP:Site:SRV 0 (000C05A6) Unknown Recipient\n\n"
    "--p\nContent-Type: message/rfc822\n\nMessage removed\n\n--p--\n")


@pytest.mark.parametrize("line", [
    "nina@example.org", "c=US;a= ;p=CORP;o=Site;dda:SMTP=nina@example.org;",
])
def test_exchange_header_summary_is_not_a_failed_recipient(line: str) -> None:
    assert _recipients(EXCHANGE_SUMMARY.format(line=line)) == ["nina@example.org"]


def test_an_html_only_notice_is_read_not_the_returned_message_without_content_type() -> None:
    html = EXCHANGE_SUMMARY.format(line="nina@example.org").replace(
        "Content-Type: text/plain\n\nYour message\n", "Content-Type: text/html\n\n<P>Your message<BR>\n")
    html = html.replace("recipient(s):\n", "recipient(s):<BR>\n")
    assert _recipients(html) == ["nina@example.org"]


# Webmail and gateway notices summarise the original with bullets ("* To: ...").
BULLET_SUMMARY = (
    "From: MAILER-DAEMON <mailer-daemon@gw.example.net>\nTo: news-bounces@shop.example\n"
    "Subject: Undeliverable: sale\nContent-Type: text/plain\n\n"
    "Delivery has failed to these recipients or distribution lists:\n\n"
    "\t* [nina@example.org]: 550 nina@example.org...User account is overquota\n\n\n"
    "Original message details:\n\n\t* From: news@shop.example\n\t* To: someone@example.com\n"
    "\t* Subject: sale\n")


def test_bulleted_original_details_are_not_failed_recipients() -> None:
    assert _recipients(BULLET_SUMMARY) == ["nina@example.org"]


def test_each_of_two_recipients_listed_alone_on_its_line_is_reported() -> None:
    raw = ("From: MAILER-DAEMON@mail.example.cn\nTo: news@shop.example\nSubject: failure notice\n"
           "Content-Type: text/plain\n\nThe message could not be delivered.\n\n"
           "<nina@example.org>:\n\n<omar@example.org>:\n\n--- the attachment is a copy of the message\n")
    assert _recipients(raw) == ["nina@example.org", "omar@example.org"]


def test_a_quoted_address_in_prose_loses_its_quotes() -> None:
    raw = ("From: Mail Delivery System <Mailer-Daemon@mx.example.net>\nTo: news@shop.example\n"
           "Subject: Mail delivery failure\n\nThis message was created automatically by mail delivery\n"
           "software. A message that you sent could not be delivered to all of its recipients.\n\n"
           "The following message, addressed to 'nina@example.org',\n"
           "failed because it has not been collected after 30 days\n")
    assert _recipients(raw) == ["nina@example.org"]


# -- notices without reply codes: gateways, webmail, mail stores ---------------------------------

@pytest.mark.parametrize(("sender", "body"), [
    ("Symantec_AntiVirus_for_SMTP_Gateways@gw.example.net",
     "Your message with Subject: sale\ncould not be delivered to the following recipients:\n\n"
     "nina@example.org\n\nPlease do not resend your original message.\n"),
    ("gateway@corp.example",
     "*****************\nVotre message n'a pas pu etre delivre a\nnina@example.org\n\n"
     "*****************\nYour message could not be delivered to\nnina@example.org\n"),
    ("E500_SMTP_Mail_Service@isp.example.net",
     "------ Failed Recipients ------\n\n<nina@example.org>: Requested action not taken: "
     "mailbox unavailable. [SMTP Error Code 550]\n-------- Returned Mail --------\n"),
    ("postmaster@webmail.example.de",
     "Ihre Nachricht konnte nicht zugestellt werden an:\n\n  nina@example.org\n"),
])
def test_a_gateway_notice_without_reply_code_names_its_recipient(sender: str, body: str) -> None:
    raw = f"From: {sender}\nTo: news-bounces@shop.example\nSubject: Notification\n\n{body}"
    assert _recipients(raw) == ["nina@example.org"]


def test_a_persons_mail_that_mentions_an_address_is_not_a_bounce() -> None:
    raw = ("From: Omar <omar@example.com>\nTo: news@shop.example\nSubject: Re: sale\n\n"
           "Please send the offer to my colleague nina@example.org as well, thanks.\n")
    assert parse_bounce(raw.encode()) is None


SIEVE_REJECT = (
    "From: Mail Delivery Subsystem <admin@mail.example.org>\nTo: <news@shop.example>\n"
    "Subject: Automatically rejected mail\nMIME-Version: 1.0\n"
    "Content-Type: multipart/report; report-type=disposition-notification; boundary=\"m\"\n\n"
    "--m\nContent-Type: text/plain; charset=utf-8\n\n"
    "Your message to <nina@example.org> was automatically rejected:\nQuota exceeded\n"
    "--m\nContent-Type: message/disposition-notification\n\n"
    "Reporting-UA: mail; Dovecot Mail Delivery Agent\nFinal-Recipient: rfc822; nina@example.org\n"
    "Original-Message-ID: <1@shop.example>\nDisposition: automatic-action/MDN-sent-automatically; {d}\n\n"
    "--m--\n")


def test_a_sieve_reject_mdn_is_a_bounce_of_its_final_recipient() -> None:
    report = parse_bounce(SIEVE_REJECT.format(d="deleted").encode())
    assert report is not None and [r.recipient for r in report.records] == ["nina@example.org"]
    assert report.records[0].action == "failed"


def test_a_read_receipt_is_not_a_bounce() -> None:
    raw = SIEVE_REJECT.format(d="displayed").replace("was automatically rejected:\nQuota exceeded",
                                                     "was displayed")
    assert parse_bounce(raw.replace("Mail Delivery Subsystem", "Nina").encode()) is None


def test_local_names_take_the_reporting_domain_and_the_sender_is_not_a_recipient() -> None:
    raw = ("From: \"Mail Delivery Subsystem\" <MAILER-DAEMON@Mail.Example.net>\n"
           "To: <news-bounces@shop.example>\nSubject: Mail Delivery Problem\n\n"
           "Your mail to the following recipients could not be delivered because\n"
           "they are not accepting mail from news@shop.example:\n\tnina\n\tomar.k\n")
    assert _recipients(raw) == ["nina@mail.example.net", "omar.k@mail.example.net"]


def test_of_addresses_named_in_prose_the_envelope_recipient_is_the_failed_one() -> None:
    raw = ("From: postmaster@corp.example\nTo: news-bounces@shop.example\nSubject: Returned mail\n\n"
           "The standard form of address here is first.last@corp.example. The address to which\n"
           "your message was addressed, nina@corp.example, did not exactly match one of ours.\n\n"
           "Directory entries that may help: Nina Rossi   n.rossi@corp.example\n\n"
           "Original message as received is as follows:\n"
           ">Received: from mx.shop.example by mx.corp.example with ESMTP id 1 for <nina@corp.example>;"
           " Sun, 27 May 2001 14:21:25 -0700\n>Subject: sale\n")
    assert _recipients(raw) == ["nina@corp.example"]


# -- feedback reports are complaints, never auto-replies -----------------------------------------

ARF_HEAD = ("From: Feedback Loop <fbl@isp.example.net>\nTo: abuse@shop.example\n"
            "Subject: Automatic reply: complaint about message from 192.0.2.1\n"
            "Auto-Submitted: auto-replied\nMIME-Version: 1.0\n")
ARF_FIELDS = ("Feedback-Type: abuse\nUser-Agent: ISP-FBL/1.0\nVersion: 1\n"
              "Original-Mail-From: <news-bounces@shop.example>\nOriginal-Rcpt-To: <nina@example.org>\n")
ORIGINAL = "From: news@shop.example\nTo: nina@example.org\nMessage-ID: <m1@shop.example>\nSubject: sale\n\nhi\n"


@pytest.mark.parametrize("raw", [
    # RFC 5965, the report part labelled as the RFC says
    ARF_HEAD + 'Content-Type: multipart/report; report-type=feedback-report; boundary="f"\n\n'
    "--f\nContent-Type: text/plain\n\nThis is an abuse report.\n"
    f"--f\nContent-Type: message/feedback-report\n\n{ARF_FIELDS}\n"
    f"--f\nContent-Type: message/rfc822\n\n{ORIGINAL}--f--\n",
    # the same report with the report part labelled text/plain
    ARF_HEAD + 'Content-Type: multipart/report; report-type=feedback-report; boundary="f"\n\n'
    "--f\nContent-Type: text/plain\n\nThis is an abuse report.\n"
    f"--f\nContent-Type: text/plain\n\n{ARF_FIELDS}\n"
    f"--f\nContent-Type: message/rfc822\n\n{ORIGINAL}--f--\n",
    # the fields written into a plain text mail
    ARF_HEAD + f"Content-Type: text/plain\n\nThis is an abuse report.\n\n{ARF_FIELDS}\n",
    # Microsoft JMRP: no report part, the returned message names the complaining recipient
    ARF_HEAD + 'Content-Type: multipart/mixed; boundary="f"\n\n'
    "--f\nContent-Type: text/plain\n\nThis is a complaint.\n"
    "--f\nContent-Type: message/rfc822\n\nX-HmXmrOriginalRecipient: <nina@example.org>\n"
    f"{ORIGINAL}--f--\n",
])
def test_a_feedback_report_is_a_complaint_not_an_autoreply(raw: str) -> None:
    report = parse_bounce(raw.encode())
    assert report is not None and report.kind == "feedback" and report.feedback_type == "abuse"
    assert [r.recipient for r in report.records] == ["nina@example.org"]


# -- list managers ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("sender", "body", "recipient", "action"), [
    ('"L-Soft list server at LISTS.EXAMPLE.ORG (1.8e)" <LISTSERV@LISTS.EXAMPLE.ORG>',
     "You are not authorized to send mail to the SALE-L list from your\nnews@shop.example account.\n",
     "sale-l@lists.example.org", "failed"),
    ("sale-list-owner@lists.example.org",
     "Your mail to 'Sale-list' with the subject\n\n    sale\n\nIs being held until the list moderator "
     "can review it for approval.\n\nThe reason it is being held:\n\n    Post by non-member\n",
     "sale-list@lists.example.org", "delayed"),
    ("cats-admin@example.org",
     "You are not a member of this mailing list <cats@example.org>.\n\nIf you know the general guide "
     "of this list, please send mail with\nthe mail body\n\n\tguide\n\nto the address\n\n"
     "\tcats-ctl@example.org\n",
     "cats@example.org", "failed"),
])
def test_a_list_managers_refusal_or_hold_names_the_list(sender: str, body: str, recipient: str,
                                                       action: str) -> None:
    raw = f"From: {sender}\nTo: news@shop.example\nSubject: Your message\n\n{body}"
    report = parse_bounce(raw.encode())
    assert report is not None
    assert [(r.recipient, r.action) for r in report.records] == [(recipient, action)]


def test_a_bounce_of_a_list_notice_is_read_as_the_bounce_it_is() -> None:
    raw = ("From: Postmaster@corp.example\nTo: cats-bounces@lists.example.org\n"
           "Subject: DELIVERY FAILURE: User nina (nina@corp.example) not listed\n"
           "X-BeenThere: cats@lists.example.org\nX-Mailman-Version: 2.1.5\n"
           "List-Id: Cats <cats.lists.example.org>\n\nYour message\n\n"
           "  Subject: Your message to Cats awaits moderator approval\n\nwas not delivered to:\n\n"
           "  nina@corp.example\n\nbecause:\n\n  User nina (nina@corp.example) not listed in Domino Directory\n")
    assert _recipients(raw) == ["nina@corp.example"]


OLD_SENDMAIL = ("From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.org>\nTo: {bounce}\n"
                "Subject: Returned mail: User unknown\nContent-Type: text/plain\n\n"
                "   ----- Transcript of session follows -----\n550 User unknown\n\n"
                "   ----- Unsent message follows -----\n"
                "Return-Path: <{bounce}>\nFrom: {sender}\nTo: {to}\n{extra}Subject: hello\n\nhi\n")


def test_a_transcript_naming_no_one_falls_back_to_the_returned_messages_single_recipient() -> None:
    raw = OLD_SENDMAIL.format(bounce="news-bounces@shop.example", sender="news@shop.example",
                              to="nina@example.org", extra="")
    assert _recipients(raw) == ["nina@example.org"]


def test_a_lists_address_in_the_returned_message_is_never_the_failed_recipient() -> None:
    raw = OLD_SENDMAIL.format(bounce="cats-bounces@lists.example.org", sender="omar@example.com",
                              to="cats@lists.example.org",
                              extra="List-Post: <mailto:cats@lists.example.org>\n")
    assert _recipients(raw) == []


# -- delay warnings are not failures -----------------------------------------------------------------

@pytest.mark.parametrize(("subject", "body", "action"), [
    ("Warning: could not send message for past 4 hours",
     "    **      THIS IS A WARNING MESSAGE ONLY      **\n\n   ----- Transcript of session follows -----\n"
     "<nina@example.org>... Deferred: Connection timed out with mx.example.org.\n"
     "Warning: message still undelivered after 4 hours\n", "delayed"),
    ("Delayed Mail (still being retried)",
     "This is the mail system at host mx.shop.example.\n\n# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO "
     "RESEND YOUR MESSAGE. #\n\n<nina@example.org>: connect to mx.example.org[192.0.2.1]:25: "
     "Connection timed out\n", "delayed"),
    ("Warning: message 1abc-000 delayed 24 hours",
     "A message that you sent has not yet been delivered to one or more of its\nrecipients after more "
     "than 24 hours on the queue on mx.shop.example.\n\n  nina@example.org\n    Delay reason: 451 4.7.1 "
     "Greylisted\n", "delayed"),
    ("Undelivered Mail Returned to Sender",
     "This is the mail system at host mx.shop.example.\n\n<nina@example.org>: host mx.example.org said: "
     "550 5.1.1 User unknown (in reply to RCPT TO command)\n", "failed"),
    ("Mail delivery failed",
     "A message that you sent could not be delivered. This is a permanent error; I've given up, "
     "it will not be retried.\n\n  nina@example.org\n    retry timeout exceeded\n", "failed"),
])
def test_a_delay_warning_reports_the_recipient_as_delayed(subject: str, body: str, action: str) -> None:
    raw = (f"From: Mail Delivery System <MAILER-DAEMON@mx.shop.example>\nTo: news@shop.example\n"
           f"Subject: {subject}\n\n{body}")
    report = parse_bounce(raw.encode())
    assert report is not None
    assert [(r.recipient, r.action) for r in report.records] == [("nina@example.org", action)]


def test_internationalised_addresses_are_read_and_their_domain_is_stored_as_idna() -> None:
    assert mailbox("<Ñina@Exämple.de>") == "ñina@xn--exmple-cua.de"
    raw = ("From: MAILER-DAEMON@mx.example.net\nTo: news@shop.example\nSubject: Undelivered Mail\n"
           "MIME-Version: 1.0\n"
           'Content-Type: multipart/report; report-type=delivery-status; boundary="g"\n\n'
           "--g\nContent-Type: text/plain; charset=utf-8\n\nDelivery failed.\n"
           "--g\nContent-Type: message/global-delivery-status; charset=utf-8\n\n"
           "Reporting-MTA: dns; mx.example.net\n\nFinal-Recipient: utf-8; 用户@例子.广告\n"
           "Action: failed\nStatus: 5.1.1\n\n--g--\n")
    assert _recipients(raw) == [mailbox("用户@例子.广告")] != [""]


# -- the reporting host, a fact for the classifier ----------------------------------------------------

def test_detectors_say_which_host_wrote_the_report() -> None:
    def reporter(raw: str) -> list[str | None]:
        found = detect(BounceMail(MimePart(raw.encode())))
        assert found is not None
        return [f.reporting_mta for f in found[1]]

    postfix = ("From: MAILER-DAEMON@relay.shop.example (Mail Delivery System)\nTo: news@shop.example\n"
               "Subject: Undelivered Mail Returned to Sender\n\nThis is the mail system at host "
               "mx1.shop.example.\n\n<nina@example.org>: host mx.example.org said: 550 5.1.1 User unknown\n")
    assert reporter(postfix) == ["mx1.shop.example"]
    assert reporter(postfix.replace("This is the mail system at host mx1.shop.example.", "")) == [
        "relay.shop.example"]
    assert reporter(DSN_INVALID_RECIPIENT.replace("nina..x", "nina")) == ["mx.example.net"]


def test_a_persons_reply_saying_a_mail_could_not_be_delivered_is_not_a_bounce() -> None:
    raw = ("From: Omar <omar@example.com>\nTo: news@shop.example\nSubject: Re: sale\n"
           "In-Reply-To: <m1@shop.example>\n\nHi, your offer could not be delivered to my colleague\n"
           "nina@example.org, her mailbox is new. Could you resend it?\n")
    assert parse_bounce(raw.encode()) is None


# -- the address the sender used, beside a rewritten recipient ----------------------------------------

def test_an_aliased_recipient_keeps_the_address_the_sender_used() -> None:
    dsn = DSN_INVALID_RECIPIENT.replace("Final-Recipient: rfc822;nina..x@example.org",
                                        "Original-Recipient: rfc822;nina@example.org\n"
                                        "Final-Recipient: rfc822;n.rossi@mail.example.org")
    report = parse_bounce(dsn.encode())
    assert report is not None
    assert [(r.recipient, r.original_recipient) for r in report.records] == [
        ("n.rossi@mail.example.org", "nina@example.org")]
    prose = ("From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\nTo: news@shop.example\n"
             "Subject: Undelivered Mail Returned to Sender\n\nThis is the mail system at host mx.example.org.\n\n"
             "<n.rossi@mail.example.org> (expanded from <nina@example.org>): host mail.example.org said:\n"
             "    550 5.1.1 User unknown (in reply to RCPT TO command)\n")
    report = parse_bounce(prose.encode())
    assert report is not None
    assert [(r.recipient, r.original_recipient) for r in report.records] == [
        ("n.rossi@mail.example.org", "nina@example.org")]
    plain = parse_bounce(DSN_INVALID_RECIPIENT.replace("nina..x", "nina").encode())
    assert plain is not None and plain.records[0].original_recipient is None
