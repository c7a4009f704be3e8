"""Plain-language help for bounces: one line per reason, and the provider's postmaster docs.

Seed 003 lists "error code links by company" beside every bounce so a marketer can look a
reply up at the source. The wording is data (``domain/data/reason_help.toml``); the
providers, their MX and domain patterns and postmaster links come from the provider
registry (``domain/data/providers/``). This module only loads, validates and looks them up.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from mailcarrier.domain.errors import RuleFileError
from mailcarrier.domain.provider_registry import Registry, names_match, registry
from mailcarrier.domain.vocabulary import Reason

__all__ = ["GUIDANCE_OUTCOMES", "Provider", "ReasonHelp", "describe_attempt", "explain", "guidance",
           "load_help", "parse_help", "provider_for"]


@dataclass(frozen=True, slots=True)
class Provider:
    """A receiving provider recognised by its MX hosts or recipient domains (registry patterns,
    each covering its subdomains)."""

    name: str
    mx_suffixes: tuple[str, ...]
    domains: tuple[str, ...]
    postmaster: str

    def matches(self, mx_host: str | None, domain: str | None) -> bool:
        """True when the MX host or the recipient's domain is one of ours."""
        return names_match(mx_host, self.mx_suffixes) or names_match(domain, self.domains)


@dataclass(frozen=True, slots=True)
class ReasonHelp:
    """The loaded help table."""

    reasons: dict[Reason, str]
    providers: tuple[Provider, ...]
    guidance: dict[str, tuple[str, ...]]


def parse_help(text: str, providers: Registry | None = None) -> ReasonHelp:
    """Read the help table from TOML, with the postmaster links of ``providers`` (none when
    not given); RuleFileError says what is wrong or missing."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleFileError(f"reason help is not valid TOML: {exc}") from exc
    raw_reasons = data.get("reasons")
    if not isinstance(raw_reasons, dict):
        raise RuleFileError("reason help needs a [reasons] table")
    reasons: dict[Reason, str] = {}
    for key, line in raw_reasons.items():
        try:
            reason = Reason(key)
        except ValueError:
            raise RuleFileError(f"reason help: unknown reason {key!r}") from None
        if not isinstance(line, str) or not line.strip():
            raise RuleFileError(f"reason help: {key!r} needs a non-empty explanation")
        reasons[reason] = line.strip()
    missing = sorted(r.value for r in Reason if r not in reasons)
    if missing:
        raise RuleFileError(f"reason help: no explanation for {', '.join(missing)}")
    if "providers" in data:
        raise RuleFileError("reason help: providers and their postmaster links live in the provider "
                            "registry (domain/data/providers/<id>.toml), not here")
    links = () if providers is None else tuple(
        Provider(p.name, p.mx, p.domains, p.postmaster) for p in providers.providers
        if p.postmaster and (p.mx or p.domains))
    return ReasonHelp(reasons, links, _guidance(data.get("guidance", {})))


#: The last four are failures before any server answered, worded as such: "no_mail_host"
#: (DNS: the domain accepts no mail or has no mail host), "dns_failed" (the look-up itself
#: failed), "unreachable" (no connection could be opened) and "not_offered" (nothing was sent
#: because the server lacks an extension the message needs, e.g. SMTPUTF8).
GUIDANCE_OUTCOMES = ("delivered", "bounced", "bounced_later", "gave_up", "deferred", "unknown",
                     "not_sent",
                     "no_mail_host", "dns_failed", "unreachable", "not_offered")


def _guidance(raw: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict):
        raise RuleFileError("reason help: [guidance] must be a table")
    out: dict[str, tuple[str, ...]] = {}
    for outcome in GUIDANCE_OUTCOMES:
        paragraphs = raw.get(outcome, [])
        if not isinstance(paragraphs, list) or not all(isinstance(p, str) for p in paragraphs):
            raise RuleFileError(f"reason help: guidance.{outcome} must be a list of strings")
        out[outcome] = tuple(paragraphs)
    return out


class _Blank(dict[str, str]):
    """Format values where a missing fact reads as 'not recorded' instead of failing."""

    def __missing__(self, key: str) -> str:
        return "(not recorded)"


def guidance(outcome: str, facts: dict[str, str | None], table: ReasonHelp | None = None) -> list[str]:
    """The paragraphs for the receiving IT department, with the delivery's facts filled in."""
    help_table = table or load_help()
    values = _Blank({k: v for k, v in facts.items() if v})
    out = []
    for paragraph in help_table.guidance.get(outcome, ()):
        try:
            out.append(paragraph.format_map(values))
        except (ValueError, IndexError, AttributeError):
            out.append(paragraph)
    return out


@lru_cache(maxsize=1)
def load_help() -> ReasonHelp:
    """The shipped help table (read once)."""
    text = resources.files("mailcarrier.domain.data").joinpath("reason_help.toml").read_text("utf-8")
    return parse_help(text, registry())


def explain(reason: str | Reason | None, table: ReasonHelp | None = None) -> str:
    """One line a marketer understands; unknown or missing reasons say so instead of failing."""
    help_table = table or load_help()
    if reason is None:
        return help_table.reasons[Reason.UNDEFINED]
    try:
        return help_table.reasons[Reason(reason)]
    except ValueError:
        return f"Unrecognised reason {str(reason)[:64]!r}; see the receiving server's reply."


_GREYLISTING = re.compile(r"gr[ae]y[- ]?list|postgrey|not yet authori[sz]ed", re.IGNORECASE)
_RATE_LIMIT = re.compile(r"rate|too many|try (?:again )?later|throttl|slow down", re.IGNORECASE)


def describe_attempt(*, reason: str | None, category: int | None, reply_code: int | None,
                     reply_text: str | None, internal_meaning: str | None, outcome: str,
                     table: ReasonHelp | None = None) -> str | None:
    """What one attempt's answer means, in words true to what happened.

    A failure of our own side of the dialogue (timeouts, lost connections: an internal
    code) is described by that code, so a 147 says the server may have the message rather
    than "could not be reached". A temporary refusal (4xx) is never described as a block:
    greylisting and rate limits ask us to come back later. A delivered attempt needs no
    explanation here; a later bounce is described on its own.
    """
    if outcome == "delivered":
        return None
    if internal_meaning:
        return internal_meaning
    text = reply_text or ""
    temporary = (reply_code is not None and 400 <= reply_code < 500) or category == 3
    if temporary and _GREYLISTING.search(text):
        return ("Greylisting: the receiving server asks every new sender to come back later; "
                "the retry is normally accepted. This is not a block.")
    if temporary and category in (1, 3) and reason in ("blocked", "rejected", "policyviolation",
                                                       "badreputation", "spamdetected"):
        what = "a rate limit" if _RATE_LIMIT.search(text) else "a temporary policy"
        return (f"The receiving server refused temporarily ({what}) and asked us to retry later; "
                "it is not a permanent block.")
    return explain(reason, table) if reason else None


def provider_for(mx_host: str | None, domain: str | None,
                 table: ReasonHelp | None = None) -> Provider | None:
    """The first provider whose MX suffixes or domains match, or None."""
    help_table = table or load_help()
    for provider in help_table.providers:
        if provider.matches(mx_host, domain):
            return provider
    return None
