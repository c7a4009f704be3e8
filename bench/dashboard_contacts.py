"""Dashboard contact list speed on a large account: the marketer's search and filters.

Imports ``--contacts`` contacts (default 200,000) into one audience of a SQLite database
(the services' CSV import), marks 5 % of them as bounced (category 2, ``userunknown``), then
times through the real application in-process (session cookie, CSRF, templates), as the
median of ``--runs`` runs:

* the contact list's first page (50 rows plus the total that matches);
* a search for part of an address (``LIKE '%...%'``: a scan of the account's contacts);
* the filter "latest bounce category 2";
* the CSV export of every contact (rows per second);

against the peer: the REST API's first page of contacts (``GET /api/v1/contacts?limit=50``,
same service, no count, no template). The RESULT line gives the search against that page.

Usage: python bench/dashboard_contacts.py [--contacts 200000] [--runs 7]
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import update

from mailcarrier.api.app import create_app
from mailcarrier.config import Settings
from mailcarrier.services.contact_import import import_csv
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.api_keys import create_api_key
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.tables import contacts

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def median_ms(runs: int, call: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        engine = make_engine(f"sqlite:///{root / 'bench.sqlite'}")
        upgrade(engine)
        with engine.begin() as conn:
            account = account_repo.create_account(conn, "bench", "Bench", NOW)
            _, key = create_api_key(conn, account.id, "bench", ["*"], NOW)
        source = root / "contacts.csv"
        with source.open("w", encoding="utf-8") as out:
            out.write("email,first_name,last_name\n")
            for i in range(args.contacts):
                out.write(f"user{i}@domain{i % 997}.example,First{i},Last{i}\n")
        start = time.perf_counter()
        import_csv(engine, account.id, "everyone", source, NOW)
        print(f"imported {args.contacts:,} contacts in {time.perf_counter() - start:.1f} s")
        with engine.begin() as conn:
            conn.execute(update(contacts).where(contacts.c.id % 20 == 0).values(
                status="error", last_bounce_category=2, last_bounce_reason="userunknown", last_bounce_at=NOW))
        settings = Settings.of(data_dir=root / "data",
                            secret_key="bench-secret-0123456789abcdef")
        app = create_app(settings, engine, clock=lambda: NOW)
        with TestClient(app, base_url="http://mc.bench") as http:
            form = http.get("/dashboard/login").text
            token = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', form)
            assert token
            assert http.post("/dashboard/login", data={"key": key, "csrf_token": token.group(1)},
                             follow_redirects=False).status_code == 303

            def get(path: str, **params: object) -> None:
                response = http.get(path, params=params)  # type: ignore[arg-type]
                assert response.status_code == 200, response.text[:300]

            first = median_ms(args.runs, lambda: get("/dashboard/contacts"))
            needle = f"user{args.contacts // 2}@"
            search = median_ms(args.runs, lambda: get("/dashboard/contacts", q=needle))
            category = median_ms(args.runs, lambda: get("/dashboard/contacts", category=2))
            start = time.perf_counter()
            exported = http.get("/dashboard/contacts.csv").content.count(b"\n") - 1
            export_s = time.perf_counter() - start
            api = median_ms(args.runs, lambda: http.get("/api/v1/contacts", params={"limit": 50},
                                                        headers={"Authorization": f"Bearer {key}"}))
        engine.dispose()
    print(f"contact list, first page with total: {first:.1f} ms")
    print(f"search {needle!r}: {search:.1f} ms")
    print(f"filter category 2 ({args.contacts // 20:,} contacts): {category:.1f} ms")
    print(f"CSV export: {exported:,} rows in {export_s:.1f} s ({exported / export_s:,.0f} rows/s)")
    print(f"REST API first page (peer): {api:.1f} ms")
    print(f"RESULT dashboard_contact_search_ms={search:.1f} ms api_contacts_page_ms={api:.1f} "
          f"ratio={search / api:.1f}")


if __name__ == "__main__":
    main()
