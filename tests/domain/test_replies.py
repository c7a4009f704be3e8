"""Replies worded as real MTAs and providers word them get the reason their wording says."""

from __future__ import annotations

import pytest

from mailcarrier.domain.classify import classify_evidence
from tests.domain.reply_cases import ReplyCase, reply_cases

CASES = reply_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.reply[:40] for c in CASES])
def test_reply_reads_as_its_wording_says(case: ReplyCase) -> None:
    result = classify_evidence(case.evidence())
    assert result.reason is case.reason, (result.rule, case.source)


def test_every_case_names_its_source() -> None:
    assert all(len(c.source) > 10 for c in CASES)
