"""The split wording families (reason.family_parts) find a match exactly when the family's
one alternation does: the split is a speed-up and must never change a decision."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mailcarrier.domain.detectors.base import wording
from mailcarrier.domain.patterns import family_parts, lowercase_pattern
from mailcarrier.domain.reason import reason_table

from .reply_cases import reply_cases


def _whole(sources: tuple[str, ...]) -> re.Pattern[str]:
    return lowercase_pattern("|".join(f"(?:{p})" for p in sources))


def _split_finds(sources: tuple[str, ...], text: str) -> bool:
    return any(part.search(text) for part in family_parts(sources))


# Words of the shipped patterns: random texts made of them come close to matching often.
_WORDS = sorted({w for sources in reason_table().sources.values() for p in sources
                 for w in re.findall(r"[^\W\d_]+", p)})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_WORDS) | st.sampled_from([" ", "-", "'", "e-mail", "is ", "5.1.1"]),
                max_size=12))
def test_split_families_agree_on_texts_of_their_own_words(words: list[str]) -> None:
    text = " ".join(words).lower()
    for sources in reason_table().sources.values():
        assert _split_finds(sources, text) == (_whole(sources).search(text) is not None), text


def test_split_families_agree_on_the_reply_cases() -> None:
    texts = [case.reply.lower() for case in reply_cases()]
    for sources in reason_table().sources.values():
        whole = _whole(sources)
        for text in texts:
            assert _split_finds(sources, text) == (whole.search(text) is not None), text


def test_leading_groups_are_expanded_exactly() -> None:
    sources = ("(?:e-?mail )?account (?:is )?disabled", "(?:konto|postfach) gesperrt", r"\bspam\b", "x+y")
    for text, found in [("account disabled", True), ("e-mail account is disabled", True),
                        ("the emailaccount disabled", True), ("account was disabled", False),
                        ("postfach gesperrt", True), ("konto  gesperrt", False), ("spam", True), ("a spammer", False),
                        ("antispam", False), ("xxy", True), ("y", False), ("", False)]:
        assert _split_finds(sources, text) is found, text
        assert (_whole(sources).search(text) is not None) is found, text


def test_case_flag_and_group_references_keep_the_family_whole() -> None:
    # A capital anywhere makes the whole family case-insensitive, as one alternation would.
    assert _split_finds(("Quota", "mailbox full"), "MAILBOX FULL")
    # A back-reference would point at another group once split: kept as one pattern.
    assert family_parts((r"(a)b\1", "c")) == (re.compile(r"(?:(a)b\1)|(?:c)"),)
    # No pattern at all: the empty alternation matches any text, as before.
    assert _split_finds((), "anything")


def test_a_pattern_with_its_own_top_level_alternatives_stays_whole() -> None:
    # "abc|def" is two alternatives: grouped under "a" it would read "a(?:bc|def)".
    sources = ("abc|def", "(?:a|b)x|y", "[|(]z")
    for text, found in [("def", True), ("adef", True), ("y", True), ("bx", True), ("(z", True),
                        ("|z", True), ("ab", False), ("z", False)]:
        assert _split_finds(sources, text) is found, text
        assert (_whole(sources).search(text) is not None) is found, text


def test_detector_gates_rule_out_only_texts_no_pattern_matches() -> None:
    words = wording()
    texts = [case.reply.lower() for case in reply_cases()] + [
        "after rcpt to: 550 no", "retry timeout exceeded", "mailbox is full", "banner", "nothing here"]
    for patterns, gate in ((words.commands, words.command_gate), (words.hints, words.hint_gate)):
        assert gate
        for text in texts:
            anywhere = any(p.search(text) for p, _ in patterns)
            assert any(g.search(text) for g in gate) is anywhere, text


def test_whole_branch_groups_open_and_escaped_punctuation_heads_a_group() -> None:
    # A rule's texts are joined as "(?:t1)|(?:t2)": each opens into its own alternatives,
    # and "\[" or "\(" is one plain character: all of these search as one headed part.
    sources = (r"(?:\[ts04\])|(?:tss04)|(?:\(state 1[5-8]\))", r"(?:(?:a\.b)|\[x)")
    assert len(family_parts(sources)) == 1
    for text, found in [("[ts04]", True), ("ts04", False), ("tss04", True), ("(state 16)", True),
                        ("(state 19)", False), ("a.b", True), ("axb", False), ("[x", True), ("x", False),
                        ("\\[ts04", False)]:
        assert _split_finds(sources, text) is found, text
        assert (_whole(sources).search(text) is not None) is found, text
    # A quantified escape is no single character: kept apart, same matches.
    assert _split_finds((r"\[?ab",), "ab")
