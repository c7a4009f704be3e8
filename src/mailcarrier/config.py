"""Settings: a tree of sections, read once at start-up from overrides, the environment, a
``.env`` file and an optional TOML config file, parsed and validated as they are read.

One :class:`Settings` object is built at start-up and passed explicitly to the layers that
need it; nothing reads the environment at import time. Code reads ``settings.inbound.port``
or ``settings.delivery.retry_schedule`` (a tuple of hours, not the text it came from).

Operators keep the flat names they know: every leaf answers to ``MAILCARRIER_<FLAT NAME>``
(:data:`LEAVES`), in the environment and in ``.env``; a config file (``MAILCARRIER_CONFIG``
or ``mailcarrier --config``) has one table per section, ``[inbound] port = 2526``. Sources,
first wins: explicit overrides (CLI flags, by flat name), the environment, ``.env``, the
config file, the defaults; where each value came from is kept (``mailcarrier config show``).

A wrong value stops the load with :class:`SettingsError`, one line per problem naming the
variable (or file entry), the bad entry and the expected form. An unknown name in ``.env`` or
in the config file is an error, and so is an environment variable that looks like a
misspelt setting (``MAILCARRIER_INBOUND_PROT``); other ``MAILCARRIER_*`` variables are left
alone, because the prefix is shared (``MAILCARRIER_ACCOUNT``, the test harness's).
"""

from __future__ import annotations

import difflib
import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError
from pydantic.fields import FieldInfo

from mailcarrier.config_sections import (
    SECTIONS,
    ApiSettings,
    ContactSettings,
    DeliverySettings,
    DnsSettings,
    ImapSettings,
    InboundSettings,
    PoolSettings,
    ReportSettings,
    SecuritySettings,
    StorageSettings,
    TrackingSettings,
    WebhookSettings,
)
from mailcarrier.config_values import ValueFormatError
from mailcarrier.domain.errors import ConfigurationError

__all__ = ["CONFIG_ENV", "ENV_PREFIX", "LEAVES", "Leaf", "Origin", "Settings", "SettingsError", "Source",
           "load_settings", "read_settings"]

ENV_PREFIX = "MAILCARRIER_"
#: The variable naming the TOML config file (``mailcarrier --config`` sets it).
CONFIG_ENV = "MAILCARRIER_CONFIG"


class SettingsError(ConfigurationError):
    """The settings could not be loaded: one line per wrong value or unknown name."""


@dataclass(frozen=True, slots=True)
class Leaf:
    """One setting: where it sits in the tree and the flat name operators use."""

    section: str
    name: str
    flat: str
    field: FieldInfo

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.flat.upper()

    @property
    def path(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def secret(self) -> bool:
        extra = self.field.json_schema_extra
        return isinstance(extra, dict) and extra.get("secret") is True


#: Every setting by its flat name (``inbound_port``), in section order.
LEAVES: Mapping[str, Leaf] = {
    str(info.alias): Leaf(section, name, str(info.alias), info)
    for section, model in SECTIONS.items() for name, info in model.model_fields.items()
}
_BY_ENV = {leaf.env: leaf for leaf in LEAVES.values()}


class Origin(StrEnum):
    """Where a setting's value came from, lowest precedence first."""

    DEFAULT = "default"
    FILE = "file"
    DOTENV = ".env"
    ENV = "env"
    OVERRIDE = "override"


@dataclass(frozen=True, slots=True)
class Source:
    """A value's origin, the name it was given there (a variable, a file entry, an override)
    and the file it was read from (``.env`` or the config file)."""

    origin: Origin
    where: str
    file: str = ""


class Settings(BaseModel):
    """Everything an operator can configure, by section (:data:`SECTIONS`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    storage: StorageSettings = Field(default_factory=StorageSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    pools: PoolSettings = Field(default_factory=PoolSettings)
    contacts: ContactSettings = Field(default_factory=ContactSettings)
    inbound: InboundSettings = Field(default_factory=InboundSettings)
    imap: ImapSettings = Field(default_factory=ImapSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    dns: DnsSettings = Field(default_factory=DnsSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    reports: ReportSettings = Field(default_factory=ReportSettings)

    _sources: dict[str, Source] = PrivateAttr(default_factory=dict)

    @classmethod
    def of(cls, **values: object) -> Settings:
        """Settings from these values (flat names) and the defaults, reading nothing else
        (tests, embedding)."""
        return _build([_Layer(Origin.OVERRIDE, {flat: (value, flat) for flat, value in values.items()})])

    def value(self, flat: str) -> object:
        """A leaf's value by its flat name (``inbound_port``)."""
        leaf = LEAVES[flat]
        return getattr(getattr(self, leaf.section), leaf.name)

    def source(self, flat: str) -> Source:
        """Where a leaf's value came from (the default unless a source set it)."""
        return self._sources.get(flat, Source(Origin.DEFAULT, "default"))

    def with_values(self, **values: object) -> Settings:
        """A copy with some leaves (flat names) replaced and validated: an account's thresholds."""
        sections: dict[str, dict[str, object]] = {}
        for flat, value in values.items():
            leaf = _leaf(flat, "setting")
            sections.setdefault(leaf.section, dict(getattr(self, leaf.section)))[leaf.name] = value
        changed: dict[str, object] = {}
        for name, fields in sections.items():
            try:
                changed[name] = SECTIONS[name].model_validate(fields)
            except ValidationError as error:
                raise SettingsError("; ".join(f"{name}.{'.'.join(str(p) for p in e['loc'])}: "
                                              f"{str(e['msg']).removeprefix('Value error, ')}"
                                              for e in error.errors())) from None
        copy = self.model_copy(update=changed)
        copy._sources = {**self._sources, **{flat: Source(Origin.OVERRIDE, flat) for flat in values}}
        return copy

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to the embedded SQLite file."""
        if self.storage.database_url:
            return self.storage.database_url
        return f"sqlite:///{(self.storage.data_dir / 'mailcarrier.db').resolve()}"

    def resolved_secret(self) -> bytes:
        """The master secret; generated and stored (mode 0600) on first use."""
        if self.security.secret_key is not None and self.security.secret_key.get_secret_value():
            return self.security.secret_key.get_secret_value().encode()
        data_dir = self.storage.data_dir
        path = data_dir / "secret.key"
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(48), encoding="ascii")
        return path.read_text(encoding="ascii").strip().encode()


@dataclass(frozen=True, slots=True)
class _Layer:
    """One source's values: flat name -> (raw value, the name it was given there)."""

    origin: Origin
    values: dict[str, tuple[object, str]]
    file: str = ""


def _leaf(flat: str, what: str) -> Leaf:
    leaf = LEAVES.get(flat.lower())
    if leaf is None:
        close = difflib.get_close_matches(flat.lower(), LEAVES, n=1, cutoff=0.8)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise SettingsError(f"{flat!r} is not a {what}{hint}")
    return leaf


def _environment_layer(environ: Mapping[str, str], origin: Origin, *, strict: bool, file: str = "") -> _Layer:
    """``MAILCARRIER_*`` names of the environment or ``.env``. ``strict``: every one must be
    a setting (``.env``); else only names that look like a misspelt setting are refused."""
    values: dict[str, tuple[object, str]] = {}
    problems: list[str] = []
    for name, value in environ.items():
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper == CONFIG_ENV:
            continue
        leaf = _BY_ENV.get(upper)
        if leaf is not None:
            values[leaf.flat] = (value, f"{upper} (in {file})" if file else upper)
            continue
        close = difflib.get_close_matches(upper, _BY_ENV, n=1, cutoff=0.85)
        if strict or close:
            hint = f"; did you mean {close[0]}?" if close else ""
            problems.append(f"{upper}{f' (in {file})' if file else ''} is not a setting{hint}")
    if problems:
        raise SettingsError("\n".join(problems))
    return _Layer(origin, values, file)


def _file_layer(path: Path) -> _Layer:
    """A TOML file with one table per section, leaves by their name in the section."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SettingsError(f"config file {path}: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SettingsError(f"config file {path} is not valid TOML: {error}") from None
    values: dict[str, tuple[object, str]] = {}
    problems: list[str] = []
    for section, table in document.items():
        model = SECTIONS.get(section)
        if model is None or not isinstance(table, dict):
            problems.append(f"config file {path}: [{section}] is not a section; the sections are "
                            f"{', '.join(SECTIONS)}")
            continue
        for name, value in table.items():
            info = model.model_fields.get(name)
            if info is None:
                close = difflib.get_close_matches(name, model.model_fields, n=1, cutoff=0.7)
                hint = f"; did you mean {close[0]}?" if close else ""
                problems.append(f"config file {path}: [{section}] {name} is not a setting{hint}")
                continue
            values[str(info.alias)] = (value, f"[{section}] {name} (in {path})")
    if problems:
        raise SettingsError("\n".join(problems))
    return _Layer(Origin.FILE, values, str(path))


def _explain(error: dict[str, Any], shown: Mapping[str, tuple[object, str]]) -> str:
    loc = error["loc"]
    flat = str(loc[1]) if len(loc) > 1 else None
    if flat is None or flat not in LEAVES:
        return f"[{loc[0]}]: {str(error['msg']).removeprefix('Value error, ')}"
    value, where = shown.get(flat, (None, flat))
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, ValueFormatError):
        return f"{where}: {cause}"
    given = "" if LEAVES[flat].secret else f"={value!r}"
    return f"{where}{given}: {str(error['msg']).removeprefix('Value error, ')}"


def _build(layers: list[_Layer]) -> Settings:
    """Merge the layers (later ones win), validate, and remember each value's source."""
    chosen: dict[str, tuple[object, str]] = {}
    sources: dict[str, Source] = {}
    for layer in layers:
        for flat, (given, where) in layer.values.items():
            leaf = _leaf(flat, "setting")
            unset = layer.origin in (Origin.ENV, Origin.DOTENV) and given == "" and leaf.field.default is None
            chosen[leaf.flat] = (None if unset else given, where)  # an empty variable unsets an optional one
            sources[leaf.flat] = Source(layer.origin, where, layer.file)
    tree: dict[str, dict[str, object]] = {}
    for flat, (value, _) in chosen.items():
        tree.setdefault(LEAVES[flat].section, {})[flat] = value
    try:
        settings = Settings.model_validate(tree)
    except ValidationError as error:
        problems = [_explain(dict(e), chosen) for e in error.errors(include_input=False)]
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems)) from None
    settings._sources = sources
    return settings


def load_settings(**overrides: object) -> Settings:
    """The settings of this process: ``overrides`` (flat names, e.g. from CLI flags) over the
    environment over ``./.env`` over the config file (``$MAILCARRIER_CONFIG``) over the
    defaults. Raises :class:`SettingsError` naming every wrong value."""
    return read_settings(os.environ, Path(".env"), None, overrides)


def read_settings(environ: Mapping[str, str], env_file: Path | None, config_file: Path | None,
                  overrides: Mapping[str, object]) -> Settings:
    """:func:`load_settings` from explicit sources: ``config_file`` (else ``environ``'s
    ``MAILCARRIER_CONFIG``) under ``env_file`` under ``environ`` under ``overrides``."""
    layers: list[_Layer] = []
    if config_file is None and environ.get(CONFIG_ENV):
        config_file = Path(environ[CONFIG_ENV])
    if config_file is not None:
        layers.append(_file_layer(config_file))
    if env_file is not None and env_file.is_file():
        dotenv = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
        layers.append(_environment_layer(dotenv, Origin.DOTENV, strict=True, file=str(env_file)))
    layers.append(_environment_layer(environ, Origin.ENV, strict=False))
    layers.append(_Layer(Origin.OVERRIDE, {flat: (value, f"{flat} (override)")
                                           for flat, value in overrides.items()}))
    return _build(layers)
