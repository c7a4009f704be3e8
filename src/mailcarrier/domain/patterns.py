"""Compiling the rule files' regular expressions for text that is lowercased once."""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["branches", "class_end", "family_parts", "group_end", "lowercase_pattern"]


def lowercase_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a pattern meant for lowercased text.

    Case-insensitive matching folds case at every position tried, several times slower
    than matching lowercased text; a pattern with capitals keeps the flag.
    """
    return re.compile(pattern, 0 if pattern == pattern.lower() else re.IGNORECASE)


# A pattern whose first element is one plain character: the regex engine skips such an
# alternative of an alternation with one comparison, and an alternation of them all with
# the same first character is searched for that character before anything is tried.
_SPECIAL = frozenset("\\[](){}|.^$*+?")
_QUANTIFIER = frozenset("*+?{")
# Anything that refers to a group by number or name: splitting would renumber the groups.
_GROUP_REFERENCE = re.compile(r"\\[1-9]|\(\?P=|\(\?\(")


def _plain_head(pattern: str) -> bool:
    return bool(pattern) and pattern[0] not in _SPECIAL and pattern[1:2] not in _QUANTIFIER


def _escaped_head(pattern: str) -> bool:
    """Whether ``pattern`` begins with an escaped punctuation character ("\\[", "\\("), which
    matches that one character, not followed by a quantifier."""
    return (pattern[:1] == "\\" and pattern[1:2].isascii() and bool(pattern[1:2])
            and not pattern[1].isalnum() and pattern[2:3] not in _QUANTIFIER)


def _one_branch(pattern: str) -> bool:
    """Whether ``pattern`` has no ``|`` outside groups (so a part of it is not one
    alternative of its own); True only when that is sure, for a valid pattern."""
    alternatives = branches(pattern)
    return alternatives is not None and len(alternatives) == 1


def class_end(pattern: str, at: int) -> int:
    """The index after the character class that starts at ``pattern[at]`` ("[").

    A class runs to the first "]" that is neither escaped nor its first member.
    """
    at += 1
    if pattern[at:at + 1] == "^":
        at += 1
    if pattern[at:at + 1] == "]":
        at += 1
    while at < len(pattern) and pattern[at] != "]":
        at += 2 if pattern[at] == "\\" else 1
    return at + 1


def _structure(pattern: str, at: int = 0) -> Iterator[tuple[int, str, int]]:
    """From ``pattern[at]``: each "(", ")" and "|" with its index and the group depth after
    it, stepping over escapes and character classes, which hold none of them."""
    depth = 0
    while at < len(pattern):
        char = pattern[at]
        if char == "\\":
            at += 2
            continue
        if char == "[":
            at = class_end(pattern, at)
            continue
        if char in "()|":
            depth += {"(": 1, ")": -1, "|": 0}[char]
            yield at, char, depth
        at += 1


def group_end(pattern: str, at: int) -> int | None:
    """The index after the group that starts at ``pattern[at]`` ("("); None if unclosed."""
    for where, char, depth in _structure(pattern, at):
        if char == ")" and depth == 0:
            return where + 1
    return None


def branches(pattern: str) -> list[str] | None:
    """The alternatives of ``pattern``'s ``|`` outside groups (``a|b(?:c|d)`` is ``a`` and
    ``b(?:c|d)``), for a valid pattern; None when that is not sure."""
    if "(?#" in pattern:
        return None  # a comment may hold anything
    start = 0
    found: list[str] = []
    for where, char, depth in _structure(pattern):
        if char == "|" and depth <= 0:
            found.append(pattern[start:where])
            start = where + 1
    found.append(pattern[start:])
    return found


def _expand_head(pattern: str, budget: int = 16) -> list[str]:
    """``pattern`` as alternatives that together match exactly what it matches, each
    beginning with a plain character where a leading group of plain alternatives allows.

    ``(?:a|b)R`` matches where ``aR`` or ``bR`` does, and ``(?:a|b)?R`` where ``aR``, ``bR``
    or ``R`` does: identities of regular expressions. Anything else is left as written.
    """
    if not pattern.startswith("(?:") or not _one_branch(pattern):
        return [pattern]
    end = pattern.find(")", 3)
    inner = pattern[3:end]
    if end < 0 or any(c in inner for c in "\\[]()"):
        return [pattern]
    rest = pattern[end + 1:]
    choices = inner.split("|")
    if rest[:1] == "?":
        rest = rest[1:]
        if rest[:1] in ("?", "+"):
            return [pattern]  # lazy or possessive: keep it as it is
        choices.append("")
    if rest[:1] in _QUANTIFIER or len(choices) > budget:
        return [pattern]
    out: list[str] = []
    for choice in choices:
        out += _expand_head(choice + rest, budget - len(choices))
    return out


def _alternatives(pattern: str) -> list[str]:
    """``pattern``'s top-level alternatives, a whole-branch group ``(?:X)`` opened into X's
    own (a rule's texts are joined as ``(?:t1)|(?:t2)``), each with its head expanded."""
    out: list[str] = []
    for branch in branches(pattern) or [pattern]:
        if branch.startswith("(?:") and group_end(branch, 0) == len(branch):
            out += _alternatives(branch[3:-1])
        else:
            out += _expand_head(branch)
    return out


def family_parts(sources: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    """The regexes that, searched in turn, find a match exactly when the alternation of
    ``sources`` (``(?:p1)|(?:p2)|...``, compiled by :func:`lowercase_pattern`) does.

    An alternation's search tries every alternative at every position of the text when
    one alternative begins with a group, a class or an assertion, and tries them one by
    one wherever it does try. Leading groups of plain words are expanded, the alternatives
    that begin with a plain character are grouped under it (``c(?:r1|r2)|d(?:...)``: one
    comparison per first character, and the engine skips at C speed to where one of them
    occurs), the others are searched apart; a pattern's own top-level alternatives count as
    alternatives of the family. A text holds a match of an alternation exactly
    when it holds a match of one alternative, so the parts together find the same; the
    case flag is the whole family's.
    """
    whole = "|".join(f"(?:{p})" for p in sources)
    flags = 0 if whole == whole.lower() else re.IGNORECASE
    if not sources or any(_GROUP_REFERENCE.search(p) for p in sources):
        # (An empty family compiles to the empty pattern, which matches any text.)
        return (re.compile(whole, flags),)
    by_head: dict[str, list[str]] = {}
    others: list[str] = []
    for source in sources:
        for alternative in _alternatives(source):
            if _plain_head(alternative) and _one_branch(alternative):
                by_head.setdefault(alternative[0], []).append(alternative[1:])
            elif _escaped_head(alternative) and _one_branch(alternative):
                # "\[ts04\]": an escaped punctuation character is one plain character too.
                by_head.setdefault(alternative[:2], []).append(alternative[2:])
            elif (alternative.startswith("\\b") and _plain_head(alternative[2:])
                  and (alternative[2].isalnum() or alternative[2] == "_") and _one_branch(alternative)):
                # "\bspam": "s" where a word begins, the boundary checked behind the "s".
                head = alternative[2]
                by_head.setdefault(head, []).append(f"(?<=\\b{head})" + alternative[3:])
            else:
                others.append(alternative)
    # "c(?:r1|r2)" for the alternatives "cr1" and "cr2": the first character is a single
    # plain one, so what follows it is a pattern of its own.
    headed = "|".join(head + "(?:" + "|".join(f"(?:{r})" for r in rests) + ")"
                      for head, rests in by_head.items())
    groups = [g for g in (headed, "|".join(f"(?:{p})" for p in others)) if g]
    return tuple(re.compile(group, flags) for group in groups)
