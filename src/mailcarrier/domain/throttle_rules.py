"""Per-provider limits and deferral automation: throttling that listens to replies.

Large mailbox providers publish (or reveal through their 421 replies) how fast one IP
may send. The limits and the automation signals are data: each provider's ``[limits]`` and
``[[deferral]]`` tables in the provider registry (``data/providers/<id>.toml``, the
default and the generic signal in ``generic.toml``); this module is the pure state machine:
``on_reply(state, event, rules)`` returns the new state and what changed, and
``effective_limits`` tells the worker what it may do now. Every start and end is returned
as a value so the caller can log it.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from types import MappingProxyType

from mailcarrier.domain.errors import RuleFileError
from mailcarrier.domain.provider_registry import GENERIC, Registry, names_match, registry

__all__ = [
    "ActionKind",
    "ActiveAction",
    "DeferralRule",
    "ProviderLimits",
    "ReplyEvent",
    "ThrottleDecision",
    "ThrottleRules",
    "ThrottleState",
    "compile_deferral",
    "effective_limits",
    "load_throttle_rules",
    "on_reply",
    "parse_throttle_rules",
    "throttle_rules_of",
]

_HOUR = timedelta(hours=1)


class ActionKind(StrEnum):
    SUSPEND = "suspend"
    SLOW_DOWN = "slow_down"


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    """What one sending IP may do towards one provider. ``domains`` are recipient domain and
    MX host patterns, each covering its subdomains (see :func:`provider_registry.names_match`)."""

    provider: str
    domains: tuple[str, ...]
    connections: int
    messages_per_connection: int
    messages_per_hour: int


@dataclass(frozen=True, slots=True)
class DeferralRule:
    """Count replies matching ``pattern``; at ``threshold_per_hour`` start the action."""

    name: str
    provider: str
    pattern: re.Pattern[str]
    threshold_per_hour: int
    action: ActionKind
    duration: timedelta
    connections: int = 1
    rate_factor: float = 1.0

    def applies_to(self, provider: str, text: str) -> bool:
        return self.provider in ("*", provider) and self.pattern.search(text) is not None


@dataclass(frozen=True, slots=True)
class ThrottleRules:
    providers: Mapping[str, ProviderLimits]
    deferral_rules: tuple[DeferralRule, ...]

    def provider_for(self, host_or_domain: str) -> ProviderLimits:
        """The provider a recipient domain or MX host belongs to (``default`` otherwise)."""
        for limits in self.providers.values():
            if names_match(host_or_domain, limits.domains):
                return limits
        return self.providers["default"]


@dataclass(frozen=True, slots=True)
class ActiveAction:
    rule: str
    kind: ActionKind
    started: datetime
    until: datetime
    connections: int
    rate_factor: float


@dataclass(frozen=True, slots=True)
class ThrottleState:
    """Automation state for one (sending IP, provider) pair.

    ``matches`` holds (rule name, time) of counted replies within the last hour.
    """

    ip: str
    provider: str
    matches: tuple[tuple[str, datetime], ...] = ()
    action: ActiveAction | None = None


@dataclass(frozen=True, slots=True)
class ReplyEvent:
    """One delivery outcome towards the provider: a clean delivery or a temporary failure."""

    at: datetime
    delivered: bool
    text: str = ""


@dataclass(frozen=True, slots=True)
class ThrottleDecision:
    """New state plus what changed; ``ended`` says why an action stopped."""

    state: ThrottleState
    started: ActiveAction | None = None
    ended: str | None = None


def on_reply(state: ThrottleState, event: ReplyEvent, rules: ThrottleRules) -> ThrottleDecision:
    """Feed one outcome into the automation."""
    state, ended = _expire(state, event.at)
    if event.delivered:
        if state.action is not None and state.action.kind is ActionKind.SLOW_DOWN:
            return ThrottleDecision(replace(state, action=None, matches=()), ended="clean delivery")
        return ThrottleDecision(state, ended=ended)
    rule = next((r for r in rules.deferral_rules if r.applies_to(state.provider, event.text)), None)
    if rule is None:
        return ThrottleDecision(state, ended=ended)
    window = event.at - _HOUR
    matches = (*[m for m in state.matches if m[1] > window], (rule.name, event.at))
    state = replace(state, matches=matches)
    count = sum(1 for name, _ in matches if name == rule.name)
    if count < rule.threshold_per_hour or _outranks(state.action, rule):
        return ThrottleDecision(state, ended=ended)
    action = ActiveAction(
        rule=rule.name,
        kind=rule.action,
        started=event.at,
        until=event.at + rule.duration,
        connections=0 if rule.action is ActionKind.SUSPEND else rule.connections,
        rate_factor=0.0 if rule.action is ActionKind.SUSPEND else rule.rate_factor,
    )
    return ThrottleDecision(replace(state, action=action), started=action, ended=ended)


def effective_limits(
    state: ThrottleState, limits: ProviderLimits, now: datetime
) -> ProviderLimits | None:
    """Limits in force now for this IP and provider; None while suspended."""
    state, _ = _expire(state, now)
    action = state.action
    if action is None:
        return limits
    if action.kind is ActionKind.SUSPEND:
        return None
    return replace(
        limits,
        connections=min(limits.connections, action.connections),
        messages_per_hour=max(1, int(limits.messages_per_hour * action.rate_factor)),
    )


def _expire(state: ThrottleState, now: datetime) -> tuple[ThrottleState, str | None]:
    if state.action is not None and now >= state.action.until:
        return replace(state, action=None, matches=()), "expired"
    return state, None


def _outranks(current: ActiveAction | None, rule: DeferralRule) -> bool:
    """An active suspension is not weakened into a slow-down by a later match."""
    return (
        current is not None and current.kind is ActionKind.SUSPEND and rule.action is ActionKind.SLOW_DOWN
    )


def parse_throttle_rules(text: str) -> ThrottleRules:
    """Read limits and deferral rules from TOML; RuleFileError names the faulty entry."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleFileError(f"throttle rules are not valid TOML: {exc}") from exc
    providers = doc.get("providers")
    if not isinstance(providers, dict) or "default" not in providers:
        raise RuleFileError("throttle rules need [providers.<name>] tables including [providers.default]")
    parsed = {name: _provider(name, table) for name, table in providers.items()}
    raw_rules = doc.get("deferral_rules", [])
    if not isinstance(raw_rules, list):
        raise RuleFileError("deferral_rules must be an array of tables ([[deferral_rules]])")
    rules = tuple(_rule(index, raw, parsed) for index, raw in enumerate(raw_rules, start=1))
    return ThrottleRules(providers=MappingProxyType(parsed), deferral_rules=rules)


def _positive_int(where: str, table: Mapping[str, object], key: str, default: int | None = None) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RuleFileError(f"{where}: {key!r} must be a positive integer, got {value!r}")
    return value


def _provider(name: str, table: object) -> ProviderLimits:
    where = f"provider {name!r}"
    if not isinstance(table, dict):
        raise RuleFileError(f"{where} must be a table")
    domains = table.get("domains", [])
    if not isinstance(domains, list) or not all(isinstance(d, str) and d for d in domains):
        raise RuleFileError(f"{where}: 'domains' must be a list of domain names")
    return ProviderLimits(
        provider=name,
        domains=tuple(d.lower().rstrip(".") for d in domains),
        connections=_positive_int(where, table, "connections"),
        messages_per_connection=_positive_int(where, table, "messages_per_connection"),
        messages_per_hour=_positive_int(where, table, "messages_per_hour"),
    )


def _rule(index: int, raw: object, providers: Mapping[str, ProviderLimits]) -> DeferralRule:
    if not isinstance(raw, dict):
        raise RuleFileError(f"deferral rule #{index} must be a table")
    provider = raw.get("provider", "*")
    if provider != "*" and provider not in providers:
        raise RuleFileError(f"deferral rule #{index} ({raw.get('name')!r}): unknown provider {provider!r}")
    return compile_deferral(raw, str(provider), f"deferral rule #{index}")


def compile_deferral(raw: Mapping[str, object], provider: str, where: str) -> DeferralRule:
    """One signal table compiled for ``provider`` ("*": any); RuleFileError names what is wrong."""
    name = raw.get("name")
    where = f"{where} ({name!r})"
    if not isinstance(name, str) or not name:
        raise RuleFileError(f"{where}: 'name' is required")
    try:
        pattern = re.compile(str(raw.get("pattern", "")), re.IGNORECASE)
    except re.error as exc:
        raise RuleFileError(f"{where}: bad pattern: {exc}") from exc
    if not pattern.pattern:
        raise RuleFileError(f"{where}: 'pattern' is required")
    try:
        action = ActionKind(str(raw.get("action")))
    except ValueError:
        raise RuleFileError(f"{where}: 'action' must be 'suspend' or 'slow_down'") from None
    rate_factor = raw.get("rate_factor", 1.0)
    if not isinstance(rate_factor, int | float) or isinstance(rate_factor, bool) or not 0 < rate_factor <= 1:
        raise RuleFileError(f"{where}: 'rate_factor' must be a number in (0, 1]")
    return DeferralRule(
        name=name,
        provider=provider,
        pattern=pattern,
        threshold_per_hour=_positive_int(where, raw, "threshold_per_hour"),
        action=action,
        duration=timedelta(minutes=_positive_int(where, raw, "minutes")),
        connections=_positive_int(where, raw, "connections", 1),
        rate_factor=float(rate_factor),
    )


def throttle_rules_of(providers: Registry) -> ThrottleRules:
    """Limits and signals of every registry provider with ``[limits]``, in registry order; the
    generic file gives ``default`` and the signals that hold for any provider (tried last)."""
    limits: dict[str, ProviderLimits] = {}
    rules: list[DeferralRule] = []
    for entry in providers.providers:
        if entry.limits is None:
            continue
        name = "default" if entry.id == GENERIC else entry.id
        limits[name] = ProviderLimits(name, entry.domains + entry.mx, entry.limits.connections,
                                      entry.limits.messages_per_connection, entry.limits.messages_per_hour)
        rules.extend(compile_deferral(raw, "*" if entry.id == GENERIC else entry.id,
                                      f"{entry.file} deferral #{number}")
                     for number, raw in enumerate(entry.deferrals, 1))
    return ThrottleRules(providers=MappingProxyType(limits), deferral_rules=tuple(rules))


@cache
def load_throttle_rules() -> ThrottleRules:
    """The shipped limits and automation signals, from the provider registry."""
    return throttle_rules_of(registry())
