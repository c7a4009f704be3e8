"""The kinds of structured setting values: one parser per kind, used by every setting and flag.

An operator writes lists, routes and limits as text (``MAILCARRIER_STATIC_ROUTES='*.test=
127.0.0.1:2525'``, ``--nameserver 127.0.0.1:5353``). Each kind of value is read here, once,
at load, into a typed value; a wrong entry is refused with the entry and the expected form,
before anything runs, instead of surfacing later in whichever code first splits the string.
``str()`` of each value is its canonical text, which the parser reads back to the same value
(``mailcarrier config show`` prints it).

The ``Annotated`` types at the end plug a parser into a pydantic field: they accept the text
(environment, ``.env``), a list of entries (a TOML array) or the parsed value itself.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from pydantic import PlainSerializer, PlainValidator

from mailcarrier.domain.errors import ConfigurationError

__all__ = [
    "AcceptAddresses",
    "DestinationLimit",
    "DestinationLimits",
    "HostOrNetwork",
    "HostPort",
    "InternalHosts",
    "IpNetwork",
    "Networks",
    "OptionalNameserver",
    "RetiredSecret",
    "RetiredSecrets",
    "RetrySchedule",
    "SourceAddress",
    "StaticRoute",
    "StaticRoutes",
    "ValueFormatError",
    "parse_accept_address",
    "parse_destination_limit",
    "parse_host_or_network",
    "parse_host_port",
    "parse_list",
    "parse_nameserver",
    "parse_network",
    "parse_retired_secret",
    "parse_retry_schedule",
    "parse_source_address",
    "parse_static_route",
    "show_value",
]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: A host name (lower case, no trailing dot) or an address/CIDR network.
HostOrNetwork = str | IpNetwork
_T = TypeVar("_T")


class ValueFormatError(ConfigurationError):
    """A setting or flag value does not have the expected form. The message names the entry,
    what is wrong with it and the form expected (the loader adds the variable's name)."""

    def __init__(self, entry: str, form: str, why: str) -> None:
        super().__init__(f"{entry!r}: {why}; expected {form}")
        self.entry, self.why, self.form = entry, why, form


_refuse = ValueFormatError


def parse_list(text: str, parse_one: Callable[[str], _T]) -> tuple[_T, ...]:
    """Comma-separated entries, blanks around them and empty entries ignored."""
    return tuple(parse_one(part.strip()) for part in text.split(",") if part.strip())


# --- hosts and ports ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostPort:
    """A host (name or address, IPv6 without brackets) and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


_HOST_PORT = "HOST or HOST:PORT (IPv6: [ADDRESS]:PORT), e.g. 127.0.0.1:5353"


def _port(entry: str, text: str, form: str) -> int:
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 65536:
        raise _refuse(entry, form, f"port {text!r} is not a number from 1 to 65535")
    return int(text)


def parse_host_port(text: str, default_port: int) -> HostPort:
    """``HOST``, ``HOST:PORT``, ``[IPV6]:PORT`` or a bare IPv6 address (port ``default_port``)."""
    entry = text.strip()
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise _refuse(entry, _HOST_PORT, "unclosed or misplaced '[...]'")
        port = _port(entry, rest[1:], _HOST_PORT) if rest else default_port
    elif entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
        port = _port(entry, port_text, _HOST_PORT)
    else:  # a name, an IPv4 address, or a bare IPv6 address (two colons or more)
        host, port = entry, default_port
        if ":" in host:
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise _refuse(entry, _HOST_PORT, "not an IPv6 address (a port: [ADDRESS]:PORT)") from None
    if not host or any(c.isspace() or c in "/,[]" for c in host):
        raise _refuse(entry, _HOST_PORT, "no host name or address")
    return HostPort(host.lower().rstrip("."), port)


_NAMESERVER = "an IP address with an optional port, ADDRESS[:PORT], e.g. 127.0.0.1:5353 or [::1]:53"


def parse_nameserver(text: str) -> HostPort:
    """A DNS resolver to ask, ``ADDRESS[:PORT]`` (port 53 by default). An address, not a name:
    the resolver that would look the name up is the one being configured."""
    try:
        found = parse_host_port(text, 53)
    except ValueFormatError as error:
        raise _refuse(error.entry, _NAMESERVER, error.why) from None
    try:
        ipaddress.ip_address(found.host)
    except ValueError:
        raise _refuse(text.strip(), _NAMESERVER, f"{found.host!r} is not an IP address") from None
    return found


def parse_source_address(text: str) -> str:
    """A local address to send from, in canonical form (``""``: the system's choice)."""
    if not text.strip():
        return ""
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise _refuse(text.strip(), "an IPv4 or IPv6 address of this machine", "not an IP address") from None


# --- networks and hosts -----------------------------------------------------------------


_NETWORK = "an IP address or CIDR network, e.g. 10.0.0.0/8 or ::1"


def parse_network(text: str) -> IpNetwork:
    """An address (a network of one) or a CIDR network; host bits are allowed (10.1.2.3/8)."""
    try:
        return ipaddress.ip_network(text.strip().strip("[]"), strict=False)
    except ValueError:
        raise _refuse(text.strip(), _NETWORK, "not an IP address or CIDR network") from None


def parse_host_or_network(text: str) -> HostOrNetwork:
    """A host name (lower case, no trailing dot), or an address or CIDR network."""
    entry = text.strip().lower().rstrip(".")
    try:
        return parse_network(entry)
    except ValueError:
        pass
    labels = entry.split(".")
    if not entry or any(not label or not all(c.isalnum() or c in "-_" for c in label) for label in labels):
        raise _refuse(text.strip(), "a host name, an IP address or a CIDR network, e.g. hooks.internal "
                      "or 10.0.0.0/8", "not a host name or an address")
    return entry


def parse_accept_address(text: str) -> str:
    """An email address the inbound server accepts (lower case)."""
    entry = text.strip().lower()
    local, at, domain = entry.rpartition("@")
    if not at or not local or not domain or "." not in domain or any(c.isspace() for c in entry):
        raise _refuse(text.strip(), "an email address, e.g. fbl@bounces.example.com", "not an email address")
    return entry


# --- delivery ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StaticRoute:
    """Recipient domains matching ``pattern`` (fnmatch, lower case) go to ``host:port``."""

    pattern: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.pattern}={HostPort(self.host, self.port)}"


_ROUTE = "'PATTERN=HOST:PORT', e.g. '*.test=127.0.0.1:2525'"


def parse_static_route(text: str) -> StaticRoute:
    """``pattern=host:port`` (IPv6: ``pattern=[address]:port``)."""
    entry = text.strip()
    pattern, eq, target = entry.partition("=")
    if not eq or not pattern.strip():
        raise _refuse(entry, _ROUTE, "no 'PATTERN='")
    try:
        where = parse_host_port(target, 0)
    except ValueFormatError as error:
        raise _refuse(entry, _ROUTE, error.why) from None
    if where.port == 0:
        raise _refuse(entry, _ROUTE, "no ':PORT'")
    return StaticRoute(pattern.strip().lower(), where.host, where.port)


@dataclass(frozen=True, slots=True)
class DestinationLimit:
    """At most ``connections`` sessions to destinations matching ``pattern``, ``messages`` each."""

    pattern: str
    connections: int
    messages: int

    def __str__(self) -> str:
        return f"{self.pattern}={self.connections}x{self.messages}"


_LIMIT = "'PATTERN=CONNECTIONSxMESSAGES' with both numbers at least 1, e.g. 'gmail.com=5x50'"


def parse_destination_limit(text: str) -> DestinationLimit:
    """``pattern=CxM``: C connections at once, M messages per connection."""
    entry = text.strip()
    pattern, eq, value = entry.partition("=")
    conns, x, msgs = value.strip().lower().partition("x")
    numbers = (conns.strip(), msgs.strip())
    if not eq or not pattern.strip() or not x or not all(n.isascii() and n.isdigit() for n in numbers):
        raise _refuse(entry, _LIMIT, "not PATTERN=CxM")
    if min(int(n) for n in numbers) < 1:
        raise _refuse(entry, _LIMIT, "a limit of 0")
    return DestinationLimit(pattern.strip().lower(), int(numbers[0]), int(numbers[1]))


_SCHEDULE = ("hours after the first attempt, comma separated, starting at 0 and increasing, "
             "e.g. '0,1,6,30'")


def parse_retry_schedule(text: str) -> tuple[float, ...]:
    """The start of each delivery attempt in hours after the first: ``0,1,6,30``."""
    if not text.strip():
        raise _refuse(text, _SCHEDULE, "no attempt")
    hours: list[float] = []
    for part in text.split(","):
        entry = part.strip()
        try:
            value = float(entry)
        except ValueError:
            raise _refuse(entry, _SCHEDULE, "not a number of hours") from None
        if not math.isfinite(value):
            raise _refuse(entry, _SCHEDULE, "not a finite number of hours")
        hours.append(value)
    if not hours or hours[0] != 0:
        raise _refuse(text.strip(), _SCHEDULE, "the first attempt is not at 0")
    if any(b <= a for a, b in itertools.pairwise(hours)):
        raise _refuse(text.strip(), _SCHEDULE, "the hours do not increase")
    return tuple(hours)


# --- tracking ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetiredSecret:
    """An earlier tracking secret, still accepted for links signed under ``key_id``."""

    key_id: int
    secret: str = field(repr=False)

    def __str__(self) -> str:
        return f"{self.key_id}:{self.secret}"


_RETIRED = "'KEY_ID:SECRET' with KEY_ID from 0 to 255, e.g. '1:old-secret'"


def parse_retired_secret(text: str) -> RetiredSecret:
    """``KEY_ID:SECRET``; the secret is never repeated in the error."""
    key_id, sep, secret = text.strip().partition(":")
    key_id = key_id.strip()
    if not sep or not secret or not key_id.isascii() or not key_id.isdigit() or int(key_id) > 255:
        shown = f"{key_id}:..." if sep else "(an entry without ':')"
        raise _refuse(shown, _RETIRED, "not KEY_ID:SECRET")
    return RetiredSecret(int(key_id), secret)


# --- pydantic field types ----------------------------------------------------------------


def show_value(value: object) -> str:
    """The canonical text of a setting's value (entries joined by commas), as the parser reads it."""
    if isinstance(value, tuple):
        return ",".join(show_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def _entries(value: object) -> Sequence[Any] | None:
    if isinstance(value, str):
        return None
    if isinstance(value, list | tuple):
        return value
    raise ValueFormatError(repr(value), "text or a list of entries", f"a {type(value).__name__}")


def _listed(parse_one: Callable[[str], _T]) -> Callable[[object], tuple[_T, ...]]:
    """Text of comma-separated entries, or a list of entries (each parsed, values that are
    already parsed included: their text reads back to them)."""
    def validate(value: object) -> tuple[_T, ...]:
        entries = _entries(value)
        if entries is None:
            return parse_list(str(value), parse_one)
        return tuple(parse_one(str(e)) for e in entries)
    return validate


def _schedule(value: object) -> tuple[float, ...]:
    entries = _entries(value)
    return parse_retry_schedule(str(value) if entries is None else ",".join(show_value(e) for e in entries))


def _optional_nameserver(value: object) -> HostPort | None:
    if value is None or isinstance(value, HostPort):
        return value
    return parse_nameserver(str(value)) if str(value).strip() else None


_SHOW = PlainSerializer(show_value, return_type=str)

Networks = Annotated[tuple[IpNetwork, ...], PlainValidator(_listed(parse_network)), _SHOW]
InternalHosts = Annotated[tuple[HostOrNetwork, ...], PlainValidator(_listed(parse_host_or_network)), _SHOW]
AcceptAddresses = Annotated[tuple[str, ...], PlainValidator(_listed(parse_accept_address)), _SHOW]
StaticRoutes = Annotated[tuple[StaticRoute, ...], PlainValidator(_listed(parse_static_route)), _SHOW]
DestinationLimits = Annotated[tuple[DestinationLimit, ...], PlainValidator(_listed(parse_destination_limit)),
                              _SHOW]
RetiredSecrets = Annotated[tuple[RetiredSecret, ...], PlainValidator(_listed(parse_retired_secret)), _SHOW]
RetrySchedule = Annotated[tuple[float, ...], PlainValidator(_schedule), _SHOW]
OptionalNameserver = Annotated[HostPort | None, PlainValidator(_optional_nameserver), _SHOW]
SourceAddress = Annotated[str, PlainValidator(lambda value: parse_source_address(str(value))), _SHOW]
