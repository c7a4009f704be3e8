"""Replies that mean something particular coming from one provider's mail servers.

A few providers answer with wording that other servers use differently. KDDI (au) says
``550 <address>: User unknown`` of a missing mailbox but ``550 : User unknown`` when the
recipient's own filter refused the sender; NTT docomo says ``550 Unknown user`` after DATA
when the recipient's reception settings refuse the sender, the mailbox being real. The
bounce names the server that answered (``Remote-MTA``), so these readings are keyed by
the remote host, as data (``rules/remote_hosts.toml``), and consulted only when the
status says nothing more specific.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from mailcarrier.domain.errors import RuleFileError
from mailcarrier.domain.rules_engine import Rule, RuleSet, compile_rule
from mailcarrier.domain.smtp_reply import SMTPStage

__all__ = ["RemoteHostRules", "compile_remote_hosts", "host_of", "remote_host_rules"]

_HOST = re.compile(r"(?:dns\s*;\s*)?\[?([a-z0-9][a-z0-9.-]*[a-z0-9])\]?", re.IGNORECASE)


def host_of(remote_mta: str | None) -> str:
    """The host name of a ``Remote-MTA`` value (``dns; mx.example.jp (...)``), lowercased."""
    if not remote_mta:
        return ""
    found = _HOST.match(remote_mta.strip())
    return found.group(1).lower().rstrip(".") if found else ""


@dataclass(frozen=True, slots=True, eq=False)
class _Provider:
    id: str
    hosts: re.Pattern[str]
    rules: RuleSet


@dataclass(frozen=True, slots=True, eq=False)
class RemoteHostRules:
    """Provider readings keyed by the answering host."""

    providers: tuple[_Provider, ...]

    def match(self, host: str, status: str | None, command: SMTPStage, text: str) -> Rule | None:
        """The first rule of the provider owning ``host`` that fits the reply, else None."""
        if not host:
            return None
        for provider in self.providers:
            if provider.hosts.search(host):
                return provider.rules.first_match(None, status or "", command, text)
        return None


def compile_remote_hosts(data: str, where: str) -> RemoteHostRules:
    """Compile a remote_hosts.toml-layout text; RuleFileError when it is invalid."""
    try:
        doc = tomllib.loads(data)
    except tomllib.TOMLDecodeError as exc:
        raise RuleFileError(f"{where}: not valid TOML: {exc}") from None
    raws = doc.get("provider", [])
    if not isinstance(raws, list):
        raise RuleFileError(f"{where}: providers are written as [[provider]] tables")
    providers = []
    for number, raw in enumerate(raws, 1):
        if not isinstance(raw, dict):
            raise RuleFileError(f"{where}#{number}: a provider is a [[provider]] table")
        pid, hosts, rules = raw.get("id"), raw.get("hosts"), raw.get("rule")
        here = f"{where}#{number} ({pid!r})"
        if not isinstance(pid, str) or not isinstance(hosts, list) or not hosts:
            raise RuleFileError(f"{here}: a provider needs an 'id' and a non-empty 'hosts' list")
        if not isinstance(rules, list) or not rules:
            raise RuleFileError(f"{here}: a provider needs [[provider.rule]] tables")
        try:
            pattern = re.compile("|".join(f"(?:{h})" for h in hosts))
        except re.error as exc:
            raise RuleFileError(f"{here}: bad host pattern: {exc}") from None
        compiled = tuple(compile_rule(r, f"{here} rule {i}") for i, r in enumerate(rules, 1))
        providers.append(_Provider(pid, pattern, RuleSet(compiled)))
    return RemoteHostRules(tuple(providers))


@lru_cache(maxsize=1)
def remote_host_rules() -> RemoteHostRules:
    """The shipped table, compiled on first use."""
    data = (resources.files("mailcarrier.domain") / "rules" / "remote_hosts.toml").read_text(encoding="utf-8")
    return compile_remote_hosts(data, "remote_hosts.toml")
