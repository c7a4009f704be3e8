"""Report speed: response page, bounce report and a contact's status over the API.

Generates ``--events`` recorded attempts and activity events (default 1,000,000; the issue
asks for 10,000,000 — pass ``--events 10000000``) as mailings of ``--contacts`` recipients,
in SQL (``INSERT … SELECT`` over a number series), on SQLite (default) or PostgreSQL
(``--url``). Then it times, as the median of several runs:

* the response page of the last mailing (``services.reports.response_page``) against the
  naive SQL that computes the same buckets by joining the attempt log;
* the bounce report over 30 days (``services.reports.bounce_report``, rollups refreshed
  incrementally first) against the naive SQL that groups the raw activity history;
* ``GET /api/v1/contacts/{id}`` through the real app (API key auth, problem+json, two
  uvicorn workers) with ``wrk``, against a bare Starlette app running the same SELECT with
  no auth (the peer).

Targets (issue 7): response page and bounce report <= 200 ms on PostgreSQL and <= 500 ms on
SQLite; >= 1,000 requests/s for a contact's status.

Usage: python bench/reports.py [--events 1000000] [--url postgresql+psycopg://...] [--no-api]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select, text

from mailcarrier.services import report_rollups, reports
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.api_keys import create_api_key
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.tables import activities, attempts, deliveries, mailings

NOW = datetime(2026, 6, 1, tzinfo=UTC)
BENCH_SCHEMA = "mailcarrier_bench_reports"
HASH = "((c.id * 2654435761 + m.id * 40503) % 1000)"


def fresh_schema(url: str) -> str:
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {BENCH_SCHEMA} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {BENCH_SCHEMA}"))
    admin.dispose()
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{BENCH_SCHEMA}"


def series(engine: Engine, n: int) -> str:
    if engine.dialect.name == "sqlite":
        return f"(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) SELECT i FROM s) AS s"
    return f"generate_series(1, {n}) AS s(i)"


def stamp(engine: Engine, days_expr: str, minutes_expr: str = "0") -> str:
    """A timestamp ``days_expr`` days and ``minutes_expr`` minutes before NOW, per dialect."""
    if engine.dialect.name == "sqlite":
        return (f"strftime('%Y-%m-%d %H:%M:%f', '2026-06-01', '-' || ({days_expr}) || ' days', "
                f"'+' || ({minutes_expr}) || ' minutes')")
    return (f"(timestamptz '2026-06-01 00:00+00' - ({days_expr}) * interval '1 day' "
            f"+ ({minutes_expr}) * interval '1 minute')")


def generate(engine: Engine, events: int, n_contacts: int) -> dict[str, int]:
    """Contacts, mailings, deliveries, attempts and activities adding up to about ``events``."""
    per_delivery = 1.245  # ~0.98 attempts + ~0.265 activity events per delivery, see below
    n_deliveries = int(events / per_delivery)
    n_contacts = min(n_contacts, n_deliveries)
    n_mailings = max(1, math.ceil(n_deliveries / n_contacts))
    json_cast = "::json" if engine.dialect.name == "postgresql" else ""
    with engine.begin() as conn:
        account = account_repo.create_account(conn, "bench", "Bench", NOW)
        conn.execute(text(
            "INSERT INTO contacts (account_id, email, domain, first_name, last_name, fields, status, "
            "email_invalid, consent_source, consecutive_soft_bounces, consecutive_blocks, total_bounces, "
            "created_at, updated_at, version) "
            f"SELECT {account.id}, 'user' || i || '@d' || (i % 2000) || '.example', "
            "'d' || (i % 2000) || '.example', '', '', '{}', 'active', false, 'import', i % 3, 0, 0, "
            f"{stamp(engine, '90')}, {stamp(engine, '90')}, 1 FROM {series(engine, n_contacts)}"))
    for m in range(n_mailings):
        with engine.begin() as conn:
            mid = conn.execute(mailings.insert().values(
                account_id=account.id, name=f"Mailing {m}", kind="regular", state="done",
                from_address="news@sender.example", subject=f"Issue {m}", sending_domain="sender.example",
                created_at=NOW - timedelta(days=n_mailings - m), started_at=NOW - timedelta(days=n_mailings - m),
            )).inserted_primary_key[0]  # type: ignore[index]
            day = f"{max(0, n_mailings - m) % 60}"
            conn.execute(text(
                "INSERT INTO deliveries (account_id, mailing_id, contact_id, email, domain, state, "
                "attempt_count, last_reason, last_category, outcome_unknown, suspected_filtering, "
                "resent_after_crash, contact_event_pending) "
                f"SELECT c.account_id, m.id, c.id, c.email, c.domain, "
                f"CASE WHEN {HASH} < 800 THEN 'delivered' WHEN {HASH} < 840 THEN 'bounced_hard' "
                f"WHEN {HASH} < 865 THEN 'bounced_soft' WHEN {HASH} < 885 THEN 'in_progress' "
                f"WHEN {HASH} < 900 THEN 'queued' WHEN {HASH} < 990 THEN 'suppressed' ELSE 'failed' END, "
                f"CASE WHEN {HASH} < 840 THEN 1 WHEN {HASH} < 865 THEN 4 WHEN {HASH} < 885 THEN 2 ELSE 0 END, "
                f"CASE WHEN {HASH} >= 800 AND {HASH} < 840 THEN "
                f"  CASE {HASH} % 4 WHEN 0 THEN 'userunknown' WHEN 1 THEN 'blocked' WHEN 2 THEN 'filtered' "
                f"  ELSE 'hostunknown' END WHEN {HASH} >= 840 AND {HASH} < 885 THEN 'mailboxfull' END, "
                f"CASE WHEN {HASH} >= 800 AND {HASH} < 840 THEN "
                f"  CASE {HASH} % 4 WHEN 1 THEN 1 WHEN 2 THEN 1 ELSE 2 END "
                f"  WHEN {HASH} >= 840 AND {HASH} < 885 THEN 3 END, "
                f"false, {HASH} >= 800 AND {HASH} < 840 AND {HASH} % 4 = 2, false, false "
                f"FROM contacts c, mailings m WHERE m.id = {mid}"))
            conn.execute(text(
                "INSERT INTO attempts (delivery_id, number, started_at, ended_at, return_path, local_ip, "
                "remote_ip, mx_host, tls_version, reply_code, reply_text, queue_id, reason, category, outcome) "
                f"SELECT d.id, s.i, {stamp(engine, day, 's.i * 30')}, {stamp(engine, day, 's.i * 30 + 1')}, "
                "'b-' || d.id || '@bounces.sender.example', '192.0.2.10', '198.51.100.7', 'mx.' || d.domain, "
                "'TLSv1.3', CASE WHEN d.state = 'delivered' THEN 250 WHEN d.state = 'bounced_hard' THEN 550 "
                "ELSE 451 END, 'reply', CASE WHEN d.state = 'delivered' THEN 'Q' || d.id END, d.last_reason, "
                "d.last_category, CASE WHEN d.state = 'delivered' THEN 'delivered' "
                "WHEN d.state = 'bounced_hard' THEN 'bounced' ELSE 'deferred' END "
                f"FROM deliveries d JOIN {series(engine, 4)} ON s.i <= d.attempt_count "
                f"WHERE d.mailing_id = {mid}"))
            conn.execute(text(
                "INSERT INTO activities (account_id, contact_id, type, occurred_at, mailing_id, delivery_id, "
                "reason, category, reply_code, remote_mta, details) "
                "SELECT d.account_id, d.contact_id, CASE d.state WHEN 'bounced_hard' THEN 'hard_bounce' "
                "WHEN 'delivered' THEN 'open' ELSE 'soft_bounce' END, "
                f"{stamp(engine, day, '(d.id % 600)')}, d.mailing_id, d.id, d.last_reason, d.last_category, "
                "CASE d.state WHEN 'bounced_hard' THEN 550 WHEN 'delivered' THEN NULL ELSE 452 END, "
                "CASE WHEN d.state = 'delivered' THEN NULL WHEN d.id % 5 = 0 THEN 'gmail-smtp-in.l.google.com' "
                "ELSE 'mx.' || d.domain END, "
                f"CASE WHEN d.last_reason = 'filtered' THEN '{{\"suspected_filtering\": true}}'{json_cast} END "
                f"FROM deliveries d WHERE d.mailing_id = {mid} AND (d.state IN ('bounced_hard', 'bounced_soft') "
                "OR (d.state = 'delivered' AND d.id % 4 = 0))"))
            conn.execute(text(  # the totals send_mailing records
                "UPDATE mailings SET recipients_total = (SELECT count(*) FROM deliveries WHERE mailing_id = :m), "
                "suppressed_total = (SELECT count(*) FROM deliveries WHERE mailing_id = :m AND state = 'suppressed') "
                "WHERE id = :m"), {"m": mid})
        print(f"  mailing {m + 1}/{n_mailings} generated", file=sys.stderr, flush=True)
    with engine.connect() as conn:
        counts = {name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
                  for name, table in (("deliveries", deliveries), ("attempts", attempts),
                                      ("activities", activities))}
    counts.update(account_id=account.id, mailings=n_mailings, contacts=n_contacts)
    return counts


def analyze(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    else:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))


def median_ms(fn: Callable[[], Any], runs: int) -> float:
    fn()  # warm caches
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def naive_response_page(engine: Engine, mailing_id: int) -> list[Any]:
    """The same buckets from the attempt log: join every delivery to its attempts."""
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT d.state, count(DISTINCT d.id), count(a.id), d.last_category, d.last_reason "
            "FROM deliveries d LEFT JOIN attempts a ON a.delivery_id = d.id "
            "WHERE d.mailing_id = :m GROUP BY d.state, d.last_category, d.last_reason"), {"m": mailing_id}))


def naive_bounce_report(engine: Engine, account_id: int, since: date) -> list[Any]:
    """The same figures straight from the activity history (no rollups)."""
    start = datetime.combine(since, datetime.min.time(), tzinfo=UTC)
    bind = start.replace(tzinfo=None).isoformat(" ") if engine.dialect.name == "sqlite" else start
    with engine.connect() as conn:
        by_reason = list(conn.execute(text(
            "SELECT date(a.occurred_at), a.category, a.reason, count(*) FROM activities a "
            "WHERE a.account_id = :acc AND a.type IN ('hard_bounce', 'soft_bounce') AND a.occurred_at >= :s "
            "GROUP BY date(a.occurred_at), a.category, a.reason"), {"acc": account_id, "s": bind}))
        by_domain = list(conn.execute(text(
            "SELECT c.domain, a.remote_mta, count(*) FROM activities a JOIN contacts c ON c.id = a.contact_id "
            "WHERE a.account_id = :acc AND a.type IN ('hard_bounce', 'soft_bounce') AND a.occurred_at >= :s "
            "GROUP BY c.domain, a.remote_mta"), {"acc": account_id, "s": bind}))
    return by_reason + by_domain


PEER_APP = '''
import os
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from mailcarrier.storage.engine import make_engine
engine = make_engine(os.environ["BENCH_DB_URL"])
SQL = text("SELECT id, email, status, email_invalid, consecutive_soft_bounces, last_bounce_reason "
           "FROM contacts WHERE id = :id")
def contact(request):
    with engine.connect() as conn:
        row = conn.execute(SQL, {"id": int(request.path_params["cid"])}).one()
    return JSONResponse(dict(row._mapping))
app = Starlette(routes=[Route("/api/v1/contacts/{cid:int}", contact)])
'''

OUR_APP = '''
import os
from mailcarrier.api.app import create_app
from mailcarrier.config import Settings
app = create_app(Settings.of(database_url=os.environ["BENCH_DB_URL"], secret_key="bench-secret-0123456789abcdef",
                          data_dir=os.environ["BENCH_DATA_DIR"]))
'''


def requests_per_second(app_source: str, url: str, path: str, headers: dict[str, str], workdir: Path,
                        seconds: int) -> float:
    module = workdir / f"bench_app_{abs(hash(app_source)) % 10**8}.py"
    module.write_text(app_source, encoding="utf-8")
    port = 18000 + os.getpid() % 1000
    env = {**os.environ, "BENCH_DB_URL": url, "BENCH_DATA_DIR": str(workdir / "data"),
           "PYTHONPATH": f"{workdir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", f"{module.stem}:app", "--port", str(port),
                               "--workers", "2", "--log-level", "warning", "--no-access-log"], env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            header_args = [arg for k, v in headers.items() for arg in ("-H", f"{k}: {v}")]
            probe = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *header_args,
                                    f"http://127.0.0.1:{port}{path}"], check=False, capture_output=True,
                                   text=True)
            if probe.stdout == "200":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"app did not answer 200 on {path}: {probe.stdout}")
            time.sleep(0.3)
        args = ["wrk", "-t2", "-c32", f"-d{seconds}s"]
        for k, v in headers.items():
            args += ["-H", f"{k}: {v}"]
        out = subprocess.run([*args, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True,
                             check=True).stdout
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if errors:
            raise RuntimeError(f"{errors.group(1)} non-2xx answers during the run:\n{out}")
        match = re.search(r"Requests/sec:\s+([\d.]+)", out)
        assert match, out
        return float(match.group(1))
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="attempts + activity events")
    parser.add_argument("--contacts", type=int, default=100_000, help="recipients per mailing")
    parser.add_argument("--url", default="", help="PostgreSQL URL (default: SQLite in a temp dir)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--api-seconds", type=int, default=5)
    parser.add_argument("--no-api", action="store_true", help="skip the HTTP measurement")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mc-bench-reports-"))
    try:
        url = fresh_schema(args.url) if args.url else f"sqlite:///{workdir / 'bench.db'}"
        engine = make_engine(url)
        backend = engine.dialect.name
        upgrade(engine)
        start = time.perf_counter()
        counts = generate(engine, args.events, args.contacts)
        analyze(engine)
        recorded = counts["attempts"] + counts["activities"]
        print(f"backend {backend}: generated {counts['mailings']} mailings x {counts['contacts']} recipients = "
              f"{counts['deliveries']} deliveries, {counts['attempts']} attempts, {counts['activities']} "
              f"events ({recorded} recorded) in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        folded = report_rollups.refresh_rollups(engine)
        print(f"initial rollup of {folded} activities: {time.perf_counter() - start:.1f} s (one-off)")
        account_id = counts["account_id"]
        with engine.connect() as conn:
            last_mailing = int(conn.execute(select(func.max(mailings.c.id))).scalar_one())
        page = reports.response_page(engine, account_id, last_mailing)
        assert page.reconciles and page.recipients == counts["contacts"]
        since = (NOW - timedelta(days=30)).date()
        ours_page = median_ms(lambda: reports.response_page(engine, account_id, last_mailing), args.runs)
        peer_page = median_ms(lambda: naive_response_page(engine, last_mailing), max(1, args.runs // 2))
        ours_bounce = median_ms(lambda: reports.bounce_report(engine, account_id, since=since,
                                                              until=NOW.date()), args.runs)
        peer_bounce = median_ms(lambda: naive_bounce_report(engine, account_id, since),
                                max(1, args.runs // 2))
        target = 200 if backend == "postgresql" else 500
        print(f"response page ({counts['contacts']} recipients): {ours_page:.1f} ms "
              f"(naive join over attempts {peer_page:.1f} ms; target <= {target} ms)")
        print(f"bounce report (30 days): {ours_bounce:.1f} ms "
              f"(naive over raw activities {peer_bounce:.1f} ms; target <= {target} ms)")
        if not args.no_api and shutil.which("wrk"):
            with engine.begin() as conn:
                _, key = create_api_key(conn, account_id, "bench", ["contacts:read"], NOW)
            path = f"/api/v1/contacts/{counts['contacts'] // 2}"
            ours_rps = requests_per_second(OUR_APP, url, path, {"Authorization": f"Bearer {key}"}, workdir,
                                           args.api_seconds)
            peer_rps = requests_per_second(PEER_APP, url, path, {}, workdir, args.api_seconds)
            print(f"API contact status: {ours_rps:.0f} req/s (bare Starlette, same SELECT, no auth: "
                  f"{peer_rps:.0f} req/s; target >= 1000 req/s)")
        engine.dispose()
        print(f"RESULT bounce_report_{backend}_ms={ours_bounce:.1f} ms naive_sql={peer_bounce:.1f} "
              f"ratio={ours_bounce / peer_bounce:.3f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
