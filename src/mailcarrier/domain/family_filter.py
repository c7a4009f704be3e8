"""Which wording families can match a text, from the plain words their matches must hold.

A family (``reasons.toml``'s patterns for one reason) is one regular expression search
over the text, and the regex engine tries every alternative at nearly every position: a
decision that asks thirty families about a long notice pays thirty scans. Most of them
cannot match: each pattern names words ("mailbox full", "quota") that any text it
matches contains. :class:`FamilyFilter` collects those words of every family into one
Aho-Corasick automaton (``pyahocorasick``, a C extension on PyPI) that finds all of
them in a single pass over the text; a family none of whose words occurs is ruled out
without a search. The rule is exact: a family is ruled out only when every one of its
patterns has words it must contain and none of them occurs. Anything the word reader
does not understand (inline flags, numbered escapes) leaves its family always searched;
a case-insensitive family is ruled out only in ASCII text.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from typing import Generic, TypeVar

import ahocorasick

from mailcarrier.domain.patterns import branches, class_end, group_end

__all__ = ["FamilyFilter", "required_words"]

K = TypeVar("K", bound=Hashable)

# Anything that may follow an atom as a quantifier (a superset of Python's: "a{}" is the
# literal "a{}" but is read as quantified, which only forgets words).
_QUANTIFIER = re.compile(r"[*+?]|\{\d*(?:,\d*)?\}")
_SPECIAL = frozenset("\\[](){}|.^$*+?")
# Escapes followed by more characters of their own (\x41, \N{...}, backreferences):
# not read at all.
_LONG_ESCAPES = frozenset("xuUN0123456789")
# Shorter words occur in nearly every text: they rule nothing out.
_MIN_WORD = 2


def required_words(pattern: str) -> frozenset[str] | None:
    """Words at least one of which every match of ``pattern`` contains (compiled without
    flags); None when no such words are known."""
    alternatives = branches(pattern)
    if alternatives is None:
        return None
    if len(alternatives) > 1:
        words: set[str] = set()
        for alternative in alternatives:
            found = required_words(alternative)
            if found is None:
                return None
            words |= found
        return frozenset(words)
    return _sequence_words(pattern)


def _sequence_words(pattern: str) -> frozenset[str] | None:
    """For a pattern without top-level "|": the best of the choices it offers, each a
    run of plain characters or the words of a group that occurs exactly once."""
    choices: list[frozenset[str]] = []
    run: list[str] = []
    at = 0
    while at < len(pattern):
        char = pattern[at]
        literal: str | None = None
        group: str | None = None
        if char == "\\":
            escaped = pattern[at + 1:at + 2]
            if escaped in _LONG_ESCAPES:
                return None
            if escaped.isascii() and not escaped.isalnum():
                literal = escaped  # "\." is a plain "."
            end = at + 2
        elif char == "[":
            end = class_end(pattern, at)
        elif char == "(":
            if pattern.startswith("(?", at) and pattern[at + 2:at + 3] not in (":", "=", "!", "<", "P"):
                return None  # inline flags, comments, conditionals, atomic groups
            closing = group_end(pattern, at)
            if closing is None:
                return None
            end = closing
            if pattern.startswith("(?:", at):
                group = pattern[at + 3:end - 1]
            elif not pattern.startswith("(?", at):
                group = pattern[at + 1:end - 1]
        elif char in _SPECIAL:
            end = at + 1
        else:
            literal = char
            end = at + 1
        quantified = _QUANTIFIER.match(pattern, end)
        if quantified is not None:
            literal = group = None
            end = quantified.end()
            if pattern[end:end + 1] in ("?", "+"):  # lazy or possessive
                end += 1
        if literal is not None:
            run.append(literal)
        else:
            if run:
                choices.append(frozenset(["".join(run)]))
                run = []
            inner = required_words(group) if group is not None else None
            if inner:
                choices.append(inner)
        at = end
    if run:
        choices.append(frozenset(["".join(run)]))
    if not choices:
        return None
    # The choice whose shortest word is longest occurs in the fewest texts.
    return max(choices, key=lambda words: (min(len(w) for w in words), -len(words)))


class FamilyFilter(Generic[K]):
    """The families (key -> patterns) that a text may match, found in one pass."""

    __slots__ = ("_always", "_automaton", "_bits", "_folded")

    def __init__(self, families: Mapping[K, tuple[str, ...]]) -> None:
        self._bits: dict[K, int] = {key: 1 << index for index, key in enumerate(families)}
        always = folded = 0
        by_word: dict[str, int] = {}
        for key, patterns in families.items():
            read = _family_words(patterns)
            if read is None:
                always |= self._bits[key]
                continue
            words, case_insensitive = read
            if case_insensitive:
                folded |= self._bits[key]
            for word in words:
                by_word[word] = by_word.get(word, 0) | self._bits[key]
        self._always = always
        self._folded = folded
        self._automaton = ahocorasick.Automaton()
        for word, bits in by_word.items():
            self._automaton.add_word(word, bits)
        if by_word:
            self._automaton.make_automaton()

    def candidates(self, text: str) -> int:
        """The families that may match ``text``, as a bit set (see :meth:`may_match`)."""
        found = self._always
        if self._folded:
            # A case-insensitive family's words are lowercase ASCII: found in the lowercased
            # text exactly when a match holds them in any case, if the text is ASCII (other
            # letters fold onto ASCII ones: "\u0131" matches "i" case-insensitively). The
            # other families' lowercase words stay where they were when the text is lowercased.
            if not text.isascii():
                found |= self._folded
            text = text.lower()
        if self._automaton.kind == ahocorasick.AHOCORASICK:
            for _, bits in self._automaton.iter(text):
                found |= bits
        return found

    def rules_out(self, text: str) -> bool:
        """Whether no family at all can match ``text``."""
        return self.candidates(text) == 0

    def may_match(self, key: K, candidates: int) -> bool:
        """Whether family ``key`` is among ``candidates``; an unknown key always is."""
        bit = self._bits.get(key)
        return bit is None or bool(candidates & bit)


def _family_words(patterns: tuple[str, ...]) -> tuple[frozenset[str], bool] | None:
    """The words of a family, and whether it is searched case-insensitively (a capital
    anywhere, as :func:`~mailcarrier.domain.patterns.family_parts` compiles it)."""
    whole = "|".join(patterns)
    case_insensitive = whole != whole.lower()
    words: set[str] = set()
    for pattern in patterns:
        found = required_words(pattern)
        if found is None or min(len(w) for w in found) < _MIN_WORD:
            return None
        if case_insensitive:
            if not all(w.isascii() for w in found):
                return None
            found = frozenset(w.lower() for w in found)
        words |= found
    return frozenset(words), case_insensitive
