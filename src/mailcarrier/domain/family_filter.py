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


# Escapes that match no character, only a place.
_ZERO_WIDTH_ESCAPES = frozenset("bBAZ")
# A run of items is spelled out as all the strings it can match up to this many.
_MAX_SPELLINGS = 64

#: One item of a pattern: every string it can match (when few and known), and the words a
#: group requires (when it is one that occurs once).
_Item = tuple[frozenset[str] | None, frozenset[str] | None]
_EMPTY: frozenset[str] = frozenset([""])


def _items(pattern: str) -> list[_Item] | None:
    """The items of a pattern without top-level "|", each quantifier applied; None when
    the pattern holds something not read here (then nothing is known of its matches)."""
    items: list[_Item] = []
    at = 0
    while at < len(pattern):
        char = pattern[at]
        spellings: frozenset[str] | None = None
        words: frozenset[str] | None = None
        if char == "\\":
            escaped = pattern[at + 1:at + 2]
            if escaped in _LONG_ESCAPES:
                return None
            if escaped in _ZERO_WIDTH_ESCAPES:
                spellings = _EMPTY
            elif escaped.isascii() and not escaped.isalnum():
                spellings = frozenset([escaped])  # "\." is a plain "."
            end = at + 2
        elif char == "[":
            end = class_end(pattern, at)
            members = pattern[at + 1:end - 1]
            if members and members[0] != "^" and not any(c in members for c in "\\-["):
                spellings = frozenset(members)  # "[ée]": one of a few plain characters
        elif char == "(":
            end_or_none = group_end(pattern, at)
            if end_or_none is None:
                return None
            end = end_or_none
            if pattern.startswith(("(?=", "(?!", "(?<=", "(?<!"), at):
                spellings = _EMPTY  # a lookaround matches no character
            elif pattern.startswith("(?:", at) or not pattern.startswith("(?", at):
                inner = pattern[at + (3 if pattern.startswith("(?:", at) else 1):end - 1]
                spellings, words = _spellings(inner), required_words(inner)
            elif not pattern.startswith(("(?P<", "(?P="), at):
                return None  # inline flags, comments, conditionals, atomic groups
        else:
            end = at + 1
            if char in "^$":
                spellings = _EMPTY
            elif char not in _SPECIAL:
                spellings = frozenset([char])
        quantified = _QUANTIFIER.match(pattern, end)
        if quantified is not None:
            end = quantified.end()
            if pattern[end:end + 1] in ("?", "+"):  # lazy or possessive: fewer matches
                end += 1
            optional = quantified.group() == "?"
            spellings = spellings | _EMPTY if optional and spellings is not None else None
            words = None
        items.append((spellings, words))
        at = end
    return items


def _spellings(pattern: str) -> frozenset[str] | None:
    """Every string ``pattern`` can match, when they are few and all known; else None."""
    alternatives = branches(pattern)
    if alternatives is None:
        return None
    found: set[str] = set()
    for alternative in alternatives:
        items = _items(alternative)
        if items is None:
            return None
        spelled: frozenset[str] = _EMPTY
        for spellings, _ in items:
            if spellings is None:
                return None
            spelled = frozenset(a + b for a in spelled for b in spellings)
            if len(spelled) > _MAX_SPELLINGS:
                return None
        found |= spelled
    return frozenset(found)


def _sequence_words(pattern: str) -> frozenset[str] | None:
    """For a pattern without top-level "|": the best of the choices it offers. Each run
    of items whose strings are known (plain characters, "[ée]", "x?", "(?:a|b)", "\\b")
    spells the strings one of which every match holds; a group that occurs once and is
    not spelled out offers its own words."""
    items = _items(pattern)
    if items is None:
        return None
    choices: list[frozenset[str]] = []
    run: frozenset[str] = _EMPTY
    for spellings, words in items:
        if spellings is not None:
            longer = frozenset(a + b for a in run for b in spellings)
            if len(longer) <= _MAX_SPELLINGS:
                run = longer
                continue
        if "" not in run:
            choices.append(run)
        run = spellings if spellings is not None else _EMPTY
        if spellings is None and words:
            choices.append(words)
    if "" not in run:
        choices.append(run)
    if not choices:
        return None
    # The choice whose shortest word is longest occurs in the fewest texts; of equals, the
    # last (a template's first words are the common ones).
    best = choices[0]
    for choice in choices[1:]:
        if _score(choice) >= _score(best):
            best = choice
    return best


def _score(words: frozenset[str]) -> tuple[int, int]:
    return min(len(w) for w in words), -len(words)


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
