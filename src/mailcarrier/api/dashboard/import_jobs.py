"""CSV imports started from the dashboard, run in a background thread so the browser can
show their progress (bytes of the file read so far) and then their result.

The import itself is :func:`mailcarrier.services.contact_import.import_csv`, as for the
REST API and the CLI. Jobs live in the memory of the server process that runs them (the
last :data:`KEEP` of them): their result page is for the person watching the import; the
contacts themselves are in the database either way.
"""

from __future__ import annotations

import csv
import secrets
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from mailcarrier.domain.errors import MailcarrierError
from mailcarrier.services.contact_import import ImportReport, import_csv

__all__ = ["ImportJob", "ImportJobs", "RejectedRow", "upload_dir"]

KEEP = 50


@dataclass(frozen=True, slots=True)
class RejectedRow:
    line: int
    reason: str
    values: tuple[str, ...]


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
    report: ImportReport | None = None
    header: tuple[str, ...] = ()
    rejected: list[RejectedRow] = field(default_factory=list)

    @property
    def percent(self) -> int:
        if self.state != "running":
            return 100
        return min(99, int(100 * self.consumed / self.size)) if self.size else 0


class ImportJobs:
    """The jobs of one application; thread-safe."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, ImportJob] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, account_id: int, job_id: str) -> ImportJob | None:
        with self._lock:
            job = self._jobs.get(job_id)
        return job if job is not None and job.account_id == account_id else None

    def start(self, engine: Engine, account_id: int, audience: str, filename: str, path: Path, size: int,
              now: datetime, *, cleanup: Callable[[], None]) -> ImportJob:
        """Run the import of ``path`` in a thread; ``cleanup`` removes the file afterwards."""
        job = ImportJob(secrets.token_urlsafe(12), account_id, audience, filename, size, now)
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > KEEP:
                self._jobs.popitem(last=False)
        thread = threading.Thread(target=self._run, args=(job, engine, path, now, cleanup),
                                  name=f"dashboard-import-{job.id}", daemon=True)
        thread.start()
        return job

    @staticmethod
    def _run(job: ImportJob, engine: Engine, path: Path, now: datetime, cleanup: Callable[[], None]) -> None:
        def progress(consumed: int) -> None:
            job.consumed = consumed

        try:
            report = import_csv(engine, job.account_id, job.audience, path, now, on_progress=progress)
            job.header, job.rejected = _rejected_rows(path, report)
            job.report = report
            job.state = "done"
        except UnicodeDecodeError:
            job.error, job.state = "the file is not UTF-8 text; export it as CSV UTF-8", "failed"
        except (MailcarrierError, ValueError, OSError) as exc:
            job.error, job.state = str(exc), "failed"
        except Exception as exc:  # the page must say the import ended, whatever ended it
            job.error, job.state = f"the import failed: {type(exc).__name__}: {exc}", "failed"
        finally:
            cleanup()


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
