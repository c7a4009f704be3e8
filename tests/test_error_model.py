"""One error model: every deliberate error has a kind, and each kind one API problem type and
status and one CLI exit status; errors that stood outside the root now derive from it."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import httpx
import pytest
import typer
from fastapi import FastAPI

import mailcarrier
from mailcarrier.api.problems import PROBLEM_JSON, PROBLEM_TYPES, install_problem_handlers
from mailcarrier.cli.error_kinds import EXIT_CODES, run
from mailcarrier.cli.exit_codes import ExitCode
from mailcarrier.domain.errors import (
    ConflictError,
    DeliveryTimeoutError,
    ErrorKind,
    InvalidInputError,
    MailcarrierError,
    NotFoundError,
    RefusedByPolicyError,
    UnavailableError,
)
from mailcarrier.services.composition import TemplateRenderError
from mailcarrier.services.hygiene import DnsQueryError

EXAMPLES: dict[ErrorKind, MailcarrierError] = {
    ErrorKind.NOT_FOUND: NotFoundError("mailing 7 not found in account 1"),
    ErrorKind.CONFLICT: ConflictError("mailing 7 is sending; only a draft can be sent"),
    ErrorKind.INVALID_INPUT: InvalidInputError("the subject contains a line break"),
    ErrorKind.UNAVAILABLE: UnavailableError("spamd at 10.0.0.5:783 refused the connection"),
    ErrorKind.REFUSED_BY_POLICY: RefusedByPolicyError("the account is not eligible for a trusted pool"),
}


def _every_error_class() -> list[type[MailcarrierError]]:
    for module in pkgutil.walk_packages(mailcarrier.__path__, "mailcarrier."):
        if ".migrations" not in module.name:
            importlib.import_module(module.name)
    found: list[type[MailcarrierError]] = []
    todo: list[type[MailcarrierError]] = [MailcarrierError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_each_kind_has_its_own_problem_type_and_status_and_an_exit_status() -> None:
    assert set(PROBLEM_TYPES) == set(ErrorKind) == set(EXIT_CODES)
    types = [problem_type for problem_type, _status in PROBLEM_TYPES.values()]
    statuses = [status for _type, status in PROBLEM_TYPES.values()]
    assert len(set(types)) == len(types) and len(set(statuses)) == len(statuses)
    assert EXIT_CODES[ErrorKind.REFUSED_BY_POLICY] is ExitCode.REFUSED
    assert all(code is not ExitCode.OK for code in EXIT_CODES.values())


def test_every_error_class_of_the_package_has_a_kind() -> None:
    classes = _every_error_class()
    assert len(classes) > 20
    assert all(isinstance(cls.kind, ErrorKind) for cls in classes)


def test_errors_that_stood_outside_the_root_are_in_it_with_their_kind() -> None:
    assert issubclass(TemplateRenderError, MailcarrierError) and TemplateRenderError.kind is ErrorKind.INVALID_INPUT
    assert issubclass(TemplateRenderError, ValueError)  # callers that catch ValueError still do
    assert issubclass(DnsQueryError, MailcarrierError) and DnsQueryError.kind is ErrorKind.UNAVAILABLE
    assert DeliveryTimeoutError.kind is ErrorKind.UNAVAILABLE and issubclass(DeliveryTimeoutError, TimeoutError)


@pytest.mark.parametrize("kind", list(ErrorKind))
async def test_the_api_answers_each_kind_with_its_problem_type(kind: ErrorKind) -> None:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/fail")
    def fail() -> None:
        raise EXAMPLES[kind]

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://mc.test") as client:
        response = await client.get("/fail")
    problem_type, status = PROBLEM_TYPES[kind]
    assert response.status_code == status
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["type"] == problem_type and body["status"] == status
    if kind is ErrorKind.UNAVAILABLE:
        assert "10.0.0.5" not in response.text  # internals stay in the server log
    else:
        assert body["detail"] == str(EXAMPLES[kind])


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_a_command_ends_with_the_kinds_exit_status(kind: ErrorKind, capsys: pytest.CaptureFixture[str]) -> None:
    app = typer.Typer()

    @app.command()
    def go() -> None:
        raise EXAMPLES[kind]

    with pytest.raises(SystemExit) as ended:
        run(lambda: app([], standalone_mode=True))
    assert ended.value.code == int(EXIT_CODES[kind])
    err = capsys.readouterr().err
    assert err.strip() == f"error ({kind.value}): {EXAMPLES[kind]}" and "Traceback" not in err


def test_services_raise_no_bare_builtin_errors() -> None:
    """A service refuses a value with InvalidInputError (a ValueError too), not a bare
    ValueError that the API would answer with a 500 and the CLI with a traceback."""
    services = Path(mailcarrier.__file__).parent / "services"
    bare = []
    for path in sorted(services.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) \
                    and isinstance(node.exc.func, ast.Name) and node.exc.func.id in ("ValueError", "LookupError"):
                bare.append(f"{path.relative_to(services)}:{node.lineno}")
    assert bare == []
