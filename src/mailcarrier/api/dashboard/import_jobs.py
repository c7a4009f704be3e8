"""CSV imports started from the dashboard, run in a background thread so the browser can
show their progress (bytes of the file read so far) and then their result.

The import itself is :func:`mailcarrier.services.contact_import.import_csv`, as for the
REST API and the CLI. Each job's state is a small JSON file under the data directory,
rewritten as the import advances, so every server process of ``serve --workers N`` (and a
restarted server) can show it; files older than :data:`KEEP_FOR` are removed.
"""

from __future__ import annotations

import csv
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from mailcarrier.domain.errors import MailcarrierError
from mailcarrier.services.contact_import import ImportReport, import_csv

__all__ = ["ImportJob", "ImportJobs", "RejectedRow", "upload_dir"]

KEEP_FOR = timedelta(days=7)
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{16}$")


@dataclass(frozen=True, slots=True)
class RejectedRow:
    line: int
    reason: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ImportCounts:
    rows_read: int
    rows_imported: int
    duplicates_merged: int
    bad_count: int


@dataclass
class ImportJob:
    """One import: what it reads, how far it got, and what it did."""

    id: str
    account_id: int
    audience: str
    filename: str
    size: int
    started_at: datetime
    consumed: int = 0
    state: str = "running"  #: running, done or failed
    error: str | None = None
    report: ImportCounts | None = None
    header: tuple[str, ...] = ()
    rejected: list[RejectedRow] = field(default_factory=list)

    @property
    def percent(self) -> int:
        if self.state != "running":
            return 100
        return min(99, int(100 * self.consumed / self.size)) if self.size else 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImportJob:
        return cls(
            id=str(data["id"]), account_id=int(data["account_id"]), audience=str(data["audience"]),
            filename=str(data["filename"]), size=int(data["size"]),
            started_at=datetime.fromisoformat(data["started_at"]), consumed=int(data["consumed"]),
            state=str(data["state"]), error=data.get("error"),
            report=ImportCounts(**data["report"]) if data.get("report") else None,
            header=tuple(data.get("header") or ()),
            rejected=[RejectedRow(int(r["line"]), str(r["reason"]), tuple(r["values"]))
                      for r in data.get("rejected") or ()])


class ImportJobs:
    """The import jobs kept in ``directory`` (one JSON file each)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, job_id: str) -> Path:
        return self.directory / f"{job_id}.json"

    def save(self, job: ImportJob) -> None:
        """Write the job's state atomically (a reader never sees half a file)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".job-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(job.to_json(), out)
        os.replace(temporary, self._path(job.id))

    def get(self, account_id: int, job_id: str) -> ImportJob | None:
        """The account's job, or None (unknown id, another account's job, or an unreadable file)."""
        if not _JOB_ID.fullmatch(job_id):
            return None
        try:
            job = ImportJob.from_json(json.loads(self._path(job_id).read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return job if job.account_id == account_id else None

    def start(self, engine: Engine, account_id: int, audience: str, filename: str, path: Path, size: int,
              now: datetime, *, cleanup: Callable[[], None]) -> ImportJob:
        """Run the import of ``path`` in a thread; ``cleanup`` removes the file afterwards."""
        self._forget_old()
        job = ImportJob(secrets.token_urlsafe(12), account_id, audience, filename, size, now)
        self.save(job)
        thread = threading.Thread(target=self._run, args=(job, engine, path, now, cleanup),
                                  name=f"dashboard-import-{job.id}", daemon=True)
        thread.start()
        return job

    def _forget_old(self) -> None:
        limit = time.time() - KEEP_FOR.total_seconds()
        for old in self.directory.glob("*.json") if self.directory.exists() else ():
            try:
                if old.stat().st_mtime < limit:
                    old.unlink()
            except OSError:
                continue

    def _run(self, job: ImportJob, engine: Engine, path: Path, now: datetime,
             cleanup: Callable[[], None]) -> None:
        def progress(consumed: int) -> None:
            job.consumed = consumed
            self.save(job)

        try:
            report = import_csv(engine, job.account_id, job.audience, path, now, on_progress=progress)
            job.header, job.rejected = _rejected_rows(path, report)
            job.report = ImportCounts(report.rows_read, report.rows_imported, report.duplicates_merged,
                                      report.bad_count)
            job.state = "done"
        except UnicodeDecodeError:
            job.error, job.state = "the file is not UTF-8 text; export it as CSV UTF-8", "failed"
        except (MailcarrierError, ValueError, OSError) as exc:
            job.error, job.state = str(exc), "failed"
        except Exception as exc:  # the page must say the import ended, whatever ended it
            job.error, job.state = f"the import failed: {type(exc).__name__}: {exc}", "failed"
        finally:
            cleanup()
            self.save(job)


def _rejected_rows(path: Path, report: ImportReport) -> tuple[tuple[str, ...], list[RejectedRow]]:
    """The file's header and the rejected rows with their values, read again from the file
    (only when there are some), so the marketer can correct them and import them again."""
    if not report.bad_rows:
        return (), []
    wanted = {bad.line: bad.reason for bad in report.bad_rows}
    found: dict[int, tuple[str, ...]] = {}
    header: tuple[str, ...] = ()
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = tuple(next(reader))
            for values in reader:
                if reader.line_num in wanted:
                    found[reader.line_num] = tuple(values)
        except (csv.Error, StopIteration):
            pass
    return header, [RejectedRow(bad.line, bad.reason, found.get(bad.line, ())) for bad in report.bad_rows]


def upload_dir() -> tuple[Path, Callable[[], None]]:
    """A private temporary directory for one upload, and the function that removes it."""
    directory = Path(tempfile.mkdtemp(prefix="mailcarrier-import-"))
    return directory, lambda: shutil.rmtree(directory, ignore_errors=True)
