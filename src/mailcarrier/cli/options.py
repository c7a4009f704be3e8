"""Options and output formats shared by the ``mailcarrier`` commands.

One spelling per idea across every command: ``--account`` (default from
``MAILCARRIER_ACCOUNT``), ``--database-url``, ``--format``/``-f`` with the words
text, json, jsonl, table and pdf, ``--once`` for "do what is due, then exit". Kept free of
heavy imports: the top-level help and ``classify`` import this module.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Callable
from datetime import date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

import typer

if TYPE_CHECKING:
    from mailcarrier.config import Settings
    from mailcarrier.config_values import HostPort

__all__ = [
    "ACCOUNT_ENV",
    "DB_OPTION",
    "NAMESERVER_OPTION",
    "JsonFormat",
    "StreamFormat",
    "TableFormat",
    "TextFormat",
    "account_option",
    "cli_settings",
    "format_option",
    "nameserver_flag",
    "next_step",
    "parsed_flag",
    "to_json",
]

_T = TypeVar("_T")
ACCOUNT_ENV = "MAILCARRIER_ACCOUNT"
DB_OPTION = typer.Option(None, "--database-url", help="Overrides MAILCARRIER_DATABASE_URL.")
NAMESERVER_OPTION = typer.Option(None, "--nameserver", help=(
    "Resolver ADDRESS[:PORT] instead of the system's (IPv6: [ADDRESS]:PORT)."))


def account_option(default: Any = "default", help_text: str = "Account slug.") -> Any:
    """``--account``, read from MAILCARRIER_ACCOUNT when the flag is not given.

    Typed ``Any`` like ``typer.Option`` itself: it stands as a parameter's default value.
    """
    return typer.Option(default, "--account", envvar=ACCOUNT_ENV, show_envvar=True, help=help_text)


def cli_settings(database_url: str | None = None) -> Settings:
    """The settings of a command, ``--database-url`` (when given) over MAILCARRIER_DATABASE_URL."""
    from mailcarrier.config import load_settings  # noqa: PLC0415 (pydantic stays out of the start-up imports)

    return load_settings(**({"database_url": database_url} if database_url else {}))


def parsed_flag(flag: str, value: str, parse: Callable[[str], _T]) -> _T:
    """A flag's value read by the parser of its kind (``config_values``, the one its setting
    uses); a wrong value is a usage error (exit 2) naming the flag, the entry and the form."""
    try:
        return parse(value)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=flag) from None


def nameserver_flag(value: str | None) -> HostPort | None:
    """``--nameserver`` read like MAILCARRIER_HYGIENE_NAMESERVER (None: the system's resolver)."""
    from mailcarrier.config_values import parse_nameserver  # noqa: PLC0415 (start-up imports)

    return None if value is None else parsed_flag("--nameserver", value, parse_nameserver)


# The vocabulary, one enumeration per set of formats a command supports: Typer shows and
# checks the choices from the enumeration, so each command offers only what it can print.

class TableFormat(StrEnum):
    """A Rich table for people, JSON for programs."""

    TABLE = "table"
    JSON = "json"


class StreamFormat(StrEnum):
    """A Rich table for people, one JSON object per line for streams of records."""

    TABLE = "table"
    JSONL = "jsonl"


class TextFormat(StrEnum):
    """Plain text for people, JSON for programs, PDF for a document to hand on."""

    TEXT = "text"
    JSON = "json"
    PDF = "pdf"


class JsonFormat(StrEnum):
    """Plain text for people, JSON for programs."""

    TEXT = "text"
    JSON = "json"


def format_option(default: StrEnum, help_text: str = "") -> Any:
    """``--format``/``-f`` with the choices of ``default``'s enumeration."""
    choices = ", ".join(member.value for member in type(default))
    return typer.Option(default, "--format", "-f", help=help_text or f"Output format: {choices}.")


def to_json(value: Any) -> str:
    """``value`` (dataclasses, lists, dicts) as indented JSON; dates in ISO 8601, keys as strings."""
    def plain(item: Any) -> Any:
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            return {f.name: plain(getattr(item, f.name)) for f in dataclasses.fields(item)}
        if isinstance(item, dict):
            return {str(k): plain(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [plain(v) for v in item]
        if isinstance(item, datetime | date):
            return item.isoformat()
        return item
    return json.dumps(plain(value), indent=2, ensure_ascii=False)


def next_step(*words: str, account: str | None = None, database_url: str | None = None) -> str:
    """A command line to run next, with the flags it needs to reach the same data.

    A hint such as ``mailcarrier mailings send 3`` fails when the mailing was created with
    ``--account shop`` or ``--database-url ...``: the hint carries them along, quoted for a
    POSIX shell. A password in the database URL is masked: the hint is printed, and the
    terminal or its log is no place for it.
    """
    parts = ["mailcarrier", *words]
    if account is not None:
        parts += ["--account", account]
    if database_url:
        parts += ["--database-url", _mask_password(database_url)]
    return shlex.join(parts)


def _mask_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if not sep or not at or not colon:
        return url
    return f"{scheme}://{user}:***@{host}"


def public_url_warning(public_url: str) -> str | None:
    """The start-up warning for a ``public_url`` recipients cannot use (None when it is fine).

    Every message's unsubscribe link and ``List-Unsubscribe`` header start with it; plain http
    in particular breaks RFC 8058 one-click unsubscribe, which mailbox providers require.
    """
    from mailcarrier.domain.public_url import public_url_problem  # noqa: PLC0415 - light, on use

    problem = public_url_problem(public_url)
    if problem is None:
        return None
    return (f"warning: public_url: {problem}. Unsubscribe and tracked links in the messages will not "
            "work for recipients; set MAILCARRIER_PUBLIC_URL to the https address of `mailcarrier serve`.")
