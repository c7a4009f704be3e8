"""The family filter rules a family out only where none of its patterns can match: it is a
speed-up of the wording search and must never change a decision."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mailcarrier.domain.detectors.base import wording
from mailcarrier.domain.family_filter import FamilyFilter, required_words
from mailcarrier.domain.reason import reason_table, rule_tiers
from mailcarrier.domain.rules_engine import default_rules

from .reply_cases import reply_cases

_TABLE = reason_table()
# Words of the shipped patterns: random texts made of them come close to matching often.
_WORDS = sorted({w for sources in _TABLE.sources.values() for p in sources for w in re.findall(r"[^\W\d_]+", p)})


def _never_rules_out_a_match(text: str) -> None:
    candidates = _TABLE.filter.candidates(text)
    for reason in _TABLE.sources:
        if _TABLE.alternation(reason).search(text):  # each family as its one alternation
            assert _TABLE.filter.may_match(reason, candidates), (reason, text)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_WORDS), min_size=1, max_size=8))
def test_shipped_families_never_ruled_out_where_they_match(words: list[str]) -> None:
    _never_rules_out_a_match(" ".join(words))


def test_reply_cases_never_ruled_out_where_they_match() -> None:
    for case in reply_cases():
        _never_rules_out_a_match(case.reply.lower())


def test_rules_out_families_whose_words_are_absent() -> None:
    family = FamilyFilter({"full": ("mailbox (?:is )?full", "quota exceeded"), "gone": ("no such user",)})
    candidates = family.candidates("550 mailbox is full")
    assert family.may_match("full", candidates)
    assert not family.may_match("gone", candidates)
    assert family.may_match("unknown family", candidates)


def test_required_words_of_plain_runs_groups_and_alternatives() -> None:
    # A run of items with few known spellings is spelled out: optional parts, groups of
    # plain alternatives, simple classes, boundaries.
    assert required_words("mailbox (?:is )?full") == frozenset({"mailbox is full", "mailbox full"})
    assert required_words("over ?quota") == frozenset({"overquota", "over quota"})
    assert required_words("quota d[ée]pass") == frozenset({"quota depass", "quota dépass"})
    assert required_words("\\bspam\\b") == frozenset({"spam"})
    assert required_words("a\\.b|cde") == frozenset({"a.b", "cde"})
    # Anything else ends a run; the longest run wins, the last of equals.
    assert required_words("[abc]+x{2}yz") == frozenset({"yz"})
    assert required_words("mailbox .* full") == frozenset({"mailbox "})
    assert required_words("(?:user|mailbox)+ unknown") == frozenset({" unknown"})
    # A group that is not spelled out offers its own words.
    assert required_words("x+(?:conta\\d|caixa\\s)y") == frozenset({"conta", "caixa"})


def test_required_words_unknown_for_what_it_does_not_read() -> None:
    for pattern in ("(?i)abc", "\\x41bcd", "(a)\\1bc", "\\N{EM DASH}abc", "(?#x)abc", "(?>ab)", "[a-z]+", ""):
        assert required_words(pattern) is None, pattern


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["ab", "c", "(?:", "(", ")", "|", "?", "+", "*", "??", "?+", "\\.", ".", "[ab]",
                                 "[^a]", " ", "{2}", "\\b", "^", "$", "(?=x)", "(?<!y)", "[a-c]"]),
                max_size=12).map("".join),
       st.text(alphabet="abcxy. ", max_size=20))
def test_required_words_occur_in_every_match(pattern: str, text: str) -> None:
    try:
        compiled = re.compile(pattern)
    except re.error:
        return
    words = required_words(pattern)
    found = compiled.search(text)
    if words is not None and found is not None:
        assert any(w in found.group() for w in words), (pattern, text, words)


def test_detector_and_code_filters_rule_out_only_texts_no_pattern_matches() -> None:
    words = wording()
    tiers = rule_tiers(default_rules())
    texts = [case.reply.lower() for case in reply_cases()] + [
        "after rcpt to: 550 no", "retry timeout exceeded", "[ts04] deferred", "banner", "nothing here"]
    checks = [(words.command_filter, [p for p, _ in words.commands]),
              (words.hint_filter, [p for p, _ in words.hints]),
              (tiers.code_filter, [r.text for r in tiers.codes.rules if r.text is not None])]
    for family_filter, patterns in checks:
        assert family_filter is not None and patterns
        for text in texts:
            if any(p.search(text) for p in patterns):
                assert not family_filter.rules_out(text), text
    assert words.command_filter is not None and words.command_filter.rules_out("nothing here")


def test_case_insensitive_families_ruled_out_only_in_ascii_text() -> None:
    # A capital makes the family case-insensitive (as family_parts compiles it): its words
    # are looked for in the lowercased text, and non-ASCII letters may fold onto ASCII ones.
    family = FamilyFilter({"exchange": ("RESOLVER\\.RST\\.NotAuthorized",), "plain": ("no such user",)})
    assert family.may_match("exchange", family.candidates("550 5.7.1 resolver.rst.notauthorized"))
    assert family.may_match("exchange", family.candidates("550 5.7.1 RESOLVER.RST.NOTAUTHORIZED"))
    assert not family.may_match("exchange", family.candidates("550 no such user"))
    dotless = "resolver.rst.notauthor\u0131zed"  # "\u0131" matches "I" case-insensitively
    assert re.search("RESOLVER\\.RST\\.NotAuthorized", dotless, re.IGNORECASE)
    assert family.may_match("exchange", family.candidates(dotless))
    # (the lowercased text makes "plain" a candidate here: a search too many, never one too few)
    assert family.may_match("plain", family.candidates("NO SUCH USER"))
