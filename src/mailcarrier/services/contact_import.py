"""Streaming CSV import of contacts into an audience.

The file is read row by row (``csv`` over the open file) and written in batches, so memory
stays bounded whatever the file size. Good rows go in; each bad row is reported with its
line number and reason. Addresses are validated with email-validator (no DNS) and stored
normalised: domain in IDNA (ASCII) form, the whole address lower-cased, so duplicates merge.
Re-running the same import changes nothing.
"""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Connection, Engine

from mailcarrier.domain.errors import ConflictError, InvalidInputError, NotFoundError, ParseError
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage import contacts as contact_repo
from mailcarrier.storage.engine import run_write

__all__ = ["BadRow", "ImportReport", "import_csv", "normalise_address"]

#: Rows per transaction: large enough that commits and checkpoints are amortised (see
#: storage.engine), small enough to keep the import well under 300 MB.
BATCH_ROWS = 20_000
MAX_FIELD_CHARS = 4_096
EMAIL_COLUMNS = ("email", "e-mail", "email_address", "address")
NAME_COLUMNS = {"first_name": "first_name", "firstname": "first_name",
                "last_name": "last_name", "lastname": "last_name"}
CONSENT_COLUMN = "consent_source"
MAX_BAD_ROWS_KEPT = 10_000
MAX_BATCH_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    reason: str


@dataclass(slots=True)
class ImportReport:
    """What an import did; ``bad_rows`` keeps the first MAX_BAD_ROWS_KEPT of them."""

    rows_read: int = 0
    rows_imported: int = 0
    duplicates_merged: int = 0
    bad_count: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)

    def reject(self, line: int, reason: str) -> None:
        self.bad_count += 1
        if len(self.bad_rows) < MAX_BAD_ROWS_KEPT:
            self.bad_rows.append(BadRow(line, reason))


# RFC 5322 dot-atom in ASCII: the common case, checked without the full validator.
_SIMPLE_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
MAX_ADDRESS_LENGTH = 254
MAX_LOCAL_LENGTH = 64


def normalise_address(raw: str) -> str:
    """The canonical form of an address; raises ValueError with the reason if invalid.

    Domains repeat across a list, so the (costly) IDNA/domain validation is cached per
    domain and plain ASCII local parts are checked by pattern; anything unusual goes
    through the full email-validator check.
    """
    address = raw.strip()
    local, at, domain = address.rpartition("@")
    if at and len(local) <= MAX_LOCAL_LENGTH and _SIMPLE_LOCAL.fullmatch(local):
        ascii_domain = _domain(domain)
        if len(local) + 1 + len(ascii_domain) <= MAX_ADDRESS_LENGTH:
            return f"{local}@{ascii_domain}".lower()
    return _full_check(address)


def _full_check(address: str) -> str:
    try:
        result = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidInputError(str(exc)) from exc
    return f"{result.local_part}@{result.ascii_domain}".lower()


@functools.lru_cache(maxsize=65_536)
def _domain(domain: str) -> str:
    """The validated ASCII (IDNA) form of a domain; ValueError (cached as such) if invalid."""
    return _full_check(f"probe@{domain}").partition("@")[2]


def import_csv(engine: Engine, account_id: int, audience_name: str, path: Path, now: datetime,
               *, on_progress: Callable[[int], None] | None = None,
               batch_rows: int = BATCH_ROWS) -> ImportReport:
    """Import ``path`` into the account's audience (created if missing)."""
    audience = _audience(engine, account_id, audience_name, now)
    report = ImportReport()
    # The database writes a batch in a thread while this one reads and validates the next:
    # the drivers release the GIL while the database works, so parsing (most of the time
    # in Python) and writing overlap. At most one batch waits, so memory stays bounded.
    # (Not for an in-memory SQLite database: each thread would get a database of its own.)
    threads = 0 if _in_memory_sqlite(engine) else 1
    with path.open("r", encoding="utf-8-sig", newline="") as handle, \
            ThreadPoolExecutor(max(1, threads), thread_name_prefix="contact-import-writer") as writer:
        writing: Future[int] | None = None
        try:
            for batch in _batches(handle, report, batch_rows, on_progress):
                if writing is not None:
                    done, writing = writing, None
                    report.rows_imported += done.result()
                if threads:
                    writing = writer.submit(_write_batch, engine, account_id, audience.id, batch, now)
                else:
                    report.rows_imported += _write_batch(engine, account_id, audience.id, batch, now)
        finally:
            # Also when reading failed: the batch in flight is counted, or its write error
            # is raised (the reading error then shows as its context).
            if writing is not None:
                report.rows_imported += writing.result()
    return report


def _in_memory_sqlite(engine: Engine) -> bool:
    database = engine.url.database or ""
    return engine.dialect.name == "sqlite" and (
        database in ("", ":memory:") or "mode=memory" in database or database.startswith("file::memory:"))


def _write_batch(engine: Engine, account_id: int, audience_id: int, batch: list[dict[str, Any]],
                 now: datetime) -> int:
    """One batch in one transaction, run again if PostgreSQL aborted it to break a deadlock
    (a concurrent event batch locks the same contacts in id order, the import in address order)
    or SQLite's write lock stayed taken past the busy timeout.
    """
    def unit(conn: Connection) -> int:
        contact_repo.upsert_contacts(conn, account_id, audience_id, batch, now)
        return len(batch)

    return run_write(engine, unit, what="importing a batch of contacts", attempts=MAX_BATCH_ATTEMPTS)


def _audience(engine: Engine, account_id: int, name: str, now: datetime) -> account_repo.Audience:
    """The account's audience by name, created if missing.

    Two imports into a new audience race to create it: on SQLite the write transaction
    (BEGIN IMMEDIATE) makes read-then-create atomic; on PostgreSQL the loser's insert waits
    for the winner's commit, fails on the unique name, and reads the winner's row (a new
    statement under READ COMMITTED sees it).
    """
    def unit(conn: Connection) -> account_repo.Audience:
        try:
            return account_repo.audience_by_name(conn, account_id, name)
        except NotFoundError:
            pass
        try:
            return account_repo.create_audience(conn, account_id, name, now)
        except ConflictError:
            return account_repo.audience_by_name(conn, account_id, name)

    return run_write(engine, unit, what="finding the import's audience")


def _batches(handle: TextIO, report: ImportReport, size: int,
             on_progress: Callable[[int], None] | None) -> Iterator[list[dict[str, Any]]]:
    consumed = [0]
    reader = csv.reader(_counted(handle, consumed), strict=True)
    header, email_index = _header(reader)
    batch: dict[str, dict[str, Any]] = {}
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise ParseError(f"malformed CSV at line {reader.line_num}: {exc}") from exc
        report.rows_read += 1
        if not "".join(values).strip():
            continue
        contact = _contact(values, header, email_index, reader.line_num, report)
        if contact is None:
            continue
        if contact["email"] in batch:
            report.duplicates_merged += 1
        batch[contact["email"]] = contact
        if len(batch) >= size:
            yield list(batch.values())
            batch = {}
            if on_progress is not None:
                on_progress(consumed[0])
    if batch:
        yield list(batch.values())
    if on_progress is not None:
        on_progress(consumed[0])


def _counted(handle: TextIO, consumed: list[int]) -> Iterator[str]:
    """The file's lines, adding each one's length to ``consumed[0]`` (for the progress bar)."""
    for line in handle:
        consumed[0] += len(line)
        yield line


def _header(reader: Any) -> tuple[list[str], int]:
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration as exc:
        raise ParseError("empty CSV: expected a header line with an 'email' column") from exc
    except csv.Error as exc:
        raise ParseError(f"malformed CSV header at line {reader.line_num}: {exc}") from exc
    for name in EMAIL_COLUMNS:
        if name in header:
            return header, header.index(name)
    raise ParseError(f"no email column in the header (line 1): expected one of {EMAIL_COLUMNS}")


def _contact(values: list[str], header: list[str], email_index: int, line: int,
             report: ImportReport) -> dict[str, Any] | None:
    if len(values) != len(header):
        report.reject(line, f"expected {len(header)} fields, found {len(values)}")
        return None
    # One scan of the joined row finds the rare bad row; only then is the field named.
    joined = "\x1f".join(values)
    if "\n" in joined or "\r" in joined or "\x00" in joined:
        name = next(n for n, v in zip(header, values, strict=True)
                    if "\r" in v or "\n" in v or "\x00" in v)
        report.reject(line, f"line break or NUL in field {name!r} (header injection)")
        return None
    if len(joined) > MAX_FIELD_CHARS and max(map(len, values)) > MAX_FIELD_CHARS:
        name = next(n for n, v in zip(header, values, strict=True) if len(v) > MAX_FIELD_CHARS)
        report.reject(line, f"field {name!r} longer than {MAX_FIELD_CHARS} characters")
        return None
    try:
        email = normalise_address(values[email_index])
    except ValueError as exc:
        report.reject(line, f"invalid address {values[email_index]!r}: {exc}")
        return None
    contact: dict[str, Any] = {"email": email, "domain": email.rpartition("@")[2],
                               "first_name": "", "last_name": "", "consent_source": "import"}
    fields: dict[str, str] = {}
    for index, name in enumerate(header):
        if index == email_index or not name:
            continue
        value = values[index]
        if name in NAME_COLUMNS:
            contact[NAME_COLUMNS[name]] = value.strip()
        elif name == CONSENT_COLUMN:
            contact["consent_source"] = value.strip()[:64] or "import"
        else:
            fields[name] = value
    contact["fields"] = fields
    return contact
