"""Check any of the classifier's rule files, whatever its layout, before it is used.

Three layouts exist, each with its own compiler: ordered ``[[rule]]`` tables
(:mod:`mailcarrier.domain.rules_engine`: codes, stage, providers, fallback and an
operator's own files), wording families with a status table (``reasons.toml``,
:mod:`mailcarrier.domain.reason`) and answering-host readings (``[[provider]]`` tables,
:mod:`mailcarrier.domain.remote_hosts`); the detectors' MTA wording (``detectors.toml``,
:mod:`mailcarrier.domain.detectors.base`) is checked the same way. :func:`validate_rules_text` recognises the
layout and compiles the text with the matching compiler, so ``mailcarrier rules validate``
catches a mistake in any of them.
"""

from __future__ import annotations

import tomllib

from mailcarrier.domain import reason, remote_hosts, rules_engine
from mailcarrier.domain.detectors.base import compile_wording
from mailcarrier.domain.errors import RuleFileError

__all__ = ["validate_rules_text"]


def validate_rules_text(text: str, name: str) -> tuple[str, int]:
    """The layout of a rule file and how many rules or patterns it holds; RuleFileError if bad."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleFileError(f"{name}: not valid TOML: {exc}") from None
    if "rule" in doc:
        return "rules", rules_engine.validate_rules_toml(text, name)
    if "patterns" in doc or "first_pass" in doc:
        table = reason.compile_reason_table(text)
        return "reasons", sum(len(p) for p in table.sources.values())
    if "command" in doc or "hint" in doc or "markers" in doc:
        found = compile_wording(text)
        return "detectors", len(found.commands) + len(found.hints) + len(found.recipient_hints)
    if "provider" in doc:
        hosts = remote_hosts.compile_remote_hosts(text, name)
        return "remote-hosts", sum(len(p.rules.rules) for p in hosts.providers)
    raise RuleFileError(f"{name}: not a rule file: expected [[rule]] tables, a [patterns] table "
                        "(reasons.toml layout), [[provider]] tables (remote_hosts.toml layout) or "
                        "[[command]]/[[hint]] tables (detectors.toml layout)")
