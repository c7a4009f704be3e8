import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailcarrier.domain import (
    Category,
    Reason,
    SMTPStage,
    classify,
    classify_internal,
    classify_reply,
    parse_reply,
)
from mailcarrier.domain.classify import normalise_text
from mailcarrier.domain.rules_engine import Scope

PROVIDER_REPLIES = [
    # (stage, raw reply, reason, category, retry)
    ("rcpt", "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n550 5.1.1 double-checking the recipient's email address", Reason.USERUNKNOWN, 2, False),
    ("rcpt", "452-4.2.2 The email account that you tried to reach is over quota. Please direct\r\n452 4.2.2 the recipient to https://support.google.com/mail/?p=OverQuotaTemp", Reason.MAILBOXFULL, 3, True),
    ("eod", "550-5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail requires all senders to authenticate", Reason.AUTHFAILURE, 1, False),
    ("eod", "421-4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP address.", Reason.BADREPUTATION, 3, True),
    ("eod", "550 5.7.515 Access denied, sending domain example.com does not meet the required authentication level.", Reason.AUTHFAILURE, 1, False),
    ("rcpt", "550 5.7.1 Unfortunately, messages from [192.0.2.10] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150).", Reason.BLOCKED, 1, False),
    ("rcpt", "451 4.7.650 The mail server [192.0.2.10] has been temporarily rate limited due to IP reputation.", Reason.BADREPUTATION, 3, True),
    ("rcpt", "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)", Reason.USERUNKNOWN, 2, False),
    ("rcpt", "421 4.7.0 [TSS04] Messages from 192.0.2.10 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1", Reason.SPEEDING, 3, True),
    ("mail", "421 4.7.0 [TSS04] Messages from 198.51.100.7 temporarily deferred due to unexpected volume or user complaints - 4.16.56.1; see https://postmaster.yahooinc.com/error-codes", Reason.REJECTED, 3, True),
    ("rcpt", "421 4.7.0 [TSS09] All messages from 192.0.2.10 will be permanently deferred; Retrying will NOT succeed.", Reason.BLOCKED, 3, True),
    ("rcpt", "554 delivery error: dd This user doesn't have a yahoo.com account (someone@yahoo.com) [0]", Reason.USERUNKNOWN, 2, False),
    ("rcpt", "550 5.1.1 <someone@icloud.com>: user does not exist", Reason.USERUNKNOWN, 2, False),
    ("connect", "554 5.7.1 [CS01] Message rejected due to local policy. Please visit https://support.apple.com/en-us/HT204137", Reason.BLOCKED, 1, False),
    ("connect", "554 Blocked - see https://ipcheck.proofpoint.com/?ip=192.0.2.10", Reason.BLOCKED, 1, False),
    ("rcpt", "550 Local CT IP Reputation - (#5.7.1) https://community.mimecast.com/docs/DOC-1369#550", Reason.BADREPUTATION, 1, False),
    ("connect", "554 Service unavailable; Client host [192.0.2.10] blocked using Barracuda Reputation; http://www.barracudanetworks.com/reputation/?pr=1&ip=192.0.2.10", Reason.BLOCKED, 1, False),
    ("rcpt", "554 5.7.1 Service unavailable; Client host [192.0.2.10] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.10", Reason.BLOCKED, 1, False),
    ("rcpt", "450 4.2.0 <a@example.org>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.org.html", Reason.BLOCKED, 3, True),
    ("rcpt", "451 Temporary local problem - please try later", Reason.SYSTEMERROR, 4, True),
    ("eod", "550 5.7.1 Mail rejete. Mail rejected. OFR003_506 [506] - contact postmaster", Reason.SPAMDETECTED, 1, False),
    ("connect", "421 mwinf5c41 ME Service refuse. Veuillez essayer plus tard. Service refused, please try later. OFR004_505 [505]", Reason.SYSTEMERROR, 4, True),
]


@pytest.mark.parametrize(("stage", "raw", "reason", "category", "retry"), PROVIDER_REPLIES)
def test_provider_texts(stage: str, raw: str, reason: Reason, category: int, retry: bool) -> None:
    result = classify_reply(parse_reply(raw, SMTPStage(stage)))
    assert (result.reason, int(result.category), result.retry) == (reason, category, retry), result.rule


def test_every_classification_names_its_rule() -> None:
    result = classify("550 5.1.1 User unknown", code=550, stage=SMTPStage.RCPT)
    assert result.rule and not result.rule.startswith("builtin")
    assert result.hard_bounce and result.category is Category.INVALID_ADDRESS


def test_too_many_recipients_is_temporary_after_rcpt_only() -> None:
    rcpt = classify_reply(parse_reply("452 4.5.3 Too many recipients", SMTPStage.RCPT))
    assert rcpt.retry and not rcpt.hard_bounce and rcpt.reason is Reason.TOOMANYCONN
    five = classify_reply(parse_reply("552 5.5.3 Too many recipients", SMTPStage.RCPT))
    assert five.retry, "552 too many recipients after RCPT is temporary per RFC 5321 4.5.3.1.10"


def test_5xx_at_connect_is_a_block_not_a_bad_address() -> None:
    result = classify_reply(parse_reply("554 mx.example.net ESMTP not accepting messages", SMTPStage.CONNECT))
    assert result.reason is Reason.BLOCKED and not result.hard_bounce
    assert result.scope is Scope.DOMAIN
    same_at_rcpt = classify_reply(parse_reply("550 Requested action not taken: mailbox unavailable", SMTPStage.RCPT))
    assert same_at_rcpt.reason is Reason.USERUNKNOWN


def test_permanence_follows_the_code() -> None:
    assert classify("mailbox full", code=452).retry
    assert not classify("mailbox full", code=552, stage=SMTPStage.EOD).retry
    assert classify("mailbox full", status="5.2.2").permanent
    assert not classify("mailbox full").permanent
    assert classify("mailbox full", permanent_hint=True).permanent


def test_2xx_is_delivered() -> None:
    assert classify_reply(parse_reply("250 2.0.0 OK queued as 4ABC", SMTPStage.EOD)).reason is Reason.DELIVERED


@pytest.mark.parametrize(("code", "reason", "retry", "unknown"), [
    (146, Reason.NETWORKERROR, True, False),
    (147, Reason.NETWORKERROR, False, True),
    (160, Reason.NETWORKERROR, True, False),
    (170, Reason.HOSTUNKNOWN, False, False),
    (171, Reason.NETWORKERROR, True, False),
    (172, Reason.NOTACCEPT, False, False),
])
def test_internal_codes(code: int, reason: Reason, retry: bool, unknown: bool) -> None:
    result = classify_internal(code)
    assert (result.reason, result.retry, result.outcome_unknown, result.internal_code) == (reason, retry, unknown, code)
    assert result.rule == f"internal:{code}"


def test_nxdomain_is_hard_but_servfail_is_not() -> None:
    assert classify_internal(170).hard_bounce
    assert not classify_internal(171).hard_bounce


@given(st.text(max_size=300), st.one_of(st.none(), st.integers(200, 599)), st.sampled_from(list(SMTPStage)))
def test_classify_is_total(text: str, code: int | None, stage: SMTPStage) -> None:
    result = classify(text, code=code, stage=stage)
    assert result.reason in Reason
    assert result.rule
    if code is not None and 400 <= code < 500:
        assert result.retry


@given(st.from_regex(r"[a-z0-9._+-]{1,20}@[a-z0-9-]{1,12}(\.[a-z]{2,6}){1,2}", fullmatch=True),
       st.tuples(*[st.integers(0, 255)] * 4))
def test_normalise_text_masks_any_address_and_ip(address: str, ip: tuple[int, int, int, int]) -> None:
    dotted = ".".join(map(str, ip))
    text = f"550 5.1.1 <{address}>: rejected from [{dotted}] for {address}"
    masked = normalise_text(text)
    assert address not in masked and dotted not in masked
    assert masked == normalise_text(text.replace(address, "someone.else@example.org").replace(dotted, "10.0.0.1"))
