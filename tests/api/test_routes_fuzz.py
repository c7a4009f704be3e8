"""Schemathesis against the running app (uvicorn on loopback): generated input never gets a 500.

Examples per operation are limited so the suite stays quick; the database is SQLite with
the report world loaded, and requests carry a valid key so they reach the handlers.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from sqlalchemy import Engine

from mailcarrier.api.app import create_app
from mailcarrier.config import Settings
from mailcarrier.storage.api_keys import create_api_key
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.migrate import upgrade
from tests.services.report_world import T0, build
from tests.storage.conftest import _pg_schema_engine

MAX_EXAMPLES = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def running_api(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, API key) of a uvicorn server running the app in a thread, on each backend."""
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    with ExitStack() as stack:
        if request.param == "sqlite":
            engine = make_engine(f"sqlite:///{tmp / 'fuzz.db'}")
            stack.callback(engine.dispose)
        else:
            engine = stack.enter_context(contextmanager(_pg_schema_engine)())
        yield from _serve(engine, tmp)


def _serve(engine: Engine, tmp: Path) -> Iterator[tuple[str, str]]:
    upgrade(engine)
    world = build(engine)
    with engine.begin() as conn:
        _, key = create_api_key(conn, world.account_id, "fuzz", ["*"], T0)
    app = create_app(Settings.of(data_dir=tmp / "data", secret_key="fuzz-master-secret-0123456789",
                              public_url="http://127.0.0.1"), engine,
                     clock=lambda: T0 + timedelta(days=1))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", key
    finally:
        server.should_exit = True
        thread.join(10)


def test_no_server_error_on_generated_input(running_api: tuple[str, str]) -> None:
    base, key = running_api
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json").include(path_regex="^/api/v1/")
    headers = {"Authorization": f"Bearer {key}"}
    failures: list[str] = []
    operations = 0
    calls: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            calls.append(case.path)
            case.call_and_validate(base_url=base, headers=headers, checks=[not_a_server_error],
                                   timeout=30)

        try:
            check()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:800]}")
    assert operations >= 20 and len(calls) >= 5 * operations
    assert not failures, "\n\n".join(failures)
