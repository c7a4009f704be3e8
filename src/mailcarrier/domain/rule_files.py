"""Check any of the classifier's rule files, whatever its layout, before it is used.

Four layouts exist, each with its own compiler: ordered ``[[rule]]`` tables
(:mod:`mailcarrier.domain.rules_engine`: stage, fallback and an operator's own files),
wording families with a status table (``reasons.toml``, :mod:`mailcarrier.domain.reason`),
provider files of the registry (``data/providers/<id>.toml``,
:mod:`mailcarrier.domain.provider_registry`: patterns, limits, deferral signals, code and
wording rules, answering-host readings) and the detectors' MTA wording (``detectors.toml``,
:mod:`mailcarrier.domain.detectors.base`). :func:`validate_rules_text` recognises the
layout and compiles the text with the matching compilers, so ``mailcarrier rules validate``
catches a mistake in any of them.
"""

from __future__ import annotations

import tomllib

from mailcarrier.domain import reason, rules_engine
from mailcarrier.domain.detectors.base import compile_wording
from mailcarrier.domain.errors import RuleFileError
from mailcarrier.domain.provider_registry import GENERIC, parse_provider
from mailcarrier.domain.remote_hosts import compile_host_rules
from mailcarrier.domain.throttle_rules import compile_deferral

__all__ = ["validate_provider_text", "validate_rules_text"]


def validate_provider_text(text: str, name: str) -> int:
    """Compile everything in one provider file; the number of rules and signals, or RuleFileError."""
    entry = parse_provider(text, name)
    rules = [rules_engine.compile_provider_rule(r) for r in entry.rules]
    host_rules = compile_host_rules(entry).rules
    seen: set[str] = set()
    for rule in (*rules, *host_rules):
        if rule.id in seen:
            raise RuleFileError(f"{name}: duplicate rule id {rule.id!r}")
        seen.add(rule.id)
    provider = "*" if entry.id == GENERIC else entry.id
    signals = [compile_deferral(raw, provider, f"{name} deferral #{n}")
               for n, raw in enumerate(entry.deferrals, 1)]
    return len(rules) + len(host_rules) + len(signals)


def validate_rules_text(text: str, name: str) -> tuple[str, int]:
    """The layout of a rule file and how many rules or patterns it holds; RuleFileError if bad."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleFileError(f"{name}: not valid TOML: {exc}") from None
    if isinstance(doc.get("provider"), dict):
        return "provider", validate_provider_text(text, name)
    if "rule" in doc:
        return "rules", rules_engine.validate_rules_toml(text, name)
    if "patterns" in doc or "first_pass" in doc:
        table = reason.compile_reason_table(text)
        return "reasons", sum(len(p) for p in table.sources.values())
    if "command" in doc or "hint" in doc or "markers" in doc:
        found = compile_wording(text)
        return "detectors", len(found.commands) + len(found.hints) + len(found.recipient_hints)
    raise RuleFileError(f"{name}: not a rule file: expected [[rule]] tables, a [patterns] table "
                        "(reasons.toml layout), a [provider] table (data/providers/<id>.toml layout) or "
                        "[[command]]/[[hint]] tables (detectors.toml layout)")
