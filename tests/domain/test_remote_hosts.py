"""Provider readings keyed by the host that answered (Remote-MTA)."""

from __future__ import annotations

import pytest

from mailcarrier.domain.bounce import parse_bounce
from mailcarrier.domain.classify import Evidence, classify_evidence
from mailcarrier.domain.errors import RuleFileError
from mailcarrier.domain.remote_hosts import host_of
from mailcarrier.domain.rule_files import validate_provider_text
from mailcarrier.domain.smtp_reply import SMTPStage
from mailcarrier.domain.vocabulary import Reason


def bounce_reason(evidence: Evidence) -> tuple[Reason, str]:
    """The reason and deciding rule of the one classifier, for evidence read from a bounce."""
    result = classify_evidence(evidence)
    return result.reason, result.rule


def _reason(text: str, host: str, status: str | None = "5.0.0",
            command: SMTPStage = SMTPStage.UNKNOWN) -> tuple[Reason, str]:
    return bounce_reason(Evidence(text, status, command, "smtp", remote_host=host))


@pytest.mark.parametrize(("remote", "host"), [
    ("dns; mx3.example.jp (TCP|192.0.2.1|25) (mail)", "mx3.example.jp"),
    ("DNS; MX.Example.COM.", "mx.example.com"),
    ("mx.example.net", "mx.example.net"),
    ("dns;[192.0.2.8]", "192.0.2.8"),
    ("", ""),
    (None, ""),
])
def test_host_of_reads_remote_mta_values(remote: str | None, host: str) -> None:
    assert host_of(remote) == host


def test_kddi_tells_a_missing_mailbox_from_a_recipient_filter() -> None:
    missing = _reason("550 <taro.yamada@au.example>: User unknown", "mx2.ezweb.ne.jp")
    assert missing == (Reason.USERUNKNOWN, "kddi.user-unknown")
    refused = _reason("550 : User unknown", "mx2.au.com")
    assert refused == (Reason.FILTERED, "kddi.refused-by-recipient-filter")


def test_docomo_unknown_user_outside_rcpt_is_the_sender_refused() -> None:
    assert _reason("550 Unknown user hanako@docomo.example", "mfsmax.docomo.ne.jp")[0] is Reason.REJECTED
    at_rcpt = _reason("550 Unknown user hanako@docomo.example", "mfsmax.docomo.ne.jp",
                      command=SMTPStage.RCPT)
    assert at_rcpt[0] is Reason.USERUNKNOWN


def test_other_hosts_and_specific_statuses_are_not_affected() -> None:
    # the same words from another server follow the general stage rule
    assert _reason("550 Unknown user hanako@example.org", "mx.example.org")[0] is Reason.FILTERED
    # a status that names a reason still decides
    assert _reason("550 Unknown user hanako@docomo.example", "mfsmax.docomo.ne.jp",
                   status="5.2.0")[0] is Reason.FILTERED
    # a host that only ends like the provider's domain is not the provider's
    assert _reason("550 : User unknown", "mx.notau.com")[1] != "kddi.refused-by-recipient-filter"
    assert _reason("550 <a@b.example>: User unknown", "mx.fakeezweb.ne.jp.example")[1] != "kddi.user-unknown"


def test_a_whole_dsn_from_kddi_reads_user_unknown() -> None:
    raw = (b"From: MAILER-DAEMON@relay.example.org\r\nTo: sender@example.org\r\n"
           b"Subject: Delivery Notification: Delivery has failed\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n"
           b"--b1\r\nContent-Type: text/plain\r\n\r\nYour message cannot be delivered.\r\n\r\n"
           b"--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.example.org\r\n\r\n"
           b"Final-Recipient: rfc822; taro@au.example\r\nAction: failed\r\nStatus: 5.0.0\r\n"
           b"Remote-MTA: dns; lsean.ezweb.ne.jp (TCP|192.0.2.1|25)\r\n"
           b"Diagnostic-Code: smtp; 550 <taro@au.example>: User unknown\r\n\r\n--b1--\r\n")
    report = parse_bounce(raw)
    assert report is not None
    [record] = report.records
    assert record.reason is Reason.USERUNKNOWN and record.hard_bounce
    assert record.rule == "kddi.user-unknown"


_HEAD = "[provider]\nid = 'x'\nname = 'X'\nmx = ['x.example']\n"


@pytest.mark.parametrize("bad", [
    "[provider]\nid = 'x'\nname = 'X'\n[[host_rule]]\nid = 'r'\nreason = 'filtered'\nsource = 's'\n",
    _HEAD + "[[host_rule]]\nid = 'r'\nreason = 'nonsense'\nsource = 's'\n",
    _HEAD + "[[host_rule]]\nid = 'r'\nreason = 'filtered'\ntext = ['(']\nsource = 's'\n",
    _HEAD + "[[host_rule]]\nid = 'r'\nreason = 'filtered'\n",
    _HEAD + "host_rule = 3\n",
    _HEAD + "host_rule = [1, 2]\n",
    "not toml [",
])
def test_a_broken_host_reading_is_a_rule_file_error(bad: str) -> None:
    with pytest.raises(RuleFileError):
        validate_provider_text(bad, "test.toml")
