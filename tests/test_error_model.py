"""One error model: every deliberate error has a kind, and each kind its own API problem type
and status and its own CLI exit status, from one table; errors that stood outside the root now
derive from it."""

from __future__ import annotations

import ast
import importlib
import os
import pkgutil
import socket
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import typer
from fastapi import FastAPI
from typer.testing import CliRunner

import mailcarrier
from mailcarrier.api.app import create_app
from mailcarrier.api.problems import PROBLEM_JSON, PROBLEM_TYPES, install_problem_handlers
from mailcarrier.cli import main as cli_main
from mailcarrier.cli.error_kinds import EXIT_CODES, run
from mailcarrier.cli.exit_codes import ExitCode
from mailcarrier.config import Settings
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
from mailcarrier.services.hygiene import DnsQueryError, DomainNotSendableError
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.api_keys import create_api_key
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.migrate import upgrade
from tests.services.local_dns import local_dns
from tests.services.test_hygiene import ZONE

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


def test_each_kind_has_its_own_problem_type_status_and_exit_status_from_one_table() -> None:
    assert set(PROBLEM_TYPES) == set(ErrorKind) == set(EXIT_CODES)
    types = [problem_type for problem_type, _status in PROBLEM_TYPES.values()]
    statuses = [status for _type, status in PROBLEM_TYPES.values()]
    codes = [int(code) for code in EXIT_CODES.values()]
    assert len(set(types)) == len(types) and len(set(statuses)) == len(statuses)
    assert len(set(codes)) == len(codes)  # one-to-one: a script tells the kinds apart by status alone
    for kind in ErrorKind:  # the API and the CLI read the same table
        assert PROBLEM_TYPES[kind] == (kind.problem_type, kind.http_status)
        assert kind.problem_type == f"urn:mailcarrier:problem:{kind.value}"
        assert EXIT_CODES[kind] == kind.exit_status
    assert {kind: int(code) for kind, code in EXIT_CODES.items()} == {
        ErrorKind.NOT_FOUND: 7, ErrorKind.CONFLICT: 8, ErrorKind.INVALID_INPUT: 9,
        ErrorKind.UNAVAILABLE: 10, ErrorKind.REFUSED_BY_POLICY: 5}
    # the general statuses keep their meaning: no kind takes 0-4 or 6
    general = {ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE, ExitCode.CHECK_FAILED, ExitCode.PARTIAL,
               ExitCode.INCONSISTENT}
    assert [int(code) for code in sorted(general)] == [0, 1, 2, 3, 4, 6]
    assert not general & set(EXIT_CODES.values())


def test_top_level_help_lists_each_kinds_exit_status() -> None:
    shown = CliRunner().invoke(cli_main.app, ["--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    for kind, code in EXIT_CODES.items():
        words = kind.value.replace("-by-", " by ").replace("-", " ")
        assert any(line.strip().startswith(f"{int(code)}  ") and words in line
                   for line in shown.stdout.splitlines()), (kind, shown.stdout)


def test_refusal_by_sender_hygiene_is_refused_by_policy_not_a_conflict() -> None:
    """The CLI ended a hygiene refusal with 5 (refused) while the API said 409 (conflict)."""
    assert DomainNotSendableError.kind is ErrorKind.REFUSED_BY_POLICY


def _silent_listener() -> socket.socket:
    """A TCP port that accepts connections and never says a word (an IMAP server that hangs)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    return listener


def test_each_kind_ends_a_real_command_with_its_own_exit_status(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MAILCARRIER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAILCARRIER_DATA_DIR", str(tmp_path / "data"))
    db = f"sqlite:///{tmp_path / 'mc.db'}"
    url = ["--database-url", db]
    invoke = CliRunner(env={"COLUMNS": "200"}).invoke
    (tmp_path / "c.csv").write_text("email\nann@example.com\n", encoding="utf-8")
    (tmp_path / "m.txt").write_text("Hello\nUnsubscribe: {{ unsubscribe_url }}\n", encoding="utf-8")
    for step in (["db", "upgrade"], ["accounts", "create", "shop"], ["pools", "create", "house", "dedicated"],
                 ["pools", "add-ip", "house", "127.0.0.2", "--warm"], ["pools", "assign", "shop", "house"],
                 ["contacts", "import", "c.csv", "--audience", "news", "--account", "shop"],
                 ["mailings", "create", "--subject", "Hi", "--from", "news@bad.test", "--audience", "news",
                  "--text", "m.txt", "--account", "shop"]):
        done = invoke(cli_main.app, [*step, *url])
        assert done.exit_code == 0, (step, done.output)

    ended = {
        ErrorKind.NOT_FOUND: invoke(cli_main.app, ["mailings", "show", "999", "--account", "shop", *url]),
        ErrorKind.CONFLICT: invoke(cli_main.app, ["accounts", "create", "shop", *url]),
        ErrorKind.INVALID_INPUT: invoke(cli_main.app, ["accounts", "create", "a b", *url]),
    }
    with _silent_listener() as imap:
        ended[ErrorKind.UNAVAILABLE] = invoke(cli_main.app, ["bounces", "import", "--imap"], env={
            "MAILCARRIER_DATABASE_URL": db, "MAILCARRIER_SECRET_KEY": "k" * 32,
            "MAILCARRIER_BOUNCE_DOMAIN": "bounces.shop.test", "MAILCARRIER_IMAP_HOST": "127.0.0.1",
            "MAILCARRIER_IMAP_PORT": str(imap.getsockname()[1]), "MAILCARRIER_IMAP_TLS": "false",
            "MAILCARRIER_IMAP_STARTTLS": "false", "MAILCARRIER_IMAP_USER": "u",
            "MAILCARRIER_IMAP_PASSWORD": "p", "MAILCARRIER_IMAP_TIMEOUT": "0.5"})
    with local_dns(ZONE) as resolver:  # bad.test fails sender hygiene: the pool refuses its mail
        for key, value in {"DKIM_SELECTOR": "s1", "BOUNCE_DOMAIN": "bounces.good.test",
                           "HOSTNAME": "mx.mailcarrier.test",
                           "HYGIENE_NAMESERVER": f"127.0.0.1:{resolver.port}"}.items():
            monkeypatch.setenv(f"MAILCARRIER_{key}", value)
        ended[ErrorKind.REFUSED_BY_POLICY] = invoke(cli_main.app, ["mailings", "send", "1", "--account", "shop",
                                                                   *url])

    reasons = {ErrorKind.NOT_FOUND: "mailing 999 not found", ErrorKind.CONFLICT: "already exists",
               ErrorKind.INVALID_INPUT: "invalid account slug", ErrorKind.UNAVAILABLE: "did not answer",
               ErrorKind.REFUSED_BY_POLICY: "bad.test"}
    for kind, result in ended.items():
        assert result.exit_code == EXIT_CODES[kind] == kind.exit_status, (kind, result.output)
        assert reasons[kind] in result.output and "Traceback" not in result.output, (kind, result.output)
    assert len({result.exit_code for result in ended.values()}) == len(ErrorKind)


async def test_the_real_api_answers_domain_errors_with_their_kinds_problem_type(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'mc.db'}")
    upgrade(engine)
    now = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
    with engine.begin() as conn:
        shop = account_repo.create_account(conn, "shop", "Shop", now)
        _, key = create_api_key(conn, shop.id, "k", ["audiences:*"], now)
    settings = Settings.of(data_dir=tmp_path / "data", secret_key="test-master-secret-0123456789",
                        public_url="http://mc.test")
    app = create_app(settings, engine, clock=lambda: now)
    headers = {"Authorization": f"Bearer {key}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mc.test", headers=headers) as http:
            made = await http.post("/api/v1/audiences", json={"name": "news"})
            answers = {
                ErrorKind.CONFLICT: await http.post("/api/v1/audiences", json={"name": "news"}),
                ErrorKind.INVALID_INPUT: await http.post("/api/v1/audiences", json={"name": "  "}),
                ErrorKind.NOT_FOUND: await http.get("/api/v1/audiences/999"),
            }
    engine.dispose()
    assert made.status_code == 201, made.text
    for kind, response in answers.items():
        assert response.status_code == kind.http_status, (kind, response.text)
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
        assert response.json()["type"] == kind.problem_type, (kind, response.text)


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
