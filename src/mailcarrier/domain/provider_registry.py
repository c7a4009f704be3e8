"""One registry of what mailcarrier knows about each receiving provider.

Gmail, Microsoft, Yahoo/AOL, iCloud, GMX/WEB.DE, Orange and the others used to be
described in five files that disagreed on their domains and limits. Each provider now has
one file, ``domain/data/providers/<id>.toml``, and every part of the program reads it
through this module: delivery limits (:mod:`mailcarrier.delivery.limits`), the deferral
automation (:mod:`mailcarrier.domain.throttle_rules`), reason help and postmaster links
(:mod:`mailcarrier.domain.reason_help`) and the classifier (its provider-code and
provider-wording rule tiers in :mod:`mailcarrier.domain.rules_engine`, its answering-host
readings in :mod:`mailcarrier.domain.remote_hosts`). ``generic.toml`` holds what belongs
to no provider: the default limits, the generic rate-limit signal, generic blocklist
wording.

A provider file::

    [provider]
    id = "gmail"                   # the file's name; stored with throttle state, keep it stable
    name = "Google (Gmail, Workspace)"
    order = 10                     # where its rules stand among other providers' (lower first)
    domains = ["gmail.com"]        # recipient domains: shell patterns, subdomains included
    mx = ["google.com"]            # MX / answering host names: same matching
    postmaster = "https://..."     # the provider's documentation of its replies (https)

    [limits]                       # per sending IP towards the provider
    connections = 5
    messages_per_connection = 50
    messages_per_hour = 3600

    [[deferral]]                   # a throttle signal (see throttle_rules)
    name = "gmail-rate-limited"
    pattern = "4\\.7\\.28"
    threshold_per_hour = 3
    action = "slow_down"
    minutes = 90
    source = "..."

    [[rule]]                       # a rule in the rules_engine format, plus its tier
    tier = "code"                  # "code": a documented code, decides early; "wording": late
    id = "..."
    reason = "..."
    source = "..."                 # required: the public document the rule comes from

    [[host_rule]]                  # read only when the answering host is one of ``mx``
    id = "..."

This module only reads and checks the data and matches names; compiling rules is the
rule engine's job (it owns the rule format), building throttle state the automation's.
Pure: the files are package data read through ``importlib.resources``, once.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache, lru_cache
from importlib import resources
from types import MappingProxyType

from mailcarrier.domain.errors import RuleFileError

__all__ = ["GENERIC", "Limits", "ProviderEntry", "ProviderRule", "Registry", "Tier", "name_pattern",
           "names_match", "parse_provider", "registry", "registry_from_texts"]

#: The id of the file holding what belongs to no provider (and the default limits).
GENERIC = "generic"

_TOP = frozenset({"provider", "limits", "deferral", "rule", "host_rule"})
_PROVIDER_KEYS = frozenset({"id", "name", "order", "domains", "mx", "postmaster"})
_LIMIT_KEYS = ("connections", "messages_per_connection", "messages_per_hour")
_ID = re.compile(r"[a-z0-9][a-z0-9-]*\Z")


class Tier(StrEnum):
    """Where a provider's rule stands in the classifier's precedence (see classify.py)."""

    CODE = "code"  #: a documented error code: decides before the status and the stage
    WORDING = "wording"  #: the provider's wording: asked when nothing general explains a reply


@dataclass(frozen=True, slots=True)
class Limits:
    """What one sending IP may do towards a provider."""

    connections: int
    messages_per_connection: int
    messages_per_hour: int


@dataclass(frozen=True, slots=True)
class ProviderRule:
    """A ``[[rule]]`` or ``[[host_rule]]`` table as written (without ``tier``), for the rule
    engine to compile. ``origin`` names the file and the table's place in it."""

    tier: Tier | None
    table: Mapping[str, object]
    origin: str


@lru_cache(maxsize=256)
def name_pattern(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One expression matching a lowercased name against shell ``patterns``, each taken to
    cover its subdomains too (``gmail.com`` matches ``mx.gmail.com``, not ``notgmail.com``)."""
    if not patterns:
        return re.compile(r"(?!)")
    return re.compile("(?:^|\\.)(?:" + "|".join(fnmatch.translate(p.lower()) for p in patterns) + ")")


def names_match(name: str | None, patterns: tuple[str, ...]) -> bool:
    """True when the domain or host ``name`` (any case, trailing dot allowed) is covered."""
    if not name:
        return False
    return name_pattern(patterns).search(name.strip().rstrip(".").lower()) is not None


@dataclass(frozen=True, slots=True, eq=False)
class ProviderEntry:
    """One provider file, checked."""

    id: str
    name: str
    order: int
    domains: tuple[str, ...]
    mx: tuple[str, ...]
    postmaster: str | None
    limits: Limits | None
    #: ``[[deferral]]`` tables as written; :mod:`mailcarrier.domain.throttle_rules` compiles them.
    deferrals: tuple[Mapping[str, object], ...]
    rules: tuple[ProviderRule, ...]
    host_rules: tuple[ProviderRule, ...]
    file: str

    def matches_domain(self, domain: str | None) -> bool:
        return names_match(domain, self.domains)

    def matches_host(self, host: str | None) -> bool:
        return names_match(host, self.mx)

    def matches(self, domain: str | None, mx_host: str | None) -> bool:
        """The recipient's domain or the MX host that serves it is this provider's."""
        return self.matches_host(mx_host) or self.matches_domain(domain)

    def owns_name(self, name: str | None) -> bool:
        """A single name, recipient domain or MX host, is this provider's."""
        return self.matches_domain(name) or self.matches_host(name)


@dataclass(frozen=True, slots=True, eq=False)
class Registry:
    """Every provider file, in order (``generic`` last)."""

    providers: tuple[ProviderEntry, ...]

    @property
    def generic(self) -> ProviderEntry:
        return self.providers[-1]

    @property
    def default_limits(self) -> Limits:
        limits = self.generic.limits
        assert limits is not None  # checked when the registry is built
        return limits

    def get(self, provider_id: str) -> ProviderEntry:
        for entry in self.providers:
            if entry.id == provider_id:
                return entry
        raise KeyError(provider_id)

    def provider_for(self, domain: str | None, mx_host: str | None) -> ProviderEntry | None:
        """The first provider whose MX or domain patterns cover the destination, else None."""
        return next((p for p in self.providers if p.matches(domain, mx_host)), None)

    def rules(self, tier: Tier) -> tuple[ProviderRule, ...]:
        """The providers' rules of one tier: providers in order, each file's rules as written."""
        return tuple(rule for entry in self.providers for rule in entry.rules if rule.tier is tier)


def _strings(value: object, where: str, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise RuleFileError(f"{where}: '{key}' must be a list of non-empty strings")
    return tuple(v.strip().rstrip(".").lower() for v in value)


def _limits(raw: object, where: str) -> Limits | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise RuleFileError(f"{where}: [limits] must be a table")
    unknown = set(raw) - set(_LIMIT_KEYS)
    if unknown:
        raise RuleFileError(f"{where}: [limits] has unknown key(s) {sorted(unknown)}")
    values = []
    for key in _LIMIT_KEYS:
        value = raw.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RuleFileError(f"{where}: limits.{key} must be a positive integer, got {value!r}")
        values.append(value)
    return Limits(*values)


def _tables(raw: object, where: str, key: str) -> list[dict[str, object]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise RuleFileError(f"{where}: '{key}' entries are written as [[{key}]] tables")
    return raw


def _rule(raw: dict[str, object], where: str, *, tiered: bool) -> ProviderRule:
    table = dict(raw)
    tier: Tier | None = None
    rid = table.get("id")
    here = f"{where} (rule {rid!r})"
    if tiered:
        try:
            tier = Tier(str(table.pop("tier", "")))
        except ValueError:
            raise RuleFileError(f"{here}: 'tier' must be one of {[t.value for t in Tier]}") from None
    source = table.get("source")
    if not isinstance(source, str) or not source.strip():
        raise RuleFileError(f"{here}: a provider's rule needs a 'source' naming the public document "
                            "it comes from")
    return ProviderRule(tier, MappingProxyType(table), where)


def parse_provider(text: str, name: str) -> ProviderEntry:
    """Read one provider file; RuleFileError says what is wrong. ``name`` is the file name."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleFileError(f"{name}: not valid TOML: {exc}") from None
    head = doc.get("provider")
    if not isinstance(head, dict):
        raise RuleFileError(f"{name}: a provider file starts with a [provider] table")
    unknown = set(doc) - _TOP
    if unknown:
        raise RuleFileError(f"{name}: unknown table(s) {sorted(unknown)}; allowed: {sorted(_TOP)}")
    extra = set(head) - _PROVIDER_KEYS
    if extra:
        raise RuleFileError(f"{name}: [provider] has unknown key(s) {sorted(extra)}")
    pid, title, order = head.get("id"), head.get("name"), head.get("order", 0)
    if not isinstance(pid, str) or not _ID.match(pid):
        raise RuleFileError(f"{name}: provider 'id' must be lowercase letters, digits and dashes")
    if not isinstance(title, str) or not title.strip():
        raise RuleFileError(f"{name}: provider {pid!r} needs a 'name'")
    if not isinstance(order, int) or isinstance(order, bool):
        raise RuleFileError(f"{name}: 'order' must be an integer")
    postmaster = head.get("postmaster")
    if postmaster is not None and (not isinstance(postmaster, str) or not postmaster.startswith("https://")):
        raise RuleFileError(f"{name}: 'postmaster' must be an https link to the provider's documentation")
    domains, mx = _strings(head.get("domains"), name, "domains"), _strings(head.get("mx"), name, "mx")
    host_rules = tuple(_rule(t, f"{name}#host_rule{i}", tiered=False)
                       for i, t in enumerate(_tables(doc.get("host_rule"), name, "host_rule"), 1))
    if host_rules and not mx:
        raise RuleFileError(f"{name}: [[host_rule]] tables are read by the answering host: list 'mx'")
    deferrals = tuple(MappingProxyType(t) for t in _tables(doc.get("deferral"), name, "deferral"))
    limits = _limits(doc.get("limits"), name)
    if deferrals and limits is None and pid != GENERIC:
        raise RuleFileError(f"{name}: [[deferral]] signals count per provider: give it [limits]")
    return ProviderEntry(
        id=pid, name=title.strip(), order=order, domains=domains, mx=mx,
        postmaster=postmaster, limits=limits, deferrals=deferrals,
        rules=tuple(_rule(t, f"{name}#{i}", tiered=True)
                    for i, t in enumerate(_tables(doc.get("rule"), name, "rule"), 1)),
        host_rules=host_rules, file=name)


def registry_from_texts(files: Iterable[tuple[str, str]]) -> Registry:
    """A registry from (file name, text) pairs; file names are ``<id>.toml``."""
    entries = []
    for file_name, text in files:
        entry = parse_provider(text, f"providers/{file_name}")
        if file_name != f"{entry.id}.toml":
            raise RuleFileError(f"providers/{file_name}: holds provider {entry.id!r}; "
                                f"name the file {entry.id}.toml")
        entries.append(entry)
    generic = [e for e in entries if e.id == GENERIC]
    if not generic or generic[0].limits is None:
        raise RuleFileError("providers: generic.toml with the default [limits] is required")
    ordered = sorted((e for e in entries if e.id != GENERIC), key=lambda e: (e.order, e.id))
    if generic[0].domains or generic[0].mx:
        raise RuleFileError("providers/generic.toml: belongs to no provider, so it lists no domains or mx")
    return Registry((*ordered, generic[0]))


@cache
def registry() -> Registry:
    """The shipped registry, read once."""
    folder = resources.files("mailcarrier.domain") / "data" / "providers"
    files = sorted((f.name, f.read_text(encoding="utf-8")) for f in folder.iterdir()
                   if f.name.endswith(".toml"))
    return registry_from_texts(files)
