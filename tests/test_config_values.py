"""The value parsers: each reads its kind of value or refuses it naming the entry and the form,
and the text of every parsed value reads back to the same value."""

from __future__ import annotations

import ipaddress
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailcarrier.config_values import (
    DestinationLimit,
    HostPort,
    RetiredSecret,
    StaticRoute,
    ValueFormatError,
    parse_accept_address,
    parse_destination_limit,
    parse_host_or_network,
    parse_host_port,
    parse_list,
    parse_nameserver,
    parse_network,
    parse_retired_secret,
    parse_retry_schedule,
    parse_source_address,
    parse_static_route,
    show_value,
)
from mailcarrier.domain.errors import ConfigurationError

_label = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=10)
_host_names = st.lists(_label, min_size=1, max_size=3).map(".".join)
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(str)
_ports = st.integers(1, 65535)
_patterns = st.one_of(_host_names, _host_names.map(lambda h: f"*.{h}"), st.just("*"))


def test_host_port_forms() -> None:
    assert parse_host_port("mx.example", 25) == HostPort("mx.example", 25)
    assert parse_host_port(" MX.Example.:2525 ", 25) == HostPort("mx.example", 2525)
    assert parse_host_port("[::1]:53", 25) == HostPort("::1", 53)
    assert parse_host_port("2001:db8::1", 53) == HostPort("2001:db8::1", 53)  # bare IPv6: default port
    assert str(HostPort("::1", 53)) == "[::1]:53" and str(HostPort("127.0.0.1", 53)) == "127.0.0.1:53"


@pytest.mark.parametrize(("text", "why"), [
    ("", "no host name"), ("h:", "port ''"), ("h:x", "port 'x'"), ("h:0", "port '0'"), ("h:70000", "port '70000'"),
    ("[::1", "unclosed"), ("[::1]x", "misplaced"), ("a:b:c", "not an IPv6 address"), ("a b:25", "no host name"),
])
def test_host_port_refusals_name_the_entry_the_problem_and_the_form(text: str, why: str) -> None:
    with pytest.raises(ValueFormatError, match="expected HOST or HOST:PORT") as caught:
        parse_host_port(text, 25)
    assert why in str(caught.value) and repr(text.strip()) in str(caught.value)


def test_a_nameserver_is_an_address_with_port_53_by_default() -> None:
    assert parse_nameserver("127.0.0.1") == HostPort("127.0.0.1", 53)
    assert parse_nameserver("127.0.0.1:5353") == HostPort("127.0.0.1", 5353)
    assert parse_nameserver("::1") == HostPort("::1", 53)
    assert parse_nameserver("[::1]:5353") == HostPort("::1", 5353)
    for bad in ("localhost", "ns.example:53", "127.0.0.1:x", "[::1"):
        with pytest.raises(ValueFormatError, match=r"expected an IP address with an optional port"):
            parse_nameserver(bad)


@given(st.one_of(_ipv4, _ipv6), _ports)
def test_any_nameserver_reads_back_from_its_text(address: str, port: int) -> None:
    parsed = parse_nameserver(str(HostPort(address, port)))
    assert parsed == HostPort(address, port) and parse_nameserver(str(parsed)) == parsed


def test_networks_and_hosts() -> None:
    assert parse_network("10.1.2.3/8") == ipaddress.ip_network("10.0.0.0/8")
    assert parse_network("[::1]") == ipaddress.ip_network("::1/128")
    assert parse_list("127.0.0.1, ,::1", parse_network) == (ipaddress.ip_network("127.0.0.1/32"),
                                                            ipaddress.ip_network("::1/128"))
    assert parse_host_or_network("Hooks.Internal.") == "hooks.internal"
    assert parse_host_or_network("10.0.0.0/8") == ipaddress.ip_network("10.0.0.0/8")
    with pytest.raises(ValueFormatError, match=r"'proxy\.local': not an IP address or CIDR network"):
        parse_network("proxy.local")
    with pytest.raises(ValueFormatError, match="not a host name or an address"):
        parse_host_or_network("http://hooks.internal/x")


def test_addresses() -> None:
    assert parse_accept_address(" FBL@Bounces.Example.com ") == "fbl@bounces.example.com"
    assert parse_source_address("2001:DB8::0:1") == "2001:db8::1" and parse_source_address(" ") == ""
    for bad in ("fbl", "fbl@localhost", "@x.example", "a b@x.example"):
        with pytest.raises(ValueFormatError, match="not an email address"):
            parse_accept_address(bad)
    with pytest.raises(ValueFormatError, match="'eth0': not an IP address"):
        parse_source_address("eth0")


def test_static_routes() -> None:
    assert parse_static_route(" *.Test = 127.0.0.1:2525") == StaticRoute("*.test", "127.0.0.1", 2525)
    assert parse_static_route("*=[::1]:2526") == StaticRoute("*", "::1", 2526)
    assert str(StaticRoute("*", "::1", 2526)) == "*=[::1]:2526"


@pytest.mark.parametrize(("text", "why"), [
    ("*.test", "no 'PATTERN='"), ("*.test=host", "no ':PORT'"), ("*.test=host:x", "port 'x'"),
    ("=h:25", "no 'PATTERN='"), ("*=h:0", "port '0'"), ("*=h:70000", "port '70000'"), ("*=::1", "no ':PORT'"),
])
def test_bad_static_routes(text: str, why: str) -> None:
    with pytest.raises(ConfigurationError, match="expected 'PATTERN=HOST:PORT'") as caught:
        parse_static_route(text)
    assert why in str(caught.value) and repr(text) in str(caught.value)


@given(_patterns, st.one_of(_host_names, _ipv4, _ipv6), _ports)
def test_any_static_route_reads_back_from_its_text(pattern: str, host: str, port: int) -> None:
    route = StaticRoute(pattern, host, port)
    assert parse_static_route(str(route)) == route


def test_destination_limits() -> None:
    assert parse_destination_limit("Gmail.com = 2X10") == DestinationLimit("gmail.com", 2, 10)
    for bad, why in (("gmail.com", "not PATTERN=CxM"), ("gmail.com=5", "not PATTERN=CxM"),
                     ("=5x5", "not PATTERN=CxM"), ("x=0x5", "a limit of 0"), ("x=ax5", "not PATTERN=CxM"),
                     ("x=²x5", "not PATTERN=CxM")):
        with pytest.raises(ValueFormatError, match=why):
            parse_destination_limit(bad)


@given(_patterns, st.integers(1, 10_000), st.integers(1, 10_000))
def test_any_destination_limit_reads_back_from_its_text(pattern: str, connections: int, messages: int) -> None:
    limit = DestinationLimit(pattern, connections, messages)
    assert parse_destination_limit(str(limit)) == limit


@given(st.text(max_size=40))
def test_any_text_is_a_list_of_limits_or_a_configuration_error(text: str) -> None:
    try:
        limits = parse_list(text, parse_destination_limit)
    except ConfigurationError as error:
        assert "expected 'PATTERN=CONNECTIONSxMESSAGES'" in str(error)
        return
    assert all(limit.connections >= 1 and limit.messages >= 1 for limit in limits)


def test_retry_schedules() -> None:
    assert parse_retry_schedule("0, 1,6,30") == (0.0, 1.0, 6.0, 30.0)
    assert parse_retry_schedule("0,0.5") == (0.0, 0.5)
    for bad, why in (("", "no attempt"), ("1,2", "first attempt is not at 0"), ("0,6,1", "do not increase"),
                     ("0,0", "do not increase"), ("0,x", "'x': not a number"), ("0,nan", "not a finite"),
                     ("0,,1", "'': not a number")):
        with pytest.raises(ValueFormatError, match=why):
            parse_retry_schedule(bad)


@given(st.lists(st.integers(1, 10_000), max_size=6, unique=True))
def test_any_increasing_schedule_reads_back_from_its_text(later: list[int]) -> None:
    hours = (0.0, *(h / 4 for h in sorted(later)))
    assert parse_retry_schedule(show_value(hours)) == hours


def test_retired_secrets_never_repeat_the_secret() -> None:
    assert parse_retired_secret("3:old:secret") == RetiredSecret(3, "old:secret")
    assert "old" not in repr(RetiredSecret(3, "old-secret"))
    for bad in ("x:hunter2", "256:hunter2", "3:", "hunter2"):
        with pytest.raises(ValueFormatError, match="expected 'KEY_ID:SECRET'") as caught:
            parse_retired_secret(bad)
        assert "hunter2" not in str(caught.value)


def test_show_value_is_the_text_a_variable_takes() -> None:
    assert show_value((StaticRoute("*", "h", 1), StaticRoute("a", "::1", 2))) == "*=h:1,a=[::1]:2"
    assert show_value(True) == "true" and show_value(None) == "" and show_value(30.0) == "30"
    assert show_value(12.5) == "12.5" and show_value(()) == ""
