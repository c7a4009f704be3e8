"""``mailcarrier accounts keys``: a key issued on the command line opens the REST API, only
with the scopes it was given, and stops working once revoked."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from mailcarrier.api.app import create_app
from mailcarrier.cli.exit_codes import ExitCode
from mailcarrier.cli.main import app as cli
from mailcarrier.config import Settings
from mailcarrier.storage.engine import make_engine

runner = CliRunner()


def _invoke(*args: str) -> str:
    result = runner.invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


async def _get(settings: Settings, url: str, key: str, path: str) -> httpx.Response:
    engine = make_engine(url)
    app = create_app(settings, engine)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://mc.test") as http:
                return await http.get(path, headers={"Authorization": f"Bearer {key}"})
    finally:
        engine.dispose()


@pytest.fixture
def world(tmp_path: Path) -> tuple[Settings, str]:
    url = f"sqlite:///{tmp_path / 'mc.db'}"
    _invoke("db", "upgrade", "--database-url", url)
    _invoke("accounts", "create", "acme", "--name", "Acme", "--database-url", url)
    _invoke("accounts", "create", "other", "--database-url", url)
    settings = Settings.of(data_dir=tmp_path / "data", secret_key="test-master-secret-0123456789",
                        public_url="http://mc.test", database_url=url)
    return settings, url


async def test_issued_key_opens_its_scopes_only_until_revoked(world: tuple[Settings, str]) -> None:
    settings, url = world
    output = _invoke("accounts", "keys", "create", "acme", "--name", "crm sync",
                     "--scope", "audiences:read", "--database-url", url)
    key = output.strip().splitlines()[-1]
    assert key.startswith("mc_")
    prefix = key.split("_")[1]

    assert (await _get(settings, url, key, "/api/v1/audiences")).status_code == 200
    assert (await _get(settings, url, key, "/api/v1/mailings")).status_code == 403
    assert (await _get(settings, url, key + "x", "/api/v1/audiences")).status_code == 401

    listed = _invoke("accounts", "keys", "list", "acme", "--database-url", url)
    assert prefix in listed and "crm sync" in listed and key not in listed
    assert prefix not in _invoke("accounts", "keys", "list", "other", "--database-url", url)

    # another account cannot revoke it
    refused = runner.invoke(cli, ["accounts", "keys", "revoke", "other", prefix, "--database-url", url])
    assert refused.exit_code == ExitCode.NOT_FOUND and "no API key" in refused.output
    _invoke("accounts", "keys", "revoke", "acme", prefix, "--database-url", url)
    assert (await _get(settings, url, key, "/api/v1/audiences")).status_code == 401


def test_bad_requests_are_clear_errors(world: tuple[Settings, str]) -> None:
    _, url = world
    unknown = runner.invoke(cli, ["accounts", "keys", "create", "nobody", "--name", "x",
                                  "--database-url", url])
    assert unknown.exit_code == ExitCode.NOT_FOUND and "nobody" in unknown.output
    blank = runner.invoke(cli, ["accounts", "keys", "create", "acme", "--name", " ",
                                "--database-url", url])
    assert blank.exit_code == ExitCode.INVALID_INPUT and "name" in blank.output


def test_unknown_scopes_are_refused_and_nothing_is_stored(world: tuple[Settings, str]) -> None:
    """Issue 17: an unquoted '*' expanded by the shell (here to a file name) was stored as a scope."""
    _settings, url = world
    refused = runner.invoke(cli, ["accounts", "keys", "create", "acme", "--name", "x", "--scope", "a.csv",
                                  "--database-url", url])
    assert refused.exit_code != 0
    assert "a.csv" in refused.output and "contacts:read" in refused.output  # says what is allowed
    assert "mc_" not in refused.output
    listed = _invoke("accounts", "keys", "list", "acme", "--database-url", url)
    assert "a.csv" not in listed
    ok = _invoke("accounts", "keys", "create", "acme", "--name", "all", "--scope", "*", "--database-url", url)
    assert ok.strip().splitlines()[-1].startswith("mc_")
