"""Fetch bounce emails from an IMAP mailbox (imaplib), store them raw, and flag them.

Messages are read with ``BODY.PEEK[]`` (reading does not mark them seen), stored, and only
then flagged ``\\Seen`` and ``$MailcarrierStored``; the next poll skips flagged ones. Nothing is
deleted unless the operator asked for it (``imap_delete``): deleting unread mail is a top
complaint about other list managers.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from mailcarrier.config import Settings
from mailcarrier.domain.errors import ConfigurationError
from mailcarrier.services.inbound import IncomingEmail, store_incoming

__all__ = ["FLAG", "ImapSettings", "PollResult", "poll_imap"]

log = logging.getLogger(__name__)

FLAG = "$MailcarrierStored"
_UID = re.compile(rb"UID (\d+)")
_BATCH = 200


@dataclass(frozen=True, slots=True)
class ImapSettings:
    host: str
    port: int
    user: str
    password: str
    folder: str = "INBOX"
    tls: bool = True
    delete: bool = False
    max_bytes: int = 10_000_000

    @classmethod
    def from_settings(cls, settings: Settings) -> ImapSettings:
        if not settings.imap_host or not settings.imap_user:
            raise ConfigurationError("IMAP polling needs MAILCARRIER_IMAP_HOST and MAILCARRIER_IMAP_USER")
        return cls(settings.imap_host, settings.imap_port, settings.imap_user, settings.imap_password,
                   settings.imap_folder, settings.imap_tls, settings.imap_delete,
                   settings.inbound_max_bytes)


@dataclass(frozen=True, slots=True)
class PollResult:
    stored: int
    deleted: int


def _check(response: tuple[str, Sequence[Any]], what: str) -> list[Any]:
    status, data = response
    if status != "OK":
        raise imaplib.IMAP4.error(f"IMAP {what} failed: {data!r}")
    return list(data)


def _fetch(client: imaplib.IMAP4, uid: bytes, config: ImapSettings) -> bytes | None:
    data = _check(client.uid("FETCH", uid.decode("ascii"), "(BODY.PEEK[])"), "FETCH")
    for item in data:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
            return item[1]
    log.warning("IMAP message uid %s had no body", uid.decode("ascii"), extra={"event": "inbound.imap_empty"})
    return None


def poll_imap(engine: Engine, config: ImapSettings, now: Callable[[], datetime]) -> PollResult:
    """Store every message of the folder not yet flagged, then flag (or delete) it."""
    factory = imaplib.IMAP4_SSL if config.tls else imaplib.IMAP4
    client = factory(config.host, config.port)
    stored = deleted = 0
    try:
        _check(client.login(config.user, config.password), "LOGIN")
        _check(client.select(config.folder), "SELECT")
        data = _check(client.uid("SEARCH", f"UNKEYWORD {FLAG}"), "SEARCH")
        uids = [u for chunk in data if isinstance(chunk, bytes) for u in chunk.split()]
        origin = f"imap://{config.user}@{config.host}/{config.folder}"
        for start in range(0, len(uids), _BATCH):
            batch = uids[start:start + _BATCH]
            emails: list[IncomingEmail] = []
            for uid in batch:
                raw = _fetch(client, uid, config)
                if raw is None:
                    continue
                truncated = len(raw) > config.max_bytes
                emails.append(IncomingEmail(raw[:config.max_bytes], "imap",
                                            f"{origin};uid={uid.decode('ascii')}", truncated=truncated))
            store_incoming(engine, emails, now())
            stored += len(emails)
            uid_set = ",".join(u.decode("ascii") for u in batch)
            _check(client.uid("STORE", uid_set, "+FLAGS", f"(\\Seen {FLAG})"), "STORE")
            if config.delete:
                _check(client.uid("STORE", uid_set, "+FLAGS", "(\\Deleted)"), "STORE")
                deleted += len(batch)
        if config.delete and deleted:
            _check(client.expunge(), "EXPUNGE")
    finally:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            client.logout()
    return PollResult(stored, deleted)
