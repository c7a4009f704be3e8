"""Settings: a tree of sections read from overrides, the environment, ``.env`` and a TOML file
(first wins), parsed at load, every wrong value refused naming its variable or file entry."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from pydantic import ValidationError

from mailcarrier.config import LEAVES, Origin, Settings, SettingsError, read_settings
from mailcarrier.config_sections import SECTIONS
from mailcarrier.config_values import DestinationLimit, HostPort, RetiredSecret, StaticRoute
from mailcarrier.domain.errors import ConfigurationError, ErrorKind


def _read(tmp_path: Path, environ: dict[str, str] | None = None, *, dotenv: str | None = None,
          toml: str | None = None, **overrides: object) -> Settings:
    env_file = tmp_path / ".env"
    env_file.unlink(missing_ok=True)
    if dotenv is not None:
        env_file.write_text(dotenv, encoding="utf-8")
    config = None
    if toml is not None:
        config = tmp_path / "mailcarrier.toml"
        config.write_text(toml, encoding="utf-8")
    return read_settings(environ or {}, env_file, config, overrides)


def test_every_flat_variable_has_one_leaf_and_every_leaf_a_variable() -> None:
    names = [leaf.env for leaf in LEAVES.values()]
    assert len(names) == len(set(names)) == sum(len(model.model_fields) for model in SECTIONS.values())
    assert {"storage", "delivery", "inbound", "tracking", "dns", "api"} <= set(SECTIONS)
    assert LEAVES["inbound_port"].path == "inbound.port"
    assert LEAVES["retry_schedule_hours"].path == "delivery.retry_schedule"
    assert LEAVES["hygiene_nameserver"].path == "dns.nameserver"
    assert {leaf.flat for leaf in LEAVES.values() if leaf.secret} == {
        "secret_key", "imap_password", "tracking_retired_secrets"}


def test_structured_values_are_parsed_at_load(tmp_path: Path) -> None:
    settings = _read(tmp_path, {
        "MAILCARRIER_STATIC_ROUTES": "*.test=127.0.0.1:2525, *=[::1]:2526",
        "MAILCARRIER_DESTINATION_LIMITS": "gmail.com=5x50",
        "MAILCARRIER_RETRY_SCHEDULE_HOURS": "0,2,8", "MAILCARRIER_RETRY_MAX_AGE_HOURS": "8",
        "MAILCARRIER_TRACKING_RETIRED_SECRETS": "1:old-one,2:old-two",
        "MAILCARRIER_HYGIENE_NAMESERVER": "127.0.0.1:5353",
        "MAILCARRIER_TRUSTED_PROXIES": "10.0.0.0/8", "MAILCARRIER_INBOUND_ACCEPT_ADDRESSES": "FBL@b.example",
        "MAILCARRIER_WEBHOOK_INTERNAL_HOSTS": "hooks.internal,192.168.0.0/16", "MAILCARRIER_INBOUND_PORT": "25",
    })
    assert settings.delivery.static_routes == (StaticRoute("*.test", "127.0.0.1", 2525), StaticRoute("*", "::1", 2526))
    assert settings.delivery.destination_limits == (DestinationLimit("gmail.com", 5, 50),)
    assert settings.delivery.retry_schedule == (0.0, 2.0, 8.0)
    assert settings.tracking.retired_secrets == (RetiredSecret(1, "old-one"), RetiredSecret(2, "old-two"))
    assert settings.dns.nameserver == HostPort("127.0.0.1", 5353)
    assert settings.api.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"),)
    assert settings.inbound.accept_addresses == ("fbl@b.example",) and settings.inbound.port == 25
    assert settings.webhooks.internal_hosts == ("hooks.internal", ipaddress.ip_network("192.168.0.0/16"))
    assert settings.inbound.unlimited_peers == (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1"))


def test_the_tree_is_frozen(tmp_path: Path) -> None:
    settings = _read(tmp_path)
    with pytest.raises(ValidationError):
        settings.inbound.port = 25  # type: ignore[misc]


def test_a_toml_file_has_one_table_per_section(tmp_path: Path) -> None:
    settings = _read(tmp_path, toml="""
[inbound]
port = 2600
unlimited_peers = ["10.0.0.0/8", "::1"]
[delivery]
retry_schedule = [0, 1, 6]
static_routes = "*=127.0.0.1:2525"
dkim_sign = false
""")
    assert settings.inbound.port == 2600 and settings.delivery.dkim_sign is False
    assert settings.inbound.unlimited_peers == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1"))
    assert settings.delivery.retry_schedule == (0.0, 1.0, 6.0)
    assert settings.delivery.static_routes == (StaticRoute("*", "127.0.0.1", 2525),)
    assert settings.source("inbound_port").origin is Origin.FILE
    assert settings.source("inbound_port").file.endswith("mailcarrier.toml")
    assert settings.source("inbound_host").origin is Origin.DEFAULT


def test_overrides_beat_the_environment_which_beats_dotenv_which_beats_the_file(tmp_path: Path) -> None:
    toml = "[inbound]\nport = 1001\nhost = '10.0.0.1'\nmax_bytes = 5000\n[delivery]\nhostname = 'file.example'\n"
    dotenv = "MAILCARRIER_INBOUND_PORT=1002\nMAILCARRIER_INBOUND_HOST=10.0.0.2\nMAILCARRIER_INBOUND_MAX_BYTES=6000\n"
    environ = {"MAILCARRIER_INBOUND_PORT": "1003", "MAILCARRIER_INBOUND_HOST": "10.0.0.3"}
    settings = _read(tmp_path, environ, dotenv=dotenv, toml=toml, inbound_port=1004)
    assert (settings.inbound.port, settings.inbound.host, settings.inbound.max_bytes,
            settings.delivery.hostname) == (1004, "10.0.0.3", 6000, "file.example")
    assert [settings.source(n).origin for n in ("inbound_port", "inbound_host", "inbound_max_bytes", "hostname",
                                                "smtp_timeout")] == [
        Origin.OVERRIDE, Origin.ENV, Origin.DOTENV, Origin.FILE, Origin.DEFAULT]


def test_the_config_file_comes_from_mailcarrier_config(tmp_path: Path) -> None:
    (tmp_path / "mc.toml").write_text("[pools]\nwarmup_schedule = 'conservative'\n", encoding="utf-8")
    settings = read_settings({"MAILCARRIER_CONFIG": str(tmp_path / "mc.toml")}, None, None, {})
    assert settings.pools.warmup_schedule == "conservative"


def test_an_empty_variable_unsets_an_optional_setting(tmp_path: Path) -> None:
    settings = _read(tmp_path, {"MAILCARRIER_DATABASE_URL": "", "MAILCARRIER_INBOUND_TLS_CERT": "",
                                "MAILCARRIER_HYGIENE_NAMESERVER": ""})
    assert settings.storage.database_url is None and settings.inbound.tls_cert is None
    assert settings.dns.nameserver is None
    assert settings.resolved_database_url().startswith("sqlite:///")


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("MAILCARRIER_STATIC_ROUTES", "*.test=mx", "MAILCARRIER_STATIC_ROUTES: '*.test=mx': no ':PORT'; "
                                               "expected 'PATTERN=HOST:PORT'"),
    ("MAILCARRIER_DESTINATION_LIMITS", "gmail.com=5", "MAILCARRIER_DESTINATION_LIMITS: 'gmail.com=5'"),
    ("MAILCARRIER_RETRY_SCHEDULE_HOURS", "1,6", "MAILCARRIER_RETRY_SCHEDULE_HOURS: '1,6': the first attempt"),
    ("MAILCARRIER_TRUSTED_PROXIES", "127.0.0.1,proxy.local", "MAILCARRIER_TRUSTED_PROXIES: 'proxy.local'"),
    ("MAILCARRIER_HYGIENE_NAMESERVER", "ns.example", "MAILCARRIER_HYGIENE_NAMESERVER: 'ns.example'"),
    ("MAILCARRIER_INBOUND_PORT", "twenty-five", "MAILCARRIER_INBOUND_PORT='twenty-five': Input should be"),
    ("MAILCARRIER_INBOUND_PORT", "70000", "MAILCARRIER_INBOUND_PORT='70000': Input should be less than"),
    ("MAILCARRIER_WARMUP_SCHEDULE", "turbo", "'turbo': no such warm-up schedule; expected one of aggressive"),
    ("MAILCARRIER_DKIM_ALGORITHM", "dsa", "MAILCARRIER_DKIM_ALGORITHM='dsa': Input should be 'rsa'"),
    ("MAILCARRIER_SOURCE_IP", "eth0", "MAILCARRIER_SOURCE_IP: 'eth0': not an IP address"),
])
def test_a_bad_value_names_the_variable_the_entry_and_the_form(tmp_path: Path, variable: str, value: str,
                                                              expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        _read(tmp_path, {variable: value})
    assert expected in str(caught.value)
    assert isinstance(caught.value, ConfigurationError) and caught.value.kind is ErrorKind.INVALID_INPUT


def test_every_bad_value_is_reported_at_once_and_secrets_are_not_repeated(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        _read(tmp_path, {"MAILCARRIER_INBOUND_PORT": "x", "MAILCARRIER_SMTP_TIMEOUT": "-1",
                         "MAILCARRIER_TRACKING_RETIRED_SECRETS": "x:hunter2-secret"})
    message = str(caught.value)
    for variable in ("MAILCARRIER_INBOUND_PORT", "MAILCARRIER_SMTP_TIMEOUT", "MAILCARRIER_TRACKING_RETIRED_SECRETS"):
        assert variable in message
    assert "hunter2" not in message


def test_file_and_dotenv_errors_name_where_the_value_was(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"\[inbound\] port \(in .*mailcarrier.toml\)='x'"):
        _read(tmp_path, toml="[inbound]\nport = 'x'\n")
    with pytest.raises(SettingsError, match=r"MAILCARRIER_INBOUND_PORT \(in .*\.env\)='x'"):
        _read(tmp_path, dotenv="MAILCARRIER_INBOUND_PORT=x\n")


def test_a_schedule_longer_than_the_maximum_age_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"retry_max_age_hours \(5\) is shorter than the last attempt"):
        _read(tmp_path, {"MAILCARRIER_RETRY_MAX_AGE_HOURS": "5"})


def test_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="MAILCARRIER_INBOUND_PROT is not a setting; did you mean "
                                            "MAILCARRIER_INBOUND_PORT"):
        _read(tmp_path, {"MAILCARRIER_INBOUND_PROT": "25"})
    # the prefix is shared: variables that look like no setting are someone else's
    assert _read(tmp_path, {"MAILCARRIER_ACCOUNT": "shop", "MAILCARRIER_TEST_PG_URL": "x"}).inbound.port == 2526
    with pytest.raises(SettingsError, match=r"MAILCARRIER_WHATEVER \(in .*\.env\) is not a setting"):
        _read(tmp_path, dotenv="MAILCARRIER_WHATEVER=1\n")
    with pytest.raises(SettingsError, match=r"\[inbound\] prot is not a setting; did you mean port"):
        _read(tmp_path, toml="[inbound]\nprot = 25\n")
    with pytest.raises(SettingsError, match=r"\[smtp\] is not a section"):
        _read(tmp_path, toml="[smtp]\ntimeout = 5\n")
    with pytest.raises(SettingsError, match="'inbound_prot' is not a setting; did you mean inbound_port"):
        _read(tmp_path, inbound_prot=25)


def test_a_missing_or_broken_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"config file .*nope\.toml: No such file"):
        read_settings({}, None, tmp_path / "nope.toml", {})
    with pytest.raises(SettingsError, match="is not valid TOML"):
        _read(tmp_path, toml="[inbound\nport = 1\n")


def test_of_reads_nothing_but_its_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILCARRIER_INBOUND_PORT", "1234")
    settings = Settings.of(inbound_host="0.0.0.0", secret_key="k" * 32)
    assert settings.inbound.port == 2526 and settings.inbound.host == "0.0.0.0"
    assert settings.resolved_secret() == b"k" * 32


def test_with_values_validates_and_keeps_the_rest(tmp_path: Path) -> None:
    base = _read(tmp_path, {"MAILCARRIER_INBOUND_PORT": "25"})
    changed = base.with_values(max_bounce_rate=0.11, trusted_proxies="10.0.0.1")
    assert changed.pools.max_bounce_rate == 0.11 and base.pools.max_bounce_rate == 0.05
    assert changed.api.trusted_proxies == (ipaddress.ip_network("10.0.0.1/32"),)
    assert changed.inbound.port == 25 and changed.source("inbound_port").origin is Origin.ENV
    with pytest.raises(SettingsError, match="max_bounce_rate"):
        base.with_values(max_bounce_rate=2)


def test_the_secret_is_generated_once_when_unset(tmp_path: Path) -> None:
    settings = _read(tmp_path, {"MAILCARRIER_DATA_DIR": str(tmp_path / "data")})
    first = settings.resolved_secret()
    assert len(first) >= 48 and settings.resolved_secret() == first
    assert (tmp_path / "data" / "secret.key").stat().st_mode & 0o777 == 0o600
