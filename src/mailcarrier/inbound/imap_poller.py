"""Fetch bounce emails from an IMAP mailbox (imaplib), store them raw, and flag them.

Messages are read with ``BODY.PEEK[]`` (reading does not mark them seen), stored, and only
then flagged ``\\Seen`` and ``$MailcarrierStored``; the next poll skips flagged ones. Nothing is
deleted unless the operator asked for it (``imap_delete``): deleting unread mail is a top
complaint about other list managers.

The connection is private and bounded in time: IMAPS, or plain IMAP upgraded with STARTTLS
(refused when the server does not offer it, unless ``imap_starttls`` is off); the server's
certificate and name are always verified (``imap_ca_file`` for a self-signed or private CA);
connecting and every command time out after ``imap_timeout`` seconds.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import re
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from mailcarrier.config import Settings
from mailcarrier.domain.errors import ConfigurationError, MailcarrierError
from mailcarrier.services.inbound import IncomingEmail, store_incoming

__all__ = ["FLAG", "ImapError", "ImapSecurityError", "ImapSettings", "PollResult", "poll_imap"]

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
    starttls: bool = True  #: without ``tls``: STARTTLS, required
    ca_file: Path | None = None  #: trust this CA (or self-signed certificate) instead of the system's
    timeout: float = 30.0  #: seconds, for connecting and for each command

    @classmethod
    def from_settings(cls, settings: Settings) -> ImapSettings:
        if not settings.imap.host or not settings.imap.user:
            raise ConfigurationError("IMAP polling needs MAILCARRIER_IMAP_HOST and MAILCARRIER_IMAP_USER")
        imap = settings.imap
        return cls(imap.host, imap.port, imap.user, imap.password.get_secret_value(), imap.folder, imap.tls,
                   imap.delete, settings.inbound.max_bytes, imap.starttls, imap.ca_file, imap.timeout)


class ImapError(MailcarrierError):
    """The IMAP server could not be used: no answer in time, or see :class:`ImapSecurityError`."""


class ImapSecurityError(ImapError):
    """The IMAP connection could not be made private: untrusted certificate, no STARTTLS."""


def _tls_context(config: ImapSettings) -> ssl.SSLContext:
    """Verifying context: chain and host name, against ``ca_file`` or the system's CAs."""
    if config.ca_file is not None and not config.ca_file.is_file():
        raise ConfigurationError(f"MAILCARRIER_IMAP_CA_FILE {config.ca_file} is not a readable file")
    try:
        return ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
    except ssl.SSLError as exc:
        raise ConfigurationError(f"MAILCARRIER_IMAP_CA_FILE {config.ca_file}: not a PEM certificate "
                                 f"({exc})") from exc


def _connect(config: ImapSettings) -> imaplib.IMAP4:
    """A logged-out client over a verified TLS connection (or plain, if so configured)."""
    where = f"{config.host}:{config.port}"
    context = _tls_context(config) if config.tls or config.starttls else None
    try:
        if config.tls:
            assert context is not None
            return imaplib.IMAP4_SSL(config.host, config.port, ssl_context=context, timeout=config.timeout)
        client = imaplib.IMAP4(config.host, config.port, timeout=config.timeout)
    except ssl.SSLCertVerificationError as exc:
        raise ImapSecurityError(_untrusted(where, config, exc)) from exc
    except TimeoutError as exc:
        raise ImapError(f"IMAP server {where} did not answer within {config.timeout:g} s "
                        "(MAILCARRIER_IMAP_TIMEOUT)") from exc
    if context is None:
        log.warning("IMAP login to %s without TLS (imap_starttls is off)", where,
                    extra={"event": "inbound.imap_plain"})
        return client
    if "STARTTLS" not in client.capabilities:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            client.logout()
        raise ImapSecurityError(
            f"IMAP server {where} does not offer STARTTLS, so the password would travel in clear; "
            "use IMAPS (MAILCARRIER_IMAP_TLS=true, port 993) or, for a trusted private network only, "
            "MAILCARRIER_IMAP_STARTTLS=false")
    try:
        client.starttls(ssl_context=context)
    except ssl.SSLCertVerificationError as exc:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            client.shutdown()
        raise ImapSecurityError(_untrusted(where, config, exc)) from exc
    return client


def _untrusted(where: str, config: ImapSettings, exc: ssl.SSLCertVerificationError) -> str:
    hint = ("check that MAILCARRIER_IMAP_CA_FILE signs it" if config.ca_file else
            "for a self-signed or private-CA server, give its CA in MAILCARRIER_IMAP_CA_FILE")
    return f"IMAP server {where}: certificate not trusted ({exc.verify_message}); {hint}"


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
    client = _connect(config)
    try:
        return _poll(engine, config, now, client)
    except TimeoutError as exc:
        raise ImapError(f"IMAP server {config.host}:{config.port} did not answer a command within "
                        f"{config.timeout:g} s (MAILCARRIER_IMAP_TIMEOUT)") from exc
    finally:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            client.logout()


def _poll(engine: Engine, config: ImapSettings, now: Callable[[], datetime],
          client: imaplib.IMAP4) -> PollResult:
    stored = deleted = 0
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
    return PollResult(stored, deleted)
