"""The worker warns at start-up when public_url cannot serve one-click unsubscribe (issue 21)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailcarrier.cli.main import app


@pytest.mark.parametrize(("url", "warned"), [("http://mail.shop.com", True),
                                             ("https://mail.shop.com", False)])
def test_worker_warns_when_public_url_is_plain_http(tmp_path: Path, url: str, warned: bool) -> None:
    env = {"MAILCARRIER_DATABASE_URL": f"sqlite:///{tmp_path / 'mc.db'}", "MAILCARRIER_DATA_DIR": str(tmp_path),
           "MAILCARRIER_SECRET_KEY": "k" * 32, "MAILCARRIER_PUBLIC_URL": url}
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    result = runner.invoke(app, ["worker", "--once"], env=env)
    assert result.exit_code == 0, result.output
    assert ("one-click unsubscribe (RFC 8058) requires https" in result.stderr) is warned
    assert ("MAILCARRIER_PUBLIC_URL" in result.stderr) is warned
