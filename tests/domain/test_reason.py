"""How the one classifier decides a reason from status, command and wording (bounce evidence)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailcarrier.domain.classify import Evidence, classify_evidence, classify_reply
from mailcarrier.domain.reason import reason_table
from mailcarrier.domain.smtp_reply import SMTPStage, parse_reply
from mailcarrier.domain.vocabulary import Reason


def bounce_reason(evidence: Evidence) -> tuple[Reason, str]:
    """The reason and deciding rule of the one classifier, for evidence read from a bounce."""
    result = classify_evidence(evidence)
    return result.reason, result.rule


def _reason(text: str, status: str | None = None, command: SMTPStage = SMTPStage.UNKNOWN,
            dtype: str = "smtp", action: str = "failed", hint: Reason | None = None) -> Reason:
    return bounce_reason(Evidence(text, status, command, dtype, action, hint))[0]


def test_user_unknown_depends_on_the_command_it_answered() -> None:
    text = "550 Unknown user ann@example.org"
    assert _reason(text, command=SMTPStage.RCPT) is Reason.USERUNKNOWN
    assert _reason(text, command=SMTPStage.EOD) is Reason.FILTERED
    # A 5.1.1 status says "no such mailbox" whatever the stage.
    assert _reason("550 5.1.1 <ann@example.org>... User unknown", "5.1.1") is Reason.USERUNKNOWN


def test_a_5_1_1_that_words_a_full_mailbox_is_a_full_mailbox() -> None:
    assert _reason("550 5.1.1 mailbox full", "5.1.1") is Reason.MAILBOXFULL


def test_sender_refusal_after_mail_from_is_rejected() -> None:
    assert _reason("553 sender address rejected: domain not found", command=SMTPStage.MAIL) is Reason.REJECTED


def test_temporary_dns_failure_is_not_a_missing_domain() -> None:
    assert _reason("Domain name not found: example.invalid", "4.4.3") is not Reason.HOSTUNKNOWN
    assert _reason("Domain name not found: example.invalid", "5.1.2") is Reason.HOSTUNKNOWN


@pytest.mark.parametrize(("text", "reason"), [
    ("retry timeout exceeded", Reason.EXPIRED),
    ("Delivery time expired", Reason.EXPIRED),
    ("452 4.3.2 Connection rate limit exceeded.", Reason.TOOMANYCONN),
    ("554 5.7.1 Message content rejected, UBE", Reason.SPAMDETECTED),
    ("550 Mailbox is frozen.", Reason.SUSPEND),
    ("500 Remote server does not support TLS", Reason.FAILEDSTARTTLS),
    ("No mx record found for domain=example.org", Reason.NOTACCEPT),
    ("554 5.4.6 Too many hops", Reason.NETWORKERROR),
])
def test_wording_decides_when_the_status_says_little(text: str, reason: Reason) -> None:
    assert _reason(text, "5.0.0" if reason is not Reason.TOOMANYCONN else "4.3.2") is reason


def test_a_full_mailbox_outweighs_a_weak_expiry_hint() -> None:
    assert _reason("452 4.2.2 Mailbox full", "4.2.2", hint=Reason.EXPIRED) is Reason.MAILBOXFULL
    assert _reason("connection closed", hint=Reason.EXPIRED) is Reason.EXPIRED
    assert _reason("anything", hint=Reason.REJECTED) is Reason.REJECTED


def test_local_program_failure_is_a_mailer_error() -> None:
    assert _reason("75", "4.5.0", dtype="x-unix") is Reason.MAILERERROR


def test_delivered_status_and_unexplained_text() -> None:
    assert _reason("250 2.6.0 OK", "2.6.0") is Reason.DELIVERED
    assert _reason("something odd happened", None, dtype="") is Reason.ONHOLD
    assert _reason("", None, dtype="") is Reason.UNDEFINED
    assert _reason("", None, dtype="", action="delayed") is Reason.EXPIRED


def test_every_status_in_the_table_names_a_known_reason() -> None:
    table = reason_table()
    assert table.status_reason("5.2.2") is Reason.MAILBOXFULL
    assert table.status_reason("4.2.2") is Reason.MAILBOXFULL  # the other class, same meaning
    assert all(isinstance(r, Reason) for r in table.status.values())


@given(st.text(max_size=400), st.one_of(st.none(), st.from_regex(r"[245]\.\d{1,3}\.\d{1,3}", fullmatch=True)),
       st.sampled_from(list(SMTPStage)), st.sampled_from(["smtp", "", "x-unix", "x-postfix"]),
       st.sampled_from(["failed", "delayed", "delivered"]), st.one_of(st.none(), st.sampled_from(list(Reason))))
def test_any_evidence_gives_a_reason_and_a_rule(text: str, status: str | None, command: SMTPStage,
                                                dtype: str, action: str, hint: Reason | None) -> None:
    reason, rule = bounce_reason(Evidence(text, status, command, dtype, action, hint))
    assert isinstance(reason, Reason) and bool(rule)


def test_a_permanent_refusal_at_connect_blocks_the_sending_host() -> None:
    assert _reason("554 go away", command=SMTPStage.CONNECT) is Reason.BLOCKED
    assert _reason("554 go away", command=SMTPStage.UNKNOWN) is Reason.ONHOLD


def test_provider_wording_explains_what_the_generic_tables_do_not() -> None:
    reason, rule = bounce_reason(Evidence(
        "[TS03] All messages from 192.0.2.1 will be permanently deferred; Retrying will NOT succeed.",
        None, SMTPStage.UNKNOWN, ""))
    assert (reason, rule) == (Reason.BLOCKED, "yahoo.ts01-ts03")


def test_a_rate_limit_worded_under_a_filtered_status_is_speeding() -> None:
    # Gmail answers a per-recipient receiving rate with 5.2.1, the "mailbox refuses" code.
    text = ("550-5.2.1 The user you are trying to contact is receiving mail at a rate that prevents "
            "additional messages from being delivered. Please resend your message later.")
    assert _reason(text, "5.2.1") is Reason.SPEEDING
    assert _reason("550 5.2.1 Mailbox refuses mail from your domain", "5.2.1") is Reason.FILTERED


def test_5_7_9_is_a_weak_authentication_mechanism() -> None:
    # RFC 4954: 5.7.9 "Authentication mechanism is too weak"; classify maps it the same way.
    assert _reason("535 5.7.9 Authentication mechanism is too weak", "5.7.9") is Reason.SECURITYERROR


@pytest.mark.parametrize(("text", "status", "reason", "rule"), [
    ("550 5.7.1 Mail rejete. Mail rejected. OFR003_506 [506] - contact postmaster", "5.7.1",
     Reason.SPAMDETECTED, "orange.ofr-506"),
    ("421 4.2.0 Service refuse. Veuillez essayer plus tard. Service refused, please try later. "
     "OFR004_505 [505]", "4.2.0", Reason.SYSTEMERROR, "orange.ofr-505"),
    # Yahoo's "dd" template says the mailbox does not exist even where the stage is unknown
    # (a bounce that does not say which command was answered would otherwise be "filtered").
    ("554 delivery error: dd This user doesn't have a aol.com account (pat@aol.com) [-5] - "
     "mta4421.aol.mail.gq1.yahoo.com", "5.0.0", Reason.USERUNKNOWN, "yahoo.user-unknown"),
])
def test_a_provider_error_code_outranks_the_status_it_comes_with(
        text: str, status: str, reason: Reason, rule: str) -> None:
    assert bounce_reason(Evidence(text, status, SMTPStage.UNKNOWN, "smtp")) == (reason, rule)


def test_yahoo_tss04_refuses_the_sender_at_mail_from_and_is_a_volume_deferral_elsewhere() -> None:
    text = ("421 4.7.0 [TSS04] Messages from 198.51.100.7 temporarily deferred due to unexpected "
            "volume or user complaints - 4.16.56.1; see https://postmaster.yahooinc.com/error-codes")
    assert _reason(text, "4.7.0", command=SMTPStage.MAIL) is Reason.REJECTED
    assert _reason(text, "4.7.0", command=SMTPStage.RCPT) is Reason.SPEEDING
    assert _reason(text, "4.7.0") is Reason.SPEEDING


def test_an_unexplained_permanent_refusal_after_data_is_filtered() -> None:
    assert _reason("554 5.7.0 Message refused", "5.7.0", command=SMTPStage.EOD) is Reason.FILTERED
    # Wording still decides, a temporary refusal is not a filter, nor is the same before DATA.
    assert _reason("554 5.7.0 Message content rejected as spam", "5.7.0",
                   command=SMTPStage.EOD) is Reason.SPAMDETECTED
    assert _reason("451 4.7.0 Message refused", "4.7.0", command=SMTPStage.EOD) is not Reason.FILTERED
    assert _reason("554 5.7.0 Message refused", "5.7.0", command=SMTPStage.RCPT) is not Reason.FILTERED


def test_x_3_0_names_no_reason_so_the_wording_decides() -> None:
    # RFC 3463 X.3.0 is "other or undefined mail system status".
    assert _reason("451 4.3.0 Your message could not be processed, please try again later",
                   "4.3.0") is Reason.ONHOLD
    assert _reason("451 4.3.0 Internal error, please try again later", "4.3.0") is Reason.SYSTEMERROR


@pytest.mark.parametrize(("raw", "stage"), [
    ("421 4.7.0 [TSS04] Messages from 198.51.100.7 temporarily deferred due to unexpected volume "
     "or user complaints - 4.16.56.1", SMTPStage.MAIL),
    ("421 4.7.0 [TSS04] Messages from 198.51.100.7 temporarily deferred due to unexpected volume "
     "or user complaints - 4.16.56.1", SMTPStage.RCPT),
    ("550 5.2.0 Mail rejete. Mail rejected. OFR004_506 [506]", SMTPStage.EOD),
    ("421 4.2.0 Service refuse. Veuillez essayer plus tard. Service refused, please try later. "
     "OFR005_505 [505]", SMTPStage.RCPT),
    ("554 delivery error: dd This user doesn't have a ymail.com account (pat@ymail.com) [0]", SMTPStage.RCPT),
    ("550-5.2.1 The user you are trying to contact is receiving mail at a rate that prevents "
     "additional messages from being delivered.", SMTPStage.RCPT),
    ("535 5.7.9 Authentication mechanism is too weak", SMTPStage.UNKNOWN),
])
def test_a_reply_and_the_bounce_quoting_it_give_the_same_reason(raw: str, stage: SMTPStage) -> None:
    reply = parse_reply(raw, stage)
    live = classify_reply(reply).reason
    status = str(reply.enhanced) if reply.enhanced else None
    assert _reason(raw, status, command=stage) is live


def test_wording_families_are_lowercase_so_they_match_without_case_folding() -> None:
    # Text is lowercased once; a capital in a pattern (\S, \W ...) would make the whole
    # family case-insensitive and several times slower.
    table = reason_table()
    assert not [s for sources in table.sources.values() for s in sources if s != s.lower()]
