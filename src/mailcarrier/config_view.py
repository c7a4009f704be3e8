"""The effective configuration as shown to an operator (``mailcarrier config show``).

Every leaf of the settings tree, by section, with its value in the text form its variable
takes, the variable's name, and where the value came from (an override, the environment,
``.env``, the config file, or the default). Secrets never leave the process in clear: the
leaves marked secret (the master secret, retired tracking secrets, the IMAP password) show
only whether they are set, and the database URL's password is masked.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mailcarrier.config import LEAVES, Leaf, Origin, Settings
from mailcarrier.config_values import show_value

__all__ = ["MASK", "ShownSetting", "mask_url", "settings_tree"]

MASK = "********"


@dataclass(frozen=True, slots=True)
class ShownSetting:
    """One leaf as shown: its value (masked if secret), its variable, where the value came from."""


    value: str
    env: str
    origin: Origin
    #: The file it was read from (``.env`` or the config file), else "".
    file: str

    @property
    def set(self) -> bool:
        return self.origin is not Origin.DEFAULT


def mask_url(url: str) -> str:
    """A database URL with its password masked (all of it when it cannot be read as a URL)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return MASK  # not a URL we can read: it may hold anything


def _shown(leaf: Leaf, value: object) -> str:
    if leaf.secret:
        given = value.get_secret_value() if isinstance(value, SecretStr) else value
        return MASK if given else ""
    if leaf.path == "storage.database_url" and isinstance(value, str) and value:
        return mask_url(value)
    return show_value(value)


def settings_tree(settings: Settings) -> dict[str, dict[str, ShownSetting]]:
    """Every leaf, by section (in the tree's order), secrets masked."""
    tree: dict[str, dict[str, ShownSetting]] = {}
    for flat, leaf in LEAVES.items():
        source = settings.source(flat)
        tree.setdefault(leaf.section, {})[leaf.name] = ShownSetting(
            _shown(leaf, settings.value(flat)), leaf.env, source.origin, source.file)
    return tree
