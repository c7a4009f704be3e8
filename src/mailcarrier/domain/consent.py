"""Consent sources: which ways of acquiring an address count as opt-in.

The trusted pool is reserved for senders whose audiences opted in, and a send to an
audience built from a purchased list is the classic way to hit spam traps. Which source
names mean what is data (``data/consent_sources.toml``); unknown names count as no
consent, because only proven opt-in may lift an account's standing.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources

from mailcarrier.domain.errors import RuleFileError

__all__ = ["ConsentKind", "ConsentTable", "classify_source", "load_consent_table",
           "parse_consent_table", "unconsented"]


class ConsentKind(StrEnum):
    OPTED_IN = "opted_in"  #: the person asked for the mail
    NO_CONSENT = "no_consent"  #: known source without opt-in (import, purchased list, ...)
    UNKNOWN = "unknown"  #: a source name the table does not know


@dataclass(frozen=True, slots=True)
class ConsentTable:
    opted_in: frozenset[str]
    no_consent: frozenset[str]


def _names(doc: dict[str, object], key: str) -> frozenset[str]:
    raw = doc.get(key)
    if not isinstance(raw, list) or not all(isinstance(n, str) and n.strip() for n in raw):
        raise RuleFileError(f"consent sources: {key!r} must be a list of non-empty names")
    return frozenset(n.strip().lower() for n in raw)


def parse_consent_table(text: str) -> ConsentTable:
    """Read the table from TOML; a name listed on both sides is an error."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleFileError(f"consent sources are not valid TOML: {exc}") from exc
    table = ConsentTable(_names(doc, "opted_in"), _names(doc, "no_consent"))
    both = table.opted_in & table.no_consent
    if both:
        raise RuleFileError(f"consent sources listed as both opted-in and not: {', '.join(sorted(both))}")
    return table


@cache
def load_consent_table() -> ConsentTable:
    text = (resources.files("mailcarrier.domain") / "data" / "consent_sources.toml").read_text("utf-8")
    return parse_consent_table(text)


def classify_source(source: str, table: ConsentTable | None = None) -> ConsentKind:
    """What a recorded consent source says about opt-in."""
    table = table or load_consent_table()
    name = source.strip().lower()
    if name in table.opted_in:
        return ConsentKind.OPTED_IN
    if name in table.no_consent:
        return ConsentKind.NO_CONSENT
    return ConsentKind.UNKNOWN


def unconsented(sources: Iterable[str], table: ConsentTable | None = None) -> tuple[str, ...]:
    """The sources (sorted, distinct) that do not prove opt-in."""
    return tuple(sorted({s for s in sources if classify_source(s, table) is not ConsentKind.OPTED_IN}))
