"""The effective configuration as a tree of sections, secrets masked (``mailcarrier config show``).

The settings are one flat object (``MAILCARRIER_*`` variables); an operator reads them by
concern. :data:`SECTIONS` places every setting in one section, by its name, and
:func:`settings_tree` gives the effective values with where each came from (set in the
environment, a ``.env`` file or an override, or the default). Secrets never leave the
process in clear: the master secret, retired tracking secrets, the IMAP password and the
database URL's password are masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mailcarrier.config import Settings

__all__ = ["MASK", "SECRETS", "SECTIONS", "ShownSetting", "section_of", "settings_tree"]

MASK = "********"
#: Settings whose value is a secret, shown masked (set or not).
SECRETS = frozenset({"secret_key", "imap_password", "tracking_retired_secrets"})
#: Section -> the name prefixes (or whole names) of its settings, first match wins.
SECTIONS: dict[str, tuple[str, ...]] = {
    "storage": ("data_dir", "database_url"),
    "security": ("secret_key", "trusted_proxies"),
    "delivery": ("hostname", "static_routes", "dkim_", "delivery_", "smtp_", "retry_", "destination_limits",
                 "source_ip"),
    "pools": ("pool_", "max_complaint_rate", "max_bounce_rate", "warmup_", "enforce_sender_hygiene"),
    "contacts": ("status_", "filtering_"),
    "inbound": ("bounce_domain", "inbound_", "imap_"),
    "tracking": ("public_url", "tracking_", "subscribe_"),
    "dns": ("hygiene_nameserver",),
    "webhooks": ("webhook_",),
    "reports": ("report_",),
}


@dataclass(frozen=True, slots=True)
class ShownSetting:
    """One setting as shown: its value (masked if secret) and whether it was set or defaulted."""

    value: str
    set: bool


def section_of(name: str) -> str:
    """The section a setting belongs to (``other`` when no prefix names it)."""
    for section, prefixes in SECTIONS.items():
        if any(name == p or (p.endswith("_") and name.startswith(p)) for p in prefixes):
            return section
    return "other"


def _shown(name: str, value: object) -> str:
    if name in SECRETS:
        return MASK if value else ""
    if name == "database_url" and isinstance(value, str) and value:
        try:
            return make_url(value).render_as_string(hide_password=True)
        except ArgumentError:
            return MASK  # not a URL we can read: it may hold anything
    if value is None:
        return ""
    if isinstance(value, Path):
        return str(value)
    return str(value)


def settings_tree(settings: Settings) -> dict[str, dict[str, ShownSetting]]:
    """Every setting, by section in :data:`SECTIONS` order, secrets masked."""
    tree: dict[str, dict[str, ShownSetting]] = {section: {} for section in [*SECTIONS, "other"]}
    explicit = settings.model_fields_set
    for name in type(settings).model_fields:
        tree[section_of(name)][name] = ShownSetting(_shown(name, getattr(settings, name)), name in explicit)
    return {section: values for section, values in tree.items() if values}
