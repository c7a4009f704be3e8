"""Contact store throughput: CSV import (rows/s, peak RSS) and contact events (events/s).

Generates a CSV of ``--rows`` contacts in a temporary directory, imports it with the real
streaming importer into a fresh database (SQLite by default, or ``--url`` for PostgreSQL),
then applies ``--rows`` delivery/bounce events through ``apply_events`` in batches.

Peer: the naive loader — one INSERT statement per row through SQLAlchemy, in one
transaction, the way a hand-written ORM loop imports a list. It is measured on the first
``--peer-rows`` rows of the same CSV (it is linear, so a sample gives its rate without
making the run long). PostgreSQL's COPY would be the floor for PostgreSQL only; the naive
loader is the baseline that exists on both backends and is what our importer replaces.

Usage: python bench/store.py [--rows 1000000] [--url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import csv
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from mailcarrier.domain.contact_status import ContactEvent, DomainEvidence, EventKind, StatusPolicy
from mailcarrier.domain.vocabulary import Category, Reason
from mailcarrier.services.contact_import import import_csv
from mailcarrier.services.contacts import ContactEventRecord, apply_events
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.migrate import upgrade

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["email", "first_name", "last_name", "company", "city"])
        for i in range(rows):
            out.writerow([f"user{i}@domain{i % 5000}.example", f"First{i}", f"Last{i}",
                          f"Company {i % 977}", f"City {i % 313}"])


BENCH_SCHEMA = "mailcarrier_bench_store"


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


def naive_rate(url: str, csv_path: Path, rows: int) -> float:
    """One INSERT per row (the peer), into a plain table."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS naive_contacts"))
        conn.execute(text("CREATE TABLE naive_contacts (email VARCHAR(320) PRIMARY KEY, "
                          "first_name TEXT, last_name TEXT, company TEXT, city TEXT)"))
    insert = text("INSERT INTO naive_contacts VALUES (:e, :f, :l, :c, :t)")
    start = time.perf_counter()
    with engine.begin() as conn, csv_path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        for n, (e, f, last, c, t) in enumerate(reader):
            if n >= rows:
                break
            conn.execute(insert, {"e": e, "f": f, "l": last, "c": c, "t": t})
    elapsed = time.perf_counter() - start
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE naive_contacts"))
    engine.dispose()
    return min(rows, n + 1) / elapsed


def events(account_id: int, contacts: int, count: int, rng: random.Random):  # type: ignore[no-untyped-def]
    kinds = ((0.80, EventKind.DELIVERED, None, None),
             (0.90, EventKind.SOFT_BOUNCE, Reason.MAILBOXFULL, Category.TEMPORARY),
             (0.95, EventKind.HARD_BOUNCE, Reason.USERUNKNOWN, Category.INVALID_ADDRESS),
             (1.01, EventKind.HARD_BOUNCE, Reason.BLOCKED, Category.SPAM_BLOCK))
    for i in range(count):
        draw = rng.random()
        _, kind, reason, category = next(k for k in kinds if draw < k[0])
        when = NOW - timedelta(seconds=count - i)
        evidence = DomainEvidence(1, 20) if kind is EventKind.HARD_BOUNCE else None
        yield ContactEventRecord(account_id, 1 + (i * 7919) % contacts,
                                 ContactEvent(kind, when, reason, category, evidence),
                                 reply_code=550 if kind is EventKind.HARD_BOUNCE else None,
                                 cause="bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--peer-rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--url", default=None, help="Database URL (default: temp SQLite file).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        csv_path = tmp_path / "contacts.csv"
        write_csv(csv_path, args.rows)
        url = args.url or f"sqlite:///{tmp_path / 'bench.db'}"
        backend = "postgresql" if url.startswith("postgresql") else "sqlite"
        if backend == "postgresql":
            url = fresh_schema(url)
        engine = make_engine(url)
        upgrade(engine)
        with engine.begin() as conn:
            account = account_repo.create_account(conn, "bench", "Bench", NOW)
        rss_before = peak_rss_mb()
        start = time.perf_counter()
        report = import_csv(engine, account.id, "bench", csv_path, NOW)
        import_s = time.perf_counter() - start
        import_rate = report.rows_imported / import_s
        print(f"{backend}: imported {report.rows_imported} rows in {import_s:.1f} s = "
              f"{import_rate:,.0f} rows/s; peak RSS {peak_rss_mb():.0f} MB "
              f"(before import {rss_before:.0f} MB)", file=sys.stderr)
        policy = StatusPolicy()
        rng = random.Random(7)
        start = time.perf_counter()
        batch: list[ContactEventRecord] = []
        applied = 0
        for record in events(account.id, report.rows_imported, args.rows, rng):
            batch.append(record)
            if len(batch) >= args.batch:
                applied += len(apply_events(engine, policy, batch, NOW))
                batch = []
        if batch:
            applied += len(apply_events(engine, policy, batch, NOW))
        events_s = time.perf_counter() - start
        print(f"{backend}: applied {applied} events in {events_s:.1f} s = "
              f"{applied / events_s:,.0f} events/s; peak RSS {peak_rss_mb():.0f} MB", file=sys.stderr)
        engine.dispose()
        peer = naive_rate(url, csv_path, args.peer_rows)
        print(f"{backend}: naive one-INSERT-per-row loader {peer:,.0f} rows/s "
              f"(on {args.peer_rows} rows)", file=sys.stderr)
    print(f"RESULT import_{backend}={import_rate:.0f} rows/s naive_insert={peer:.0f} "
          f"ratio={import_rate / peer:.2f}")


if __name__ == "__main__":
    main()
