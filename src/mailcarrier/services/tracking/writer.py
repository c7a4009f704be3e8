"""The hit writer at run time: the spool drained into the store, in a thread or a process.

:class:`HitRecorder` (in the web server) appends each accepted hit to an on-disk spool
(:mod:`.spool`), so neither a slow database nor the verdicts slow a redirect and an
accepted hit survives a crash. :class:`HitWriter` - a thread, or a process of its own
under ``mailcarrier serve`` - drains the spool in batches (:func:`.verdicts.record_hits`),
stores each segment's position with the hits it wrote, and settles what is due
(:func:`.settle.settle_hits`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import OperationalError

from mailcarrier.config import Settings
from mailcarrier.domain.contact_status import StatusPolicy
from mailcarrier.domain.machine_activity import (
    Network,
    load_networks,
)
from mailcarrier.services.tracking.hits import RawHit, decode_hit, encode_hit
from mailcarrier.services.tracking.keys import thresholds
from mailcarrier.services.tracking.settle import settle_hits
from mailcarrier.services.tracking.spool import SpoolProducer, SpoolReader, caught_up, spool_marks
from mailcarrier.services.tracking.verdicts import NetworkIndex, record_hits
from mailcarrier.storage.engine import run_write
from mailcarrier.storage.tracking_spool_tables import tracking_spool_positions

__all__ = ["HitRecorder", "HitWriter", "RecorderStats", "spool_directory"]

_log = logging.getLogger("mailcarrier.tracking")


def spool_directory(settings: Settings) -> Path:
    """Where accepted hits wait for the writer (``tracking_spool_dir`` or ``data_dir/tracking-spool``)."""
    return settings.tracking.spool_dir or settings.storage.data_dir / "tracking-spool"


@dataclass
class RecorderStats:
    submitted: int = 0
    written: int = 0
    dropped: int = 0
    failed_batches: int = 0
    settled: int = 0
    last_error: str = ""


class HitWriter:
    """Drains the hit spool into the database: verdicts in batches, then settling.

    It runs wherever the operator wants it: in a thread of the serving process
    (``tracking_writer = "thread"``, embedded use and tests) or in a process of its own
    (``"external"``, what ``mailcarrier serve`` starts), so classifying thousands of hits a
    second never holds the GIL the endpoints need. Only one writer drains a spool at a time
    (the spool's reader lock); a second one waits for the lock.

    A batch's spool position is stored in the database in the batch's own transaction
    (``tracking_spool_positions``), so a writer killed at any moment is resumed by the next
    one exactly after the last stored hit: none lost, none stored twice. A database that
    is slow, locked or down delays hits but loses none: they wait on disk and are retried.
    A hit the database rejects for what it contains is written alone and dropped (logged)
    so it cannot block the ones behind it.
    """

    def __init__(self, engine: Engine, settings: Settings, policy: StatusPolicy, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 networks: Sequence[Network] | None = None, settle_interval: float = 1.0,
                 poll_interval: float = 0.02, stats: RecorderStats | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.policy = policy
        self.clock = clock
        self.stats = stats or RecorderStats()
        self.settle_interval = settle_interval
        self.poll_interval = poll_interval
        self.reader = SpoolReader(spool_directory(settings))
        self._limits = thresholds(settings)
        self._networks = NetworkIndex(load_networks() if networks is None else networks)
        self._hold = timedelta(seconds=settings.tracking.hold_seconds)

    def run(self, stop: threading.Event, *, give_up_after: float = 30.0) -> None:
        """Drain until ``stop`` is set, then drain what is spooled and return.

        ``give_up_after``: once stopping, seconds to keep retrying a failing database before
        leaving the rest in the spool for the next writer (nothing is lost either way).
        """
        if not self.reader.acquire(stop=stop):
            return
        try:
            last_settle = time.monotonic()  # as before: the first settle after one interval
            stopping_since: float | None = None
            failures = 0  # in a row, for the back-off
            adopted = False
            while True:
                if stopping_since is None and stop.is_set():
                    stopping_since = time.monotonic()
                try:
                    if not adopted:
                        self.adopt_stored_positions()
                        adopted = True
                    handled = self.drain_once()
                except (OperationalError, OSError) as exc:  # database or disk unavailable: hits wait
                    self._note_failure(exc)
                    if stopping_since is not None and time.monotonic() - stopping_since > give_up_after:
                        _log.error("stopping with %d bytes of hits left in the spool: %r",
                                   self.reader.backlog_bytes(), exc)
                        return
                    failures += 1
                    time.sleep(min(2.0, 0.05 * 2 ** min(failures, 6)))
                    continue
                failures = 0
                now = time.monotonic()
                if now - last_settle >= self.settle_interval or (handled == 0 and stopping_since):
                    self._settle_quietly()
                    last_settle = now
                if handled == 0:
                    if stopping_since is not None:
                        self._forget(self.reader.retire())
                        return
                    stop.wait(self.poll_interval)
        finally:
            self.reader.release()

    def drain_once(self) -> int:
        """Write one batch from the spool; returns the number of records handled (0: none waiting)."""
        batch = self.reader.read(self.settings.tracking.batch_size)
        if not batch.records:
            self._forget(self.reader.retire())
            return 0
        hits: list[RawHit] = []
        for record in batch.records:
            try:
                hits.append(decode_hit(record))
            except (ValueError, KeyError, TypeError) as exc:
                self.stats.dropped += 1
                _log.error("skipping an unreadable spool record %r: %r", record[:200], exc)
        self._write(hits, batch.ends)
        self._forget(self.reader.commit(batch))
        return len(batch.records)

    def settle(self) -> int:
        """Settle what is due now (also run periodically by ``run``)."""
        count = settle_hits(self.engine, self.policy, now=self.clock(), hold=self._hold)
        self.stats.settled += count
        return count

    def adopt_stored_positions(self) -> None:
        """Resume each segment after the last hit stored from it (the database knows best)."""
        with self.engine.connect() as conn:
            stored = {str(r.segment): int(r.position) for r in conn.execute(
                select(tracking_spool_positions.c.segment, tracking_spool_positions.c.position))}
        self.reader.adopt(stored)
        self._forget(sorted(set(stored) - set(self.reader.segment_names())))

    def _forget(self, removed: Sequence[str]) -> None:
        """Drop the stored positions of segments deleted from the spool."""
        if removed:
            run_write(self.engine, lambda conn: conn.execute(delete(tracking_spool_positions).where(
                tracking_spool_positions.c.segment.in_(list(removed)))), what="forgetting spool positions")

    def _write(self, batch: Sequence[RawHit], positions: Mapping[str, int]) -> None:
        """Write a batch and its spool positions; OperationalError propagates (retry later),
        other failures go hit by hit (the positions then with the last one)."""
        try:
            self.stats.written += record_hits(self.engine, batch, limits=self._limits,
                                              networks=self._networks, now=self.clock(),
                                              spool_positions=positions)
            return
        except OperationalError:
            raise
        except Exception as exc:  # something in the batch itself: find it hit by hit
            self._note_failure(exc)
        for index, hit in enumerate(batch):
            last = index == len(batch) - 1
            try:
                self.stats.written += record_hits(self.engine, [hit], limits=self._limits,
                                                  networks=self._networks, now=self.clock(),
                                                  spool_positions=positions if last else None)
            except OperationalError:
                raise
            except Exception as exc:
                self.stats.dropped += 1
                _log.error("dropping tracking hit %r: %r", replace(hit, headers={}), exc)
                if last:
                    record_hits(self.engine, [], limits=self._limits, networks=self._networks,
                                now=self.clock(), spool_positions=positions)

    def _note_failure(self, exc: Exception) -> None:
        self.stats.failed_batches += 1
        self.stats.last_error = repr(exc)
        _log.warning("writing tracking hits failed: %r", exc)

    def _settle_quietly(self) -> None:
        try:
            self.settle()
        except Exception as exc:  # settling is retried on the next round
            self.stats.last_error = repr(exc)
            _log.warning("settling tracking hits failed: %r", exc)


@dataclass
class HitRecorder:
    """What the endpoints hand hits to: appends each to the on-disk spool, never blocking on the database.

    ``submit`` costs one ``write(2)``; a hit it accepted survives a crash of this process
    and is written by the next writer. With ``tracking_writer = "thread"`` ``start`` runs a
    :class:`HitWriter` in a background thread; with ``"external"`` another process does
    (``mailcarrier serve`` starts it), and this process only appends.
    """

    engine: Engine
    settings: Settings
    policy: StatusPolicy
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    networks: Sequence[Network] = field(default_factory=load_networks)
    settle_interval: float = 1.0
    stats: RecorderStats = field(default_factory=RecorderStats)

    def __post_init__(self) -> None:
        self.spool_dir = spool_directory(self.settings)
        self._producer = SpoolProducer(self.spool_dir)
        self._writer = HitWriter(self.engine, self.settings, self.policy, clock=self.clock,
                                 networks=self.networks, settle_interval=self.settle_interval,
                                 stats=self.stats)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the writer thread, unless an external writer process drains the spool."""
        if self.settings.tracking.writer == "thread" and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._writer.run, args=(self._stop,),
                                            name="mailcarrier-hit-writer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Close this process's spool segment; a writer thread writes what is spooled, then ends."""
        self._producer.close()
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout)
        self._thread = None

    def submit(self, hit: RawHit) -> None:
        """Spool a hit; if the disk refuses it, count and log it rather than fail the request."""
        self.stats.submitted += 1
        try:
            self._producer.append(encode_hit(hit))
        except OSError as exc:
            self.stats.dropped += 1
            self.stats.last_error = repr(exc)
            _log.error("could not spool a tracking hit in %s: %r", self.spool_dir, exc)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every hit spooled so far is in the database (whichever writer drains it)."""
        marks = spool_marks(self.spool_dir)
        deadline = time.monotonic() + timeout
        while not caught_up(self.spool_dir, marks):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def settle(self) -> int:
        """Settle what is due now (a running writer also does it periodically)."""
        return self._writer.settle()
