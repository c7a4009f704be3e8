"""No text rule stands on a single sample: each is backed by more than one email or by a test reply.

Support is counted per rule file rule and per pattern of a ``reasons.toml`` wording family:
the distinct bounce emails of the shared corpus it decides, and the replies of
``data/replies.toml`` and of the reply tables of test_one_classifier and test_classify it decides. A text rule that
decides exactly one corpus email and nothing else was fitted to that email.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mailcarrier.domain import SMTPStage, parse_reply
from mailcarrier.domain.bounce import parse_bounce
from mailcarrier.domain.errors import ParseError
from mailcarrier.domain.evidence import Evidence
from mailcarrier.domain.rule_support import deciding_rule, suspects, tally
from tests.domain.reply_cases import reply_cases
from tests.domain.test_classify import PROVIDER_REPLIES
from tests.domain.test_one_classifier import REPLIES, VOCABULARY

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "bounces"


def _corpus() -> list[tuple[str, Evidence]]:
    found = []
    for path in sorted((CORPUS / "maildir" / "bsd").glob("*.eml")):  # dos/ and mac/ are copies
        try:
            report = parse_bounce(path.read_bytes())
        except ParseError:
            continue
        for record in report.records if report else ():
            if record.evidence is not None:
                found.append((path.name, record.evidence))
    return found


def _replies() -> list[Evidence]:
    evidence = [case.evidence() for case in reply_cases()]
    for stage, template, *_ in [*REPLIES, *VOCABULARY, *PROVIDER_REPLIES]:
        evidence.append(Evidence.of_reply(parse_reply(template.format(a="pat@dest.test"), SMTPStage(stage))))
    return evidence


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"bounce corpus not found at {CORPUS}")
def test_no_text_rule_decides_a_single_corpus_email_alone() -> None:
    support = tally(_corpus(), _replies())
    lonely = suspects(support)
    assert not lonely, "\n".join(f"{s.rule} {s.wording!r}: only {s.examples}" for s in lonely)
    used = [s for s in support if s.corpus_files or s.test_cases]
    assert len(used) > 100  # the check counted real decisions


def test_deciding_rule_names_the_pattern_of_a_wording_family() -> None:
    rule = deciding_rule(Evidence("550 5.1.1 <a@b.example>: Recipient address rejected: User unknown",
                                  None, SMTPStage.RCPT, code=550))
    assert rule.startswith("reasons.toml:userunknown#")
    assert deciding_rule(Evidence("[TSS04] temporarily deferred", None, SMTPStage.RCPT, code=421)) == "yahoo.tss04"
