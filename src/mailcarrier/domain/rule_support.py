"""How much evidence stands behind each classification rule: a check against over-fitting.

A rule written from how servers word things decides many different emails; a rule fitted
to one sample decides that sample and nothing else. :func:`deciding_rule` names, for one
piece of evidence, the finest-grained rule that decided it: the rule of a rule file, or
the one pattern of a ``reasons.toml`` wording family. :func:`tally` counts, per rule, the
distinct bounce emails and the test replies it decides; :func:`suspects` lists the text
rules that decide exactly one email of a corpus and no test reply: the mark of a rule
written for one file.

Pure: callers read the corpus and pass the evidence in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from mailcarrier.domain.classify import classify_evidence
from mailcarrier.domain.evidence import Evidence
from mailcarrier.domain.reason import reason_table
from mailcarrier.domain.remote_hosts import remote_host_rules
from mailcarrier.domain.rules_engine import Rule, RuleSet, default_rules
from mailcarrier.domain.vocabulary import Reason

__all__ = ["RuleSupport", "deciding_rule", "suspects", "tally", "text_rules"]

_FAMILY_KINDS = ("first", "words", "notice")


def _family_rule(kind: str, name: str, evidence: Evidence) -> str:
    table = reason_table()
    text = evidence.context if kind == "notice" else evidence.diagnostic
    text = " ".join(text.split()).lower()
    reason = Reason(name)
    index = table.which(reason, text)
    if index is None and reason is Reason.FILTERED:
        # "user unknown" wording answered after DATA: the userunknown family's words decided.
        reason, index = Reason.USERUNKNOWN, table.which(Reason.USERUNKNOWN, text)
    if index is None:
        return f"status:{evidence.status}"
    return f"reasons.toml:{reason.value}#{index}"


def deciding_rule(evidence: Evidence, rules: RuleSet | None = None) -> str:
    """The finest-grained rule that decided ``evidence``: a rule id or ``reasons.toml:REASON#N``."""
    decided = classify_evidence(evidence, rules).rule
    kind, _, name = decided.partition(":")
    if kind in _FAMILY_KINDS and name in Reason.__members__.values():
        return _family_rule(kind, name, evidence)
    return decided


def text_rules(rules: RuleSet | None = None) -> dict[str, str]:
    """Every rule that decides by wording, with the wording it looks for."""
    found: dict[str, str] = {}
    table = reason_table()
    for reason, sources in table.sources.items():
        for index, source in enumerate(sources):
            found[f"reasons.toml:{reason.value}#{index}"] = source
    listed: list[Rule] = list((rules or default_rules()).rules)
    for provider in remote_host_rules().providers:
        listed.extend(provider.rules.rules)
    for rule in listed:
        if rule.text is not None:
            found[rule.id] = rule.text.pattern
    return found


@dataclass(frozen=True, slots=True)
class RuleSupport:
    """The evidence behind one rule."""

    rule: str
    wording: str
    #: Distinct bounce emails of the corpus the rule decided at least one record of.
    corpus_files: int
    #: Test replies the rule decided.
    test_cases: int
    examples: tuple[str, ...] = field(default=(), compare=False)


def tally(corpus: Iterable[tuple[str, Evidence]], replies: Iterable[Evidence],
          rules: RuleSet | None = None) -> list[RuleSupport]:
    """Support per rule. ``corpus`` pairs an email's name with each record's evidence."""
    files: dict[str, set[str]] = {}
    cases: dict[str, int] = {}
    for name, evidence in corpus:
        files.setdefault(deciding_rule(evidence, rules), set()).add(name)
    for evidence in replies:
        rule = deciding_rule(evidence, rules)
        cases[rule] = cases.get(rule, 0) + 1
    wording = text_rules(rules)
    ids = sorted(set(files) | set(cases) | set(wording))
    return [RuleSupport(rid, wording.get(rid, ""), len(files.get(rid, ())), cases.get(rid, 0),
                        tuple(sorted(files.get(rid, ()))[:3])) for rid in ids]


def suspects(support: Iterable[RuleSupport]) -> list[RuleSupport]:
    """Text rules that decide exactly one corpus email and no test reply."""
    return [s for s in support if s.wording and s.corpus_files == 1 and s.test_cases == 0]
