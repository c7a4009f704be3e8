"""Connection limits per destination, from the shipped provider table plus operator overrides.

Receiving providers judge a sender by how many connections it opens and how many
messages each carries, so limits are data (``data/destination_limits.toml``), matched on
the recipient domain or the MX host. The ``destination_limits`` setting overrides or
extends the table (``pattern=CONNECTIONSxMESSAGES``) without editing shipped files.
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from mailcarrier.delivery.smtp_sessions import ConnectionLimits
from mailcarrier.domain.errors import ConfigurationError

__all__ = ["DestinationLimits", "LimitRule", "load_limits", "parse_overrides"]

_TABLE = Path(__file__).parent / "data" / "destination_limits.toml"


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


def _limits(entry: dict[str, object], where: str) -> ConnectionLimits:
    try:
        return ConnectionLimits(int(entry["connections"]),  # type: ignore[call-overload]
                                int(entry["messages_per_connection"]))  # type: ignore[call-overload]
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigurationError(f"{where}: needs connections and messages_per_connection >= 1") from error


@lru_cache(maxsize=1)
def _shipped() -> DestinationLimits:
    data = tomllib.loads(_TABLE.read_text(encoding="utf-8"))
    rules = tuple(
        LimitRule(str(entry["name"]), tuple(entry.get("domains", ())), tuple(entry.get("mx", ())),
                  _limits(entry, f"destination {entry.get('name')}"))
        for entry in data.get("destination", ())
    )
    return DestinationLimits(rules, _limits(data["default"], "default"))


def parse_overrides(text: str) -> tuple[LimitRule, ...]:
    """Read ``pattern=CxM`` entries (the destination_limits setting)."""
    rules: list[LimitRule] = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        pattern, eq, value = entry.partition("=")
        conns, x, msgs = value.lower().partition("x")
        numbers = conns.strip().isdigit() and msgs.strip().isdigit()
        if not eq or not pattern.strip() or not x or not numbers:
            raise ConfigurationError(f"destination limit {entry!r} is not 'pattern=CONNECTIONSxMESSAGES'")
        try:
            limits = ConnectionLimits(int(conns), int(msgs))
        except ValueError as error:
            raise ConfigurationError(f"destination limit {entry!r}: {error}") from error
        name = pattern.strip().lower()
        rules.append(LimitRule(f"setting:{name}", (name,), (name,), limits))
    return tuple(rules)


def load_limits(overrides: str = "") -> DestinationLimits:
    """The shipped table with the operator's overrides matched first."""
    shipped = _shipped()
    return DestinationLimits(parse_overrides(overrides) + shipped.rules, shipped.default)
