"""Connection limits per destination, from the provider registry plus operator overrides.

Receiving providers judge a sender by how many connections it opens and how many
messages each carries, so limits are data: each provider's ``[limits]`` in the provider
registry (``domain/data/providers/<id>.toml``, the default in ``generic.toml``), matched
on the recipient domain or the MX host. The ``destination_limits`` setting overrides or
extends them (``pattern=CONNECTIONSxMESSAGES``) without editing shipped files.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from functools import lru_cache

from mailcarrier.config_values import DestinationLimit
from mailcarrier.delivery.smtp_sessions import ConnectionLimits
from mailcarrier.domain.provider_registry import GENERIC, Limits, registry

__all__ = ["DestinationLimits", "LimitRule", "load_limits", "override_rules"]

@dataclass(frozen=True, slots=True)
class LimitRule:
    name: str
    domains: tuple[str, ...]
    mx: tuple[str, ...]
    limits: ConnectionLimits

    def matches(self, domain: str, mx_host: str) -> bool:
        return (any(fnmatch.fnmatchcase(domain, p) for p in self.domains)
                or any(fnmatch.fnmatchcase(mx_host, p) for p in self.mx))


@dataclass(frozen=True, slots=True)
class DestinationLimits:
    rules: tuple[LimitRule, ...]
    default: ConnectionLimits
    _cache: dict[tuple[str, str], tuple[str, ConnectionLimits]] = field(
        default_factory=dict, compare=False, repr=False)

    def for_destination(self, domain: str, mx_host: str) -> tuple[str, ConnectionLimits]:
        """The (rule name, limits) for a recipient domain reached through ``mx_host``."""
        key = (domain.lower(), mx_host.lower().rstrip("."))
        found = self._cache.get(key)
        if found is None:
            found = next(((rule.name, rule.limits) for rule in self.rules if rule.matches(*key)),
                         ("default", self.default))
            if len(self._cache) < 100_000:  # patterns are few, domains many: remember the answer
                self._cache[key] = found
        return found


def _limits(limits: Limits) -> ConnectionLimits:
    return ConnectionLimits(limits.connections, limits.messages_per_connection)


def _with_subdomains(patterns: tuple[str, ...]) -> tuple[str, ...]:
    """Registry patterns cover their subdomains ("google.com" is also "*.google.com")."""
    return tuple(q for p in patterns for q in (p, f"*.{p}"))


@lru_cache(maxsize=1)
def _shipped() -> DestinationLimits:
    providers = registry()
    rules = tuple(
        LimitRule(entry.id, _with_subdomains(entry.domains), _with_subdomains(entry.mx),
                  _limits(entry.limits))
        for entry in providers.providers if entry.limits is not None and entry.id != GENERIC
    )
    return DestinationLimits(rules, _limits(providers.default_limits))


def override_rules(overrides: tuple[DestinationLimit, ...]) -> tuple[LimitRule, ...]:
    """The operator's ``destination_limits`` (parsed at load) as rules matched first."""
    return tuple(LimitRule(f"setting:{o.pattern}", (o.pattern,), (o.pattern,),
                           ConnectionLimits(o.connections, o.messages)) for o in overrides)


def load_limits(overrides: tuple[DestinationLimit, ...] = ()) -> DestinationLimits:
    """The shipped table with the operator's overrides matched first."""
    shipped = _shipped()
    return DestinationLimits(override_rules(overrides) + shipped.rules, shipped.default)
