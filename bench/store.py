"""Contact store throughput on SQLite and PostgreSQL in one run, each against a naive peer.

For each backend (SQLite file, then PostgreSQL in a fresh schema) a child process:

1. imports a generated CSV of ``--rows`` contacts with the real streaming importer
   (rows/s, and the child's peak RSS, which is the import's: nothing else ran before it);
2. applies ``--rows`` delivery/bounce events through ``apply_events`` in batches of
   ``--batch`` (events/s), once per event order (``--order``, default both, on the same
   contacts one after the other):
   - ``send``: a mailing's outcomes in send order (contact order), as the delivery engine
     records them;
   - ``scattered``: events in no order (late bounces and clicks), every event on another
     page of the contact table (a prime stride through the ids).
   The event mix is 80% delivered, 10% soft, 5% invalid-address hard bounces, 5% blocks,
   each carrying its mailing's id as the engine's do. On PostgreSQL the tables are first
   vacuumed and analysed, as autovacuum does shortly after a bulk load (not timed);
3. measures the peers on the same database, on samples (they are linear, so a sample
   gives their rate without making the run hours long):
   - import peer: one INSERT per row through SQLAlchemy in one transaction (a hand-written
     loader), on ``--peer-rows`` rows into a plain table;
   - events peer: the hand-written loop, per event SELECT the contact, the same policy
     ``decide``, UPDATE the contact, INSERT the history row(s), committed per ``--batch``,
     on ``--peer-events`` events.

Each child runs on a fresh database, so the figures of one backend never include the other's
work. The last line gives the slower backend's events/s in send order against the naive loop
on that backend: the target (>= 20,000 events/s on both backends) is for the stream the
delivery engine produces, which is in send order. Scattered order is printed above it: late
bounces and clicks arrive in no order, but at a small fraction of a mailing's outcomes (a
million of them in a row is a stress case, bound by random page writes).

Usage: python bench/store.py [--rows 1000000] [--order send|scattered|both] [--writers N]
                             [--pg-url postgresql+psycopg://...] [--no-pg]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text

from mailcarrier.domain.contact_status import (
    ContactEvent,
    ContactState,
    DomainEvidence,
    EventKind,
    StatusPolicy,
    decide,
)
from mailcarrier.domain.vocabulary import Category, ContactStatus, Reason
from mailcarrier.services.contact_import import import_csv
from mailcarrier.services.contacts import ContactEventRecord, apply_events
from mailcarrier.services.mailings import MailingDraft, create_mailing
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.tables import activities, contacts

NOW = datetime(2026, 6, 1, tzinfo=UTC)
BENCH_SCHEMA = "mailcarrier_bench_store"
DEFAULT_PG = os.environ.get("MAILCARRIER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["email", "first_name", "last_name", "company", "city"])
        for i in range(rows):
            out.writerow([f"user{i}@domain{i % 5000}.example", f"First{i}", f"Last{i}",
                          f"Company {i % 977}", f"City {i % 313}"])


def fresh_schema(url: str) -> str:
    """Recreate a dedicated schema so the run never touches other tables; URL bound to it."""
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {BENCH_SCHEMA} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {BENCH_SCHEMA}"))
    admin.dispose()
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{BENCH_SCHEMA}"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


#: How events walk the contacts: "scattered" jumps by a prime stride (late bounces and
#: clicks arriving in no order: every event on another page); "send" follows a mailing's
#: send order (the worker records outcomes in delivery order, which is contact order).
STRIDES = {"scattered": 7919, "send": 1}


def events(account_id: int, contacts_count: int, count: int, rng: random.Random,
           first_contact: int = 1, stride: int = STRIDES["scattered"],
           mailing_id: int | None = None) -> Iterator[ContactEventRecord]:
    kinds = ((0.80, EventKind.DELIVERED, None, None),
             (0.90, EventKind.SOFT_BOUNCE, Reason.MAILBOXFULL, Category.TEMPORARY),
             (0.95, EventKind.HARD_BOUNCE, Reason.USERUNKNOWN, Category.INVALID_ADDRESS),
             (1.01, EventKind.HARD_BOUNCE, Reason.BLOCKED, Category.SPAM_BLOCK))
    for i in range(count):
        draw = rng.random()
        _, kind, reason, category = next(k for k in kinds if draw < k[0])
        when = NOW - timedelta(seconds=count - i)
        evidence = DomainEvidence(1, 20) if kind is EventKind.HARD_BOUNCE else None
        yield ContactEventRecord(account_id, first_contact + (i * stride) % contacts_count,
                                 ContactEvent(kind, when, reason, category, evidence),
                                 mailing_id=mailing_id,
                                 reply_code=550 if kind is EventKind.HARD_BOUNCE else None,
                                 cause="bench")


def naive_import_rate(engine: Engine, csv_path: Path, rows: int) -> float:
    """One INSERT per row (the import peer), into a plain table."""
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS naive_contacts"))
        conn.execute(text("CREATE TABLE naive_contacts (email VARCHAR(320) PRIMARY KEY, "
                          "first_name TEXT, last_name TEXT, company TEXT, city TEXT)"))
    insert = text("INSERT INTO naive_contacts VALUES (:e, :f, :l, :c, :t)")
    done = 0
    start = time.perf_counter()
    with engine.begin() as conn, csv_path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        for e, f, last, c, t in reader:
            if done >= rows:
                break
            conn.execute(insert, {"e": e, "f": f, "l": last, "c": c, "t": t})
            done += 1
    elapsed = time.perf_counter() - start
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE naive_contacts"))
    return done / elapsed


def naive_events_rate(engine: Engine, records: list[ContactEventRecord], batch: int) -> float:
    """The hand-written loop (the events peer): per event SELECT, decide, UPDATE, INSERT(s)."""
    policy = StatusPolicy()
    c = contacts.c
    start = time.perf_counter()
    for offset in range(0, len(records), batch):
        with engine.begin() as conn:
            for record in records[offset:offset + batch]:
                row = conn.execute(select(
                    c.status, c.email_invalid, c.consecutive_soft_bounces, c.consecutive_blocks,
                    c.total_bounces, c.last_delivered_at, c.last_engaged_at).where(
                    c.id == record.contact_id, c.account_id == record.account_id)).one()
                state = ContactState(ContactStatus(row.status), bool(row.email_invalid),
                                     row.consecutive_soft_bounces, row.consecutive_blocks,
                                     row.total_bounces, row.last_delivered_at, row.last_engaged_at)
                move = decide(policy, state, record.event, NOW)
                after = move.after
                values: dict[str, Any] = {
                    "status": after.status.value, "email_invalid": after.email_invalid,
                    "consecutive_soft_bounces": after.consecutive_soft_bounces,
                    "consecutive_blocks": after.consecutive_blocks,
                    "total_bounces": after.total_bounces,
                    "last_delivered_at": after.last_delivered_at,
                    "last_engaged_at": after.last_engaged_at, "updated_at": NOW,
                    "version": c.version + 1}
                if record.event.kind in (EventKind.SOFT_BOUNCE, EventKind.HARD_BOUNCE):
                    values.update(last_bounce_at=record.event.occurred_at,
                                  last_bounce_category=move.category and int(move.category),
                                  last_bounce_reason=move.reason and move.reason.value,
                                  last_bounce_reply_code=record.reply_code)
                if move.status_changed:
                    values["status_changed_at"] = NOW
                conn.execute(contacts.update().where(c.id == record.contact_id).values(**values))
                conn.execute(activities.insert().values(
                    account_id=record.account_id, contact_id=record.contact_id,
                    type=record.event.kind.value, occurred_at=record.event.occurred_at,
                    reason=move.reason and move.reason.value,
                    category=move.category and int(move.category), reply_code=record.reply_code,
                    cause=record.cause, details={"policy": list(move.because)}))
                if move.status_changed:
                    conn.execute(activities.insert().values(
                        account_id=record.account_id, contact_id=record.contact_id,
                        type="status_changed", occurred_at=record.event.occurred_at,
                        cause="; ".join(move.because),
                        details={"from": move.before.status.value, "to": after.status.value}))
    return len(records) / (time.perf_counter() - start)


def child(backend: str, url: str, csv_path: Path, args: argparse.Namespace) -> dict[str, float]:
    """One backend, in its own process: import, events in each order, then the peers on samples."""
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        account = account_repo.create_account(conn, "bench", "Bench", NOW)
    rss_before = peak_rss_mb()
    start = time.perf_counter()
    report = import_csv(engine, account.id, "bench", csv_path, NOW)
    import_s = time.perf_counter() - start
    import_rss = peak_rss_mb()
    with engine.connect() as conn:
        first_id = conn.execute(text("SELECT min(id) FROM contacts")).scalar_one()
        audience_id = conn.execute(text("SELECT min(id) FROM audiences")).scalar_one()
    print(f"{backend}: imported {report.rows_imported:,} rows in {import_s:.1f} s = "
          f"{report.rows_imported / import_s:,.0f} rows/s; peak RSS {import_rss:.0f} MB "
          f"(before import {rss_before:.0f} MB)", file=sys.stderr, flush=True)
    if backend == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM (ANALYZE)"))
    mailing_id = create_mailing(engine, MailingDraft(
        account_id=account.id, from_address="news@bench.example", subject="Bench",
        text="Hello", audience_id=audience_id), NOW)
    results: dict[str, float] = {"import": report.rows_imported / import_s,
                                 "import_rss_mb": import_rss}
    orders = sorted(STRIDES) if args.order == "both" else [args.order]
    for order in sorted(orders, reverse=True):  # send, then scattered
        stream = events(account.id, report.rows_imported, args.rows, random.Random(7), first_id,
                        STRIDES[order], mailing_id)
        applied, seconds = apply_stream(engine, stream, args)
        results[f"events_{order}"] = applied / seconds
        print(f"{backend}: applied {applied:,} events in {seconds:.1f} s = "
              f"{applied / seconds:,.0f} events/s ({order} order, batches of {args.batch:,}, "
              f"{args.writers} writer(s)); peak RSS {peak_rss_mb():.0f} MB",
              file=sys.stderr, flush=True)
    sample = list(events(account.id, report.rows_imported, args.peer_events,
                         random.Random(11), first_id, STRIDES["scattered"], mailing_id))
    results["peer_events"] = naive_events_rate(engine, sample, args.batch)
    results["peer_import"] = naive_import_rate(engine, csv_path, args.peer_rows)
    print(f"{backend}: naive per-event loop {results['peer_events']:,.0f} events/s "
          f"(on {args.peer_events:,}); naive one-INSERT-per-row loader "
          f"{results['peer_import']:,.0f} rows/s (on {args.peer_rows:,})", file=sys.stderr, flush=True)
    engine.dispose()
    return results


def apply_stream(engine: Engine, stream: Iterator[ContactEventRecord],
                 args: argparse.Namespace) -> tuple[int, float]:
    """Apply the stream in batches; (events applied, seconds spent in the store)."""
    policy = StatusPolicy()
    applied = 0
    if args.writers == 1:
        seconds = 0.0  # time inside apply_events only: generating the records is not the store's
        for chunk in iter(lambda: list(itertools.islice(stream, args.batch)), []):
            start = time.perf_counter()
            applied += len(apply_events(engine, policy, chunk, NOW))
            seconds += time.perf_counter() - start
        return applied, seconds
    # Several writers (worker processes and inbound processors each apply their own events):
    # batches go to a pool of threads, at most two waiting per writer. Timed as the whole
    # loop, generating the records included.
    start = time.perf_counter()
    with ThreadPoolExecutor(args.writers) as pool:
        pending: set[Future[Any]] = set()
        for chunk in iter(lambda: list(itertools.islice(stream, args.batch)), []):
            if len(pending) >= args.writers * 2:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                applied += sum(len(f.result()) for f in done)
            pending.add(pool.submit(apply_events, engine, policy, chunk, NOW))
        applied += sum(len(f.result()) for f in pending)
    return applied, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--peer-rows", type=int, default=20_000)
    parser.add_argument("--peer-events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    parser.add_argument("--writers", type=int, default=1,
                        help="threads applying event batches at once (default 1)")
    parser.add_argument("--order", choices=[*sorted(STRIDES), "both"], default="both",
                        help="event order over the contacts (default: both, one after the other)")
    parser.add_argument("--child", nargs=3, metavar=("BACKEND", "URL", "CSV"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        backend, url, csv_name = args.child
        print(json.dumps(child(backend, url, Path(csv_name), args)))
        return
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "contacts.csv"
        write_csv(csv_path, args.rows)
        targets = [("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}")]
        if not args.no_pg:
            targets.append(("postgresql", fresh_schema(args.pg_url)))
        for backend, url in targets:
            command = [sys.executable, __file__, "--rows", str(args.rows), "--batch", str(args.batch),
                       "--peer-rows", str(args.peer_rows), "--peer-events", str(args.peer_events),
                       "--order", args.order, "--writers", str(args.writers),
                       "--child", backend, url, str(csv_path)]
            out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
            results[backend] = json.loads(out.strip().splitlines()[-1])
    figures: list[tuple[float, str, str]] = []
    for backend, r in results.items():
        orders = " | ".join(f"events {name[7:]} {value:8,.0f}/s"
                            for name, value in r.items() if name.startswith("events_"))
        print(f"{backend:10s} import {r['import']:9,.0f} rows/s (RSS {r['import_rss_mb']:.0f} MB; "
              f"naive {r['peer_import']:,.0f}) | {orders} | naive loop {r['peer_events']:,.0f}/s",
              file=sys.stderr)
        figures += [(value, backend, name[7:]) for name, value in r.items() if name.startswith("events_")]
    headline = [f for f in figures if f[2] == "send"] or figures
    slowest, backend, order = min(headline)
    peer = results[backend]["peer_events"]
    print(f"RESULT events_{order}_{backend}={slowest:.0f} events/s "
          f"naive_event_loop={peer:.0f} ratio={slowest / peer:.2f}")


if __name__ == "__main__":
    main()
