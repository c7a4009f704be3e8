"""``mailcarrier config show``: every setting once, in a section, effective values, secrets masked."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mailcarrier.cli import config_cmd
from mailcarrier.config import Settings
from mailcarrier.config_view import MASK, SECRETS, section_of


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [n for n in __import__("os").environ if n.startswith("MAILCARRIER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MAILCARRIER_SECRET_KEY", "s3cret-master-key-0123456789abcdef")
    monkeypatch.setenv("MAILCARRIER_IMAP_PASSWORD", "imap-pass-word")
    monkeypatch.setenv("MAILCARRIER_DATABASE_URL", "postgresql+psycopg://mc:db-pass-word@db.example:5432/mc")
    monkeypatch.setenv("MAILCARRIER_SMTP_TIMEOUT", "12.5")
    return monkeypatch


def test_json_has_every_setting_once_by_section_with_secrets_masked(env: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(config_cmd.app, ["show", "--format", "json"])
    assert result.exit_code == 0, result.output
    tree = json.loads(result.output)
    names = [name for values in tree.values() for name in values]
    assert sorted(names) == sorted(Settings.model_fields) and len(names) == len(set(names))
    assert "other" not in tree  # every setting has a section
    assert tree["delivery"]["smtp_timeout"] == {"value": "12.5", "set": True}
    assert tree["delivery"]["delivery_batch_size"]["set"] is False
    assert tree["security"]["secret_key"]["value"] == MASK
    assert tree["inbound"]["imap_password"]["value"] == MASK
    assert tree["storage"]["database_url"]["value"] == "postgresql+psycopg://mc:***@db.example:5432/mc"
    for secret in ("s3cret-master-key", "imap-pass-word", "db-pass-word"):
        assert secret not in result.output


def test_table_masks_secrets_too(env: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(config_cmd.app, ["show"])
    assert result.exit_code == 0, result.output
    assert "SMTP_TIMEOUT" in result.output and "12.5" in result.output
    for secret in ("s3cret-master-key", "imap-pass-word", "db-pass-word"):
        assert secret not in result.output


def test_every_secret_is_a_setting_and_every_setting_has_a_section() -> None:
    assert set(Settings.model_fields) >= SECRETS
    assert [n for n in Settings.model_fields if section_of(n) == "other"] == []
