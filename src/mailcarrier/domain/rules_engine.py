"""Ordered classification rules kept as TOML data; the first matching rule wins.

A rule file is a list of ``[[rule]]`` tables. Every key but ``id`` and ``reason`` is an
optional constraint, and a rule matches when all of its constraints hold::

    [[rule]]
    id = "rcpt.too-many-recipients"     # unique, shown in every classification it makes
    reason = "toomanyconn"              # a Reason value
    codes = [452, 552]                  # the reply code is one of these
    status = ["4.5.3", "5.5.3"]        # the enhanced code starts with one of these ("5.7." works)
    stages = ["rcpt"]                   # the reply answered one of these SMTP stages
    text = ['too many recipients']      # a case-insensitive regex that must occur in the text
    retry = true                        # override: retry even though the code is 5xx (or never)
    scope = "domain"                    # recipient | message | domain (back off the whole domain)
    source = "RFC 5321 4.5.3.1.10"      # why the rule exists; required for review, not matched

The shipped rules are, in order: the providers' documented codes (``tier = "code"`` rules
of :mod:`mailcarrier.domain.provider_registry`), ``stage.toml``, the providers' wording
(``tier = "wording"``) and ``fallback.toml``, read once (``importlib.resources``); a user
file may be prepended with :func:`load_rules`. :func:`validate_rule_file` backs the
``mailcarrier rules validate`` command.
"""

from __future__ import annotations

import enum
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mailcarrier.domain.errors import RuleFileError
from mailcarrier.domain.provider_registry import ProviderRule, Tier, registry
from mailcarrier.domain.smtp_reply import SMTPStage
from mailcarrier.domain.vocabulary import Reason

__all__ = ["PROVIDER_CODES", "PROVIDER_WORDING", "RULE_FILES", "Rule", "RuleSet", "Scope",
           "compile_provider_rule", "compile_rule", "default_rules", "load_rules",
           "validate_rule_file", "validate_rules_toml"]

#: The shipped rule files of ``rules/`` that hold ``[[rule]]`` tables (no provider's knowledge);
#: where each stands in the precedence is in :mod:`mailcarrier.domain.classify`.
RULE_FILES: tuple[str, ...] = ("stage.toml", "fallback.toml")
#: How the origin of a provider's rule starts, by tier: ``rule_tiers`` groups rules by it.
PROVIDER_CODES = "provider-code:"
PROVIDER_WORDING = "provider-wording:"

_KEYS = frozenset({"id", "reason", "codes", "status", "stages", "text", "retry", "scope", "source"})


class Scope(enum.StrEnum):
    """What a failure is about, so the engine knows what to hold back."""

    RECIPIENT = "recipient"  #: this mailbox only
    MESSAGE = "message"  #: this message's content or size
    DOMAIN = "domain"  #: the sending host towards this destination: back off the domain


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule."""

    id: str
    reason: Reason
    codes: frozenset[int] | None
    status: tuple[str, ...] | None
    stages: frozenset[SMTPStage] | None
    text: re.Pattern[str] | None
    retry: bool | None
    scope: Scope | None
    origin: str

    def matches(self, code: int | None, status: str, stage: SMTPStage, text: str) -> bool:
        if self.codes is not None and code not in self.codes:
            return False
        if self.status is not None and not (status and status.startswith(self.status)):
            return False
        if self.stages is not None and stage not in self.stages:
            return False
        return self.text is None or self.text.search(text) is not None


@dataclass(frozen=True, slots=True, eq=False)
class RuleSet:
    """Rules in evaluation order.

    Compared and hashed by identity: a rule set is a cache key of the classifier, and
    hashing every rule on each call would cost more than the classification itself.
    """

    rules: tuple[Rule, ...]

    def first_match(self, code: int | None, status: str, stage: SMTPStage, text: str) -> Rule | None:
        for rule in self.rules:
            if rule.matches(code, status, stage, text):
                return rule
        return None


def _as_list(value: object, key: str, where: str) -> list[object]:
    if not isinstance(value, list) or not value:
        raise RuleFileError(f"{where}: '{key}' must be a non-empty list")
    return value


def compile_rule(raw: dict[str, object], where: str) -> Rule:
    """One ``[[rule]]`` table compiled; ``where`` names it in error messages."""
    unknown = set(raw) - _KEYS
    if unknown:
        raise RuleFileError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    rid = raw.get("id")
    if not isinstance(rid, str) or not rid:
        raise RuleFileError(f"{where}: every rule needs a string 'id'")
    where = f"{where} (rule {rid!r})"
    try:
        reason = Reason(str(raw.get("reason")))
    except ValueError:
        raise RuleFileError(f"{where}: unknown reason {raw.get('reason')!r}") from None
    codes = stages = status = text = None
    if "codes" in raw:
        values = _as_list(raw["codes"], "codes", where)
        if not all(isinstance(c, int) and 200 <= c <= 599 for c in values):
            raise RuleFileError(f"{where}: 'codes' must be SMTP reply codes (200-599)")
        codes = frozenset(int(str(c)) for c in values)
    if "status" in raw:
        prefixes = [str(s) for s in _as_list(raw["status"], "status", where)]
        if not all(re.fullmatch(r"[245](\.\d{1,3}){0,2}\.?", p) for p in prefixes):
            raise RuleFileError(f"{where}: 'status' entries look like '5.1.1' or '5.7.'")
        status = tuple(prefixes)
    if "stages" in raw:
        try:
            stages = frozenset(SMTPStage(str(s)) for s in _as_list(raw["stages"], "stages", where))
        except ValueError as exc:
            raise RuleFileError(f"{where}: {exc}") from None
    if "text" in raw:
        patterns = [str(p) for p in _as_list(raw["text"], "text", where)]
        try:
            text = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
        except re.error as exc:
            raise RuleFileError(f"{where}: bad regular expression: {exc}") from None
    retry = raw.get("retry")
    if retry is not None and not isinstance(retry, bool):
        raise RuleFileError(f"{where}: 'retry' must be true or false")
    scope = None
    if "scope" in raw:
        try:
            scope = Scope(str(raw["scope"]))
        except ValueError:
            raise RuleFileError(f"{where}: scope must be one of {[s.value for s in Scope]}") from None
    return Rule(rid, reason, codes, status, stages, text, retry, scope, where)


def _parse(data: str, where: str) -> list[Rule]:
    try:
        doc = tomllib.loads(data)
    except tomllib.TOMLDecodeError as exc:
        raise RuleFileError(f"{where}: not valid TOML: {exc}") from None
    raws = doc.get("rule", [])
    if not isinstance(raws, list):
        raise RuleFileError(f"{where}: rules are written as [[rule]] tables")
    return [compile_rule(r, f"{where}#{i + 1}") for i, r in enumerate(raws)]


def _check_unique(rules: Iterable[Rule]) -> None:
    seen: dict[str, str] = {}
    for rule in rules:
        if rule.id in seen:
            raise RuleFileError(f"duplicate rule id {rule.id!r} in {rule.origin} and {seen[rule.id]}")
        seen[rule.id] = rule.origin


def compile_provider_rule(rule: ProviderRule) -> Rule:
    """A provider registry rule compiled; its origin says its tier (codes or wording)."""
    prefix = PROVIDER_CODES if rule.tier is Tier.CODE else PROVIDER_WORDING
    return compile_rule(dict(rule.table), prefix + rule.origin)


def load_rules(extra: Sequence[Path] = ()) -> RuleSet:
    """The shipped rules, with the rules of ``extra`` files evaluated first."""
    rules: list[Rule] = []
    for path in extra:
        rules.extend(_parse(Path(path).read_text(encoding="utf-8"), str(path)))
    package = resources.files("mailcarrier.domain") / "rules"
    providers = registry()
    rules.extend(compile_provider_rule(r) for r in providers.rules(Tier.CODE))
    rules.extend(_parse((package / "stage.toml").read_text(encoding="utf-8"), "stage.toml"))
    rules.extend(compile_provider_rule(r) for r in providers.rules(Tier.WORDING))
    rules.extend(_parse((package / "fallback.toml").read_text(encoding="utf-8"), "fallback.toml"))
    _check_unique(rules)
    return RuleSet(tuple(rules))


def validate_rule_file(path: Path) -> int:
    """Compile one rule file; returns the number of rules or raises :class:`RuleFileError`."""
    return validate_rules_toml(Path(path).read_text(encoding="utf-8"), str(path))


def validate_rules_toml(text: str, name: str) -> int:
    """Compile ``[[rule]]`` tables given as text; the number of rules, or RuleFileError."""
    rules = _parse(text, name)
    _check_unique(rules)
    return len(rules)


_DEFAULT: list[RuleSet] = []


def default_rules() -> RuleSet:
    """The shipped rule set, compiled on first use and kept (nothing happens at import)."""
    if not _DEFAULT:
        _DEFAULT.append(load_rules())
    return _DEFAULT[0]
