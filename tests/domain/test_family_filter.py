"""The family filter rules a family out only where none of its patterns can match: it is a
speed-up of the wording search and must never change a decision."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mailcarrier.domain.family_filter import FamilyFilter, required_words
from mailcarrier.domain.reason import reason_table

from .reply_cases import reply_cases

_TABLE = reason_table()
# Words of the shipped patterns: random texts made of them come close to matching often.
_WORDS = sorted({w for sources in _TABLE.sources.values() for p in sources for w in re.findall(r"[^\W\d_]+", p)})


def _never_rules_out_a_match(text: str) -> None:
    candidates = _TABLE.filter.candidates(text)
    for reason, whole in _TABLE.patterns.items():  # each family as its one alternation
        if whole.search(text):
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
    assert required_words("mailbox (?:is )?full") == frozenset({"mailbox "})
    assert required_words("over ?quota") == frozenset({"quota"})
    assert required_words("(?:user|mailbox) unknown") == frozenset({" unknown"})
    assert required_words("(?:conta|caixa) (?:de )?x") == frozenset({"conta", "caixa"})
    assert required_words("a\\.b|cde") == frozenset({"a.b", "cde"})
    assert required_words("[abc]+x{2}yz") == frozenset({"yz"})


def test_required_words_unknown_for_what_it_does_not_read() -> None:
    for pattern in ("(?i)abc", "\\x41bcd", "(a)\\1bc", "\\N{EM DASH}abc", "(?#x)abc", "(?>ab)", "[a-z]+", ""):
        assert required_words(pattern) is None, pattern


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["ab", "c", "(?:", ")", "|", "?", "+", "*", "\\.", ".", "[ab]", " ", "{2}",
                                 "\\b", "(?=x)", "(?<!y)"]), max_size=12).map("".join),
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
