"""Spot blocklist listings and spam-trap hits named in bounce or deferral texts.

Receivers often say *why* they refused: "listed at zen.spamhaus.org", "spam trap hit".
Recording those against the sending IP (and the accounts on it at the time) is how the
"neighbours" effect of a shared IP becomes visible. Patterns are data
(``data/reputation_signals.toml``).
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources

from mailcarrier.domain.errors import RuleFileError

__all__ = [
    "ReputationSignal",
    "SignalKind",
    "SignalRule",
    "find_signal",
    "load_signal_rules",
    "parse_signal_rules",
]

_IPV4 = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])")


class SignalKind(StrEnum):
    LISTING = "listing"
    TRAP = "trap"


@dataclass(frozen=True, slots=True)
class SignalRule:
    kind: SignalKind
    blocklist: str
    pattern: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class ReputationSignal:
    """A listing or trap hit named by a reply; ``ip`` is the address the text quotes, if any."""

    kind: SignalKind
    blocklist: str
    evidence: str
    ip: str | None


def parse_signal_rules(text: str) -> tuple[SignalRule, ...]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleFileError(f"reputation signals are not valid TOML: {exc}") from exc
    raw = doc.get("signals")
    if not isinstance(raw, list):
        raise RuleFileError("reputation signals need [[signals]] tables")
    rules = []
    for index, entry in enumerate(raw, start=1):
        if not isinstance(entry, dict):
            raise RuleFileError(f"signal #{index} must be a table")
        try:
            kind = SignalKind(str(entry.get("kind")))
            pattern = re.compile(str(entry["pattern"]), re.IGNORECASE)
        except (ValueError, KeyError, re.error) as exc:
            raise RuleFileError(f"signal #{index}: needs kind listing|trap and a pattern ({exc})") from exc
        rules.append(SignalRule(kind, str(entry.get("list", "")), pattern))
    return tuple(rules)


@cache
def load_signal_rules() -> tuple[SignalRule, ...]:
    text = (resources.files("mailcarrier.domain") / "data" / "reputation_signals.toml").read_text("utf-8")
    return parse_signal_rules(text)


def find_signal(text: str, rules: tuple[SignalRule, ...] | None = None) -> ReputationSignal | None:
    """The first listing/trap signal in a reply text; None when the text names neither."""
    for rule in load_signal_rules() if rules is None else rules:
        match = rule.pattern.search(text)
        if match is None:
            continue
        return ReputationSignal(rule.kind, rule.blocklist, match.group(0), _quoted_ip(text))
    return None


def _quoted_ip(text: str) -> str | None:
    for candidate in _IPV4.findall(text):
        try:
            address = ipaddress.IPv4Address(candidate)
        except ValueError:
            continue
        if not str(address).startswith("127."):  # DNSBL return codes, not our IP
            return str(address)
    return None
