"""API key scopes: a closed set, so a typo or a shell-expanded ``*`` is refused instead of stored.

A scope is ``<resource>:read``, ``<resource>:write`` or ``<resource>:*`` (both), or ``*``
(everything). ``write`` implies ``read`` on the same resource. Before this enum a key could
be issued with any string: ``--scope *`` unquoted in a shell became the scope ``a.csv``,
which granted nothing and said nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from mailcarrier.domain.errors import MailcarrierError

__all__ = ["Scope", "UnknownScopeError", "grants", "parse_scopes"]


class UnknownScopeError(MailcarrierError, ValueError):
    """A scope name that is not one of :class:`Scope`."""


class Scope(StrEnum):
    """Every scope an API key may hold."""

    ALL = "*"
    ACCOUNT_READ = "account:read"
    ACCOUNT_WRITE = "account:write"
    ACCOUNT_ALL = "account:*"
    AUDIENCES_READ = "audiences:read"
    AUDIENCES_WRITE = "audiences:write"
    AUDIENCES_ALL = "audiences:*"
    BOUNCES_READ = "bounces:read"
    BOUNCES_WRITE = "bounces:write"
    BOUNCES_ALL = "bounces:*"
    CONTACTS_READ = "contacts:read"
    CONTACTS_WRITE = "contacts:write"
    CONTACTS_ALL = "contacts:*"
    DELIVERIES_READ = "deliveries:read"
    DELIVERIES_WRITE = "deliveries:write"
    DELIVERIES_ALL = "deliveries:*"
    EVIDENCE_READ = "evidence:read"
    EVIDENCE_WRITE = "evidence:write"
    EVIDENCE_ALL = "evidence:*"
    MAILINGS_READ = "mailings:read"
    MAILINGS_WRITE = "mailings:write"
    MAILINGS_ALL = "mailings:*"
    POOLS_READ = "pools:read"
    POOLS_WRITE = "pools:write"
    POOLS_ALL = "pools:*"
    REPORTS_READ = "reports:read"
    REPORTS_WRITE = "reports:write"
    REPORTS_ALL = "reports:*"
    WEBHOOKS_READ = "webhooks:read"
    WEBHOOKS_WRITE = "webhooks:write"
    WEBHOOKS_ALL = "webhooks:*"


def parse_scopes(values: Iterable[str]) -> frozenset[Scope]:
    """The scopes named by ``values`` (blank entries skipped); UnknownScopeError for any other name."""
    found: set[Scope] = set()
    unknown: list[str] = []
    for value in values:
        name = value.strip()
        if not name:
            continue
        try:
            found.add(Scope(name))
        except ValueError:
            unknown.append(name)
    if unknown:
        raise UnknownScopeError(
            f"unknown scope(s): {', '.join(repr(u[:40]) for u in unknown[:5])}; choose among "
            f"{', '.join(s.value for s in Scope)} (quote '*' in a shell)")
    return frozenset(found)


def grants(granted: Iterable[str], needed: Scope) -> bool:
    """Whether scopes ``granted`` cover ``needed``; names outside the enum grant nothing."""
    held = set(granted)
    if Scope.ALL in held or needed.value in held:
        return True
    resource, _, action = needed.value.partition(":")
    if f"{resource}:*" in held:
        return True
    return action == "read" and f"{resource}:write" in held
