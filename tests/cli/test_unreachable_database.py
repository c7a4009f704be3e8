"""A database that cannot be reached ends a command with one line (what failed, the URL with
its password masked, what to check) and the 'unavailable' exit status, not a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from mailcarrier.cli.exit_codes import ExitCode
from mailcarrier.domain.errors import ErrorKind
from mailcarrier.storage.engine import (
    DatabaseNotInitialisedError,
    DatabaseUnreachableError,
    make_engine,
    unreachable_database,
)
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _mailcarrier(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MAILCARRIER_")}
    return subprocess.run([sys.executable, "-m", "mailcarrier.cli.main", *args], capture_output=True, text=True,
                          env={**environ, **env}, timeout=120, check=False)


@pytest.mark.parametrize("command", [["accounts", "list"], ["db", "upgrade"]])
def test_postgresql_where_nothing_listens(tmp_path: Path, command: list[str]) -> None:
    url = f"postgresql+psycopg://mc:pass-word-1@127.0.0.1:{_closed_port()}/mc"
    done = _mailcarrier(*command, MAILCARRIER_DATABASE_URL=url, MAILCARRIER_DATA_DIR=str(tmp_path))
    assert done.returncode == ExitCode.UNAVAILABLE == 10, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("error (unavailable): cannot connect to the database postgresql+psycopg://mc:***@")
    assert "check that the server is running" in lines[0] and "MAILCARRIER_DATABASE_URL" in lines[0]
    assert "pass-word-1" not in done.stderr + done.stdout


def test_an_sqlite_directory_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory", encoding="utf-8")
    done = _mailcarrier("accounts", "list", MAILCARRIER_DATA_DIR=str(tmp_path / "a-file" / "data"))
    assert done.returncode == ExitCode.UNAVAILABLE, done.stderr
    assert done.stderr.startswith(f"error (unavailable): cannot create {tmp_path / 'a-file' / 'data'}")
    assert "MAILCARRIER_DATA_DIR" in done.stderr and "Traceback" not in done.stderr


def test_only_connection_failures_of_our_engines_are_reworded(tmp_path: Path) -> None:
    engine = make_engine(f"postgresql+psycopg://mc:pw@127.0.0.1:{_closed_port()}/mc")
    with pytest.raises(OperationalError) as caught:  # loops that retry on OperationalError still see it
        engine.connect()
    worded = unreachable_database(caught.value)
    assert isinstance(worded, DatabaseUnreachableError) and worded.kind is ErrorKind.UNAVAILABLE
    assert ":***@127.0.0.1" in str(worded) and ":pw@" not in str(worded)
    assert unreachable_database(OperationalError("SELECT 1", None, Exception("database is locked"))) is None
    assert unreachable_database(ValueError("x")) is None


def test_a_database_never_upgraded_says_to_run_db_upgrade(tmp_path: Path) -> None:
    done = _mailcarrier("accounts", "list", MAILCARRIER_DATA_DIR=str(tmp_path / "data"))
    assert done.returncode == ExitCode.UNAVAILABLE, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("error (unavailable): the database sqlite:///") and "has no mailcarrier tables" in lines[0]
    assert "run `mailcarrier db upgrade`" in lines[0]
    # After the upgrade the same command works.
    assert _mailcarrier("db", "upgrade", MAILCARRIER_DATA_DIR=str(tmp_path / "data")).returncode == 0
    assert _mailcarrier("accounts", "list", MAILCARRIER_DATA_DIR=str(tmp_path / "data")).returncode == 0


def test_a_missing_table_is_worded_on_both_backends(empty_engine: Engine) -> None:  # noqa: F811
    with pytest.raises(DBAPIError) as caught, empty_engine.connect() as conn:
        conn.execute(text("SELECT id FROM accounts"))
    worded = unreachable_database(caught.value)
    assert isinstance(worded, DatabaseNotInitialisedError) and worded.kind is ErrorKind.UNAVAILABLE
    assert "mailcarrier db upgrade" in str(worded)
    # Any other statement error is left as it is.
    with pytest.raises(DBAPIError) as other, empty_engine.connect() as conn:
        conn.execute(text("SELEC 1"))
    assert unreachable_database(other.value) is None
