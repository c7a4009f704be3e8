"""Replies that mean something particular coming from one provider's mail servers.

A few providers answer with wording that other servers use differently. KDDI (au) says
``550 <address>: User unknown`` of a missing mailbox but ``550 : User unknown`` when the
recipient's own filter refused the sender; NTT docomo says ``550 Unknown user`` after DATA
when the recipient's reception settings refuse the sender, the mailbox being real. The
bounce names the server that answered (``Remote-MTA``), so these readings are keyed by
the remote host: each provider's ``[[host_rule]]`` tables in the provider registry
(``data/providers/<id>.toml``, hosts matched on its ``mx`` patterns), consulted only when
the status says nothing more specific.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from mailcarrier.domain.provider_registry import ProviderEntry, Registry, name_pattern, registry
from mailcarrier.domain.rules_engine import Rule, RuleSet, compile_rule
from mailcarrier.domain.smtp_reply import SMTPStage

__all__ = ["RemoteHostRules", "compile_host_rules", "host_of", "remote_host_rules", "remote_host_rules_of"]

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


def compile_host_rules(entry: ProviderEntry) -> RuleSet:
    """A provider's ``[[host_rule]]`` tables compiled (RuleFileError when one is invalid)."""
    return RuleSet(tuple(compile_rule(dict(r.table), r.origin) for r in entry.host_rules))


def remote_host_rules_of(providers: Registry) -> RemoteHostRules:
    """The answering-host readings of every provider that has some, in registry order."""
    return RemoteHostRules(tuple(_Provider(e.id, name_pattern(e.mx), compile_host_rules(e))
                                 for e in providers.providers if e.host_rules))


@lru_cache(maxsize=1)
def remote_host_rules() -> RemoteHostRules:
    """The shipped readings, compiled on first use."""
    return remote_host_rules_of(registry())
