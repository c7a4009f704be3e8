"""``mailcarrier config show``: every setting once, in its section, with its variable, effective
value and origin, secrets masked; ``--config``; a bad setting stops any command with one message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailcarrier.cli import config_cmd
from mailcarrier.cli import main as cli_main
from mailcarrier.cli.exit_codes import ExitCode
from mailcarrier.config import LEAVES
from mailcarrier.config_view import MASK

SECRETS = ("s3cret-master-key", "imap-pass-word", "db-pass-word", "retired-one")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in [n for n in os.environ if n.startswith("MAILCARRIER_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("MAILCARRIER_SECRET_KEY", "s3cret-master-key-0123456789abcdef")
    monkeypatch.setenv("MAILCARRIER_IMAP_PASSWORD", "imap-pass-word")
    monkeypatch.setenv("MAILCARRIER_DATABASE_URL", "postgresql+psycopg://mc:db-pass-word@db.example:5432/mc")
    monkeypatch.setenv("MAILCARRIER_TRACKING_RETIRED_SECRETS", "1:retired-one")
    monkeypatch.setenv("MAILCARRIER_SMTP_TIMEOUT", "12.5")
    return monkeypatch


def test_json_has_every_setting_once_by_section_with_secrets_masked(env: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MAILCARRIER_INBOUND_PORT=2600\n", encoding="utf-8")
    result = CliRunner().invoke(config_cmd.app, ["show", "--format", "json"])
    assert result.exit_code == 0, result.output
    tree = json.loads(result.output)
    shown = {(section, name): entry for section, leaves in tree.items() for name, entry in leaves.items()}
    assert sorted(shown) == sorted((leaf.section, leaf.name) for leaf in LEAVES.values())
    assert shown["delivery", "smtp_timeout"] == {"value": "12.5", "set": True, "env": "MAILCARRIER_SMTP_TIMEOUT",
                                                 "from": "env", "file": ""}
    assert shown["delivery", "batch_size"]["set"] is False and shown["delivery", "batch_size"]["from"] == "default"
    assert shown["inbound", "port"]["from"] == ".env" and shown["inbound", "port"]["value"] == "2600"
    assert shown["delivery", "retry_schedule"]["value"] == "0,1,6,30"
    assert shown["inbound", "unlimited_peers"]["value"] == "127.0.0.0/8,::1/128"
    assert shown["security", "secret_key"]["value"] == MASK
    assert shown["imap", "password"]["value"] == MASK
    assert shown["tracking", "retired_secrets"]["value"] == MASK
    assert shown["storage", "database_url"]["value"] == "postgresql+psycopg://mc:***@db.example:5432/mc"
    for secret in SECRETS:
        assert secret not in result.output


def test_table_masks_secrets_too_and_changed_shows_only_what_was_set(env: pytest.MonkeyPatch) -> None:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(config_cmd.app, ["show"])
    assert result.exit_code == 0, result.output
    assert "[delivery]" in result.output and "MAILCARRIER_SMTP_TIMEOUT" in result.output and "12.5" in result.output
    for secret in SECRETS:
        assert secret not in result.output
    changed = CliRunner(env={"COLUMNS": "200"}).invoke(config_cmd.app, ["show", "--changed"])
    assert "MAILCARRIER_SMTP_TIMEOUT" in changed.output and "MAILCARRIER_DELIVERY_BATCH_SIZE" not in changed.output


def test_a_config_file_given_with_config(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "mc.toml").write_text("[inbound]\nport = 2700\n[delivery]\nsmtp_timeout = 3\n", encoding="utf-8")
    result = CliRunner().invoke(cli_main.app, ["--config", str(tmp_path / "mc.toml"), "config", "show", "-f", "json"])
    assert result.exit_code == 0, result.output
    tree = json.loads(result.output)
    assert tree["inbound"]["port"]["value"] == "2700" and tree["inbound"]["port"]["from"] == "file"
    assert tree["inbound"]["port"]["file"].endswith("mc.toml")
    assert tree["delivery"]["smtp_timeout"]["value"] == "12.5"  # the environment wins over the file


def _mailcarrier(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real console command, so the top-level error handling runs as it does for a user."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MAILCARRIER_")}
    return subprocess.run([sys.executable, "-m", "mailcarrier.cli.main", *args], capture_output=True, text=True,
                          env={**environ, **env}, timeout=120, check=False)


def test_a_bad_setting_stops_a_command_with_one_message_naming_the_variable(tmp_path: Path) -> None:
    done = _mailcarrier("accounts", "list", MAILCARRIER_DATA_DIR=str(tmp_path),
                        MAILCARRIER_STATIC_ROUTES="*.test=127.0.0.1", MAILCARRIER_INBOUND_PORT="x")
    assert done.returncode == ExitCode.INVALID_INPUT, done.stderr
    assert "MAILCARRIER_STATIC_ROUTES: '*.test=127.0.0.1': no ':PORT'; expected 'PATTERN=HOST:PORT'" in done.stderr
    assert "MAILCARRIER_INBOUND_PORT='x'" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
