"""The IMAP poller against a tiny IMAP4rev1 server written here (asyncio, loopback, no TLS).

The server keeps real state (messages, flags, expunges) and speaks just the commands imaplib
sends for a poll: CAPABILITY, LOGIN, SELECT, UID SEARCH, UID FETCH, UID STORE, EXPUNGE, LOGOUT.
"""

from __future__ import annotations

import asyncio
import imaplib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from mailcarrier.cli import bounces_cmd
from mailcarrier.inbound.imap_poller import FLAG, ImapSettings, poll_imap
from mailcarrier.services.inbound import list_inbound, process_all
from mailcarrier.storage.engine import make_engine
from tests.inbound.factory import BOUNCE_DOMAIN, CTX, KEY, T0, World, contact, delivery, dsn, make_world
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture


@dataclass
class Mail:
    uid: int
    raw: bytes
    flags: set[str] = field(default_factory=set)


class TinyImap:
    """One mailbox, one user; enough of RFC 3501 for a poll."""

    def __init__(self, messages: list[bytes], password: str = "secret") -> None:
        self.mails = [Mail(i + 1, raw) for i, raw in enumerate(messages)]
        self.password = password
        self.commands: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TinyImap:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()
        server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK TinyImap ready\r\n")
        while line := await reader.readline():
            tag, _, rest = line.decode().rstrip("\r\n").partition(" ")
            command, _, args = rest.partition(" ")
            self.commands.append(f"{command.upper()} {args}".strip())
            if command.upper() == "UID":
                command, _, args = args.partition(" ")
                command = "UID " + command.upper()
            writer.write(self._answer(tag, command.upper(), args))
            await writer.drain()
            if command.upper() == "LOGOUT":
                break
        writer.close()

    def _by_uids(self, uid_set: str) -> list[Mail]:
        wanted = {int(u) for u in uid_set.split(",")}
        return [m for m in self.mails if m.uid in wanted]

    def _answer(self, tag: str, command: str, args: str) -> bytes:
        ok = f"{tag} OK {command} completed\r\n".encode()
        if command == "CAPABILITY":
            return b"* CAPABILITY IMAP4rev1\r\n" + ok
        if command == "LOGIN":
            _user, password = args.split(" ", 1)
            return ok if password.strip('"') == self.password else f"{tag} NO bad login\r\n".encode()
        if command == "SELECT":
            return f"* {len(self.mails)} EXISTS\r\n* FLAGS (\\Seen \\Deleted)\r\n{tag} OK [READ-WRITE] done\r\n".encode()
        if command == "UID SEARCH":
            keyword = args.rsplit(maxsplit=1)[-1]
            uids = " ".join(str(m.uid) for m in self.mails if keyword not in m.flags)
            return f"* SEARCH {uids}\r\n".encode() + ok
        if command == "UID FETCH":
            uid_set, _ = args.split(" ", 1)
            out = b""
            for index, mail in enumerate(self._by_uids(uid_set), start=1):
                out += f"* {index} FETCH (UID {mail.uid} BODY[] {{{len(mail.raw)}}}\r\n".encode() + mail.raw + b")\r\n"
            return out + ok
        if command == "UID STORE":
            uid_set, _, flags = args.split(" ", 2)
            for mail in self._by_uids(uid_set):
                mail.flags.update(re.findall(r"[\\$]?\w+", flags))
            return ok
        if command == "EXPUNGE":
            self.mails = [m for m in self.mails if "\\Deleted" not in m.flags]
            return ok
        if command == "LOGOUT":
            return b"* BYE\r\n" + ok
        return f"{tag} BAD unknown command\r\n".encode()


@pytest.fixture
def world(empty_engine: Engine) -> Iterator[World]:  # noqa: F811
    yield make_world(empty_engine, ["ann@aol.test", "bob@aol.test"])


def _config(server: TinyImap, *, delete: bool = False, password: str = "secret") -> ImapSettings:
    return ImapSettings("127.0.0.1", server.port, "bounces", password, tls=False, delete=delete,
                        starttls=False)  # the tiny server has no TLS


def test_poll_stores_flags_and_never_deletes_by_default(world: World) -> None:
    ann, bob = world.sent["ann@aol.test"], world.sent["bob@aol.test"]
    mails = [dsn(to=ann.return_path, recipient=ann.email),
             dsn(to=bob.return_path, recipient=bob.email, status="4.2.2", diagnostic="smtp; 452 4.2.2 full")]
    with TinyImap(mails) as server:
        result = poll_imap(world.engine, _config(server), lambda: T0)
        assert (result.stored, result.deleted) == (2, 0)
        assert [m.flags for m in server.mails] == [{"\\Seen", FLAG}] * 2
        assert not any("BODY[]" in c and "PEEK" not in c for c in server.commands)  # read without \\Seen
        again = poll_imap(world.engine, _config(server), lambda: T0)  # flagged ones are skipped
        assert again.stored == 0
    process_all(world.engine, CTX, T0 + timedelta(hours=1))
    assert delivery(world.engine, ann.delivery_id)["state"] == "bounced_hard"
    assert contact(world.engine, bob.contact_id)["consecutive_soft_bounces"] == 1
    origins = sorted(m.origin for m in list_inbound(world.engine))
    assert origins == ["imap://bounces@127.0.0.1/INBOX;uid=1", "imap://bounces@127.0.0.1/INBOX;uid=2"]
    assert {m.source for m in list_inbound(world.engine)} == {"imap"}


def test_delete_only_when_configured(world: World) -> None:
    ann = world.sent["ann@aol.test"]
    with TinyImap([dsn(to=ann.return_path, recipient=ann.email)]) as server:
        result = poll_imap(world.engine, _config(server, delete=True), lambda: T0)
        assert (result.stored, result.deleted) == (1, 1)
        assert server.mails == []
        assert "EXPUNGE" in server.commands


def test_wrong_password_stores_nothing_and_raises(world: World) -> None:
    with TinyImap([b"Subject: x\r\n\r\nbody\r\n"]) as server:
        with pytest.raises(imaplib.IMAP4.error, match="bad login"):
            poll_imap(world.engine, _config(server, password="wrong"), lambda: T0)
        assert server.mails[0].flags == set()
    assert list_inbound(world.engine) == []


def test_cli_import_imap_polls_processes_and_reports_bad_login(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mc.db'}"
    engine = make_engine(url)
    world = make_world(engine, ["ann@aol.test"])
    ann = world.sent["ann@aol.test"]
    with TinyImap([dsn(to=ann.return_path, recipient=ann.email)]) as server:
        env = {"MAILCARRIER_DATABASE_URL": url, "MAILCARRIER_SECRET_KEY": KEY.decode(),
               "MAILCARRIER_BOUNCE_DOMAIN": BOUNCE_DOMAIN, "MAILCARRIER_DATA_DIR": str(tmp_path),
               "MAILCARRIER_IMAP_HOST": "127.0.0.1", "MAILCARRIER_IMAP_PORT": str(server.port),
               "MAILCARRIER_IMAP_TLS": "false", "MAILCARRIER_IMAP_STARTTLS": "false",
               "MAILCARRIER_IMAP_USER": "bounces",
               "MAILCARRIER_IMAP_PASSWORD": "secret"}
        result = CliRunner().invoke(bounces_cmd.app, ["import", "--imap"], env=env)
        assert result.exit_code == 0, result.output
        assert "IMAP: stored 1, deleted 0" in result.output
        bad = CliRunner().invoke(bounces_cmd.app, ["import", "--imap"],
                                 env={**env, "MAILCARRIER_IMAP_PASSWORD": "wrong"})
        assert bad.exit_code == 1 and "bad login" in bad.output
        misuse = CliRunner().invoke(bounces_cmd.app, ["import", "x.eml", "--every", "5"], env=env)
        assert misuse.exit_code == 2
    assert delivery(engine, ann.delivery_id)["state"] == "bounced_hard"
    engine.dispose()
