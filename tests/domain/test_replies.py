"""Replies worded as real MTAs and providers word them get the reason their wording says."""

from __future__ import annotations

import pytest

from mailcarrier.domain import SMTPStage, parse_reply
from mailcarrier.domain.classify import classify_evidence, classify_reply
from tests.domain.reply_cases import ReplyCase, reply_cases

CASES = reply_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.reply[:40] for c in CASES])
def test_reply_reads_as_its_wording_says(case: ReplyCase) -> None:
    result = classify_evidence(case.evidence())
    assert result.reason is case.reason, (result.rule, case.source)


STATED = [c for c in CASES if c.category is not None]


@pytest.mark.parametrize("case", STATED, ids=[c.reply[:40] for c in STATED])
def test_reply_gets_its_category_and_bounce_type(case: ReplyCase) -> None:
    result = classify_evidence(case.evidence())
    assert (result.category, result.bounce_type) == (case.category, case.bounce_type), (result.rule, case.source)


@pytest.mark.parametrize("case", STATED, ids=[c.reply[:40] for c in STATED])
def test_reply_reads_the_same_through_the_cli_path(case: ReplyCase) -> None:
    """``mailcarrier classify REPLY --stage S`` (classify_reply: the status found anywhere in the
    text) reads a provider reply as the case says, and so does the reply without its stage,
    the CLI's default, except where the stage is what separates two readings."""
    result = classify_reply(parse_reply(case.reply, case.stage))
    assert (result.reason, result.category) == (case.reason, case.category), result.rule
    unstaged = classify_reply(parse_reply(case.reply, SMTPStage.UNKNOWN))
    if case.stage in (SMTPStage.RCPT, SMTPStage.UNKNOWN) and case.reply[:1] == "5":
        assert unstaged.address_invalid == result.address_invalid, unstaged.rule


def test_every_case_names_its_source() -> None:
    assert all(len(c.source) > 10 for c in CASES)
    assert len(STATED) >= 150  # the provider breadth of issue 16
