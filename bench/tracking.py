"""Click redirects per second and p99 latency of ``mailcarrier serve``, measured with wrk.

Builds a SQLite database with one mailing delivered to ``--recipients`` contacts, three
tracked links each (so ``3 x recipients`` distinct signed click URLs), starts the real
``mailcarrier serve`` (uvicorn plus its hit-writer process) on loopback, and drives it with
wrk rotating through every URL. Each request verifies the HMAC token, resolves the
destination (link cache), spools the hit and answers 302; the writer process stores the
hits with verdicts meanwhile. After the load the run waits, server still up, until every
answered redirect is a stored hit with a verdict, and prints how long that took and the
count after shutdown.

Peer: a bare Starlette app answering 302 on the same route (bench/support/tracking_peer.py),
under the same uvicorn and wrk settings, measured in the same run: the framework ceiling, so
the ratio is the share of it that tracking keeps. wrk and the server share this machine's
cores, and the figures are noisy.

The server runs this checkout's code (``src`` first on PYTHONPATH), whatever the
virtualenv's editable install points at.

Usage: python bench/tracking.py [--seconds 10] [--connections 64] [--workers 1]
Needs wrk (apt install wrk).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
SUPPORT_DIR = BENCH_DIR / "support"
SRC_DIR = BENCH_DIR.parent / "src"
# Measure this checkout's code, whatever the virtualenv's editable install points at.
sys.path.insert(0, str(SRC_DIR))

import httpx  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from mailcarrier.config import Settings  # noqa: E402
from mailcarrier.services.tracking.links import prepare_message_links  # noqa: E402
from mailcarrier.storage import accounts as account_repo  # noqa: E402
from mailcarrier.storage import contacts as contact_repo  # noqa: E402
from mailcarrier.storage.engine import make_engine  # noqa: E402
from mailcarrier.storage.migrate import upgrade  # noqa: E402
from mailcarrier.storage.tables import deliveries, mailings  # noqa: E402
from mailcarrier.storage.tracking_tables import tracking_hits  # noqa: E402

HTML = ('<html><body><a href="https://shop.example/sale">Sale</a> <a href="https://shop.example/new">New</a> '
        '<a href="https://blog.example/post">Blog</a></body></html>')


def build(settings: Settings, recipients: int) -> list[str]:
    """A mailing delivered an hour ago; returns the path of every tracked click URL."""
    engine = make_engine(settings)
    upgrade(engine)
    delivered = datetime.now(UTC) - timedelta(hours=1)
    paths = []
    with engine.begin() as conn:
        account = account_repo.create_account(conn, "bench", "Bench", delivered)
        mailing_id = int(conn.execute(mailings.insert().values(
            account_id=account.id, name="bench", kind="regular", state="done",
            from_address="news@shop.example", subject="Sale", html_body=HTML,
            sending_domain="shop.example", created_at=delivered)).inserted_primary_key[0])
        for i in range(recipients):
            email = f"reader{i}@example.com"
            contact_id = contact_repo.add_contact(conn, account.id, email, delivered)
            delivery_id = int(conn.execute(deliveries.insert().values(
                account_id=account.id, mailing_id=mailing_id, contact_id=contact_id, email=email,
                domain="example.com", state="delivered", delivered_at=delivered,
                final_at=delivered)).inserted_primary_key[0])
            prepared = prepare_message_links(conn, settings, account_id=account.id,
                                              mailing_id=mailing_id, delivery_id=delivery_id,
                                              html=HTML, text=None, now=delivered)
            paths += [m.split(settings.api.public_url, 1)[1]
                      for m in re.findall(r'href="([^"]+)"', prepared.html or "")]
    engine.dispose()
    return paths


def lua_script(paths: list[str], target: Path) -> Path:
    body = ",\n".join(f'"{p}"' for p in paths)
    target.write_text(
        "local paths = {\n" + body + "\n}\n"
        "local n = 0\n"
        "request = function()\n"
        "  n = n + 1\n"
        "  return wrk.format('GET', paths[(n % #paths) + 1], {['User-Agent'] = 'Mozilla/5.0 (bench)'})\n"
        "end\n", encoding="ascii")
    return target


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not become ready")


def run_wrk(base: str, script: Path, seconds: int, connections: int) -> tuple[float, float, int, int]:
    """(requests/s, p99 ms, requests, non-2xx/3xx) from one wrk run."""
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                          "-s", str(script), base], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99_value, unit = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", out).groups()  # type: ignore[union-attr]
    p99 = float(p99_value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    if errors:
        print(f"    wrk: {errors.group(0)}")
    return rate, p99, total, int(bad.group(1)) if bad else 0


def stored_hits(settings: Settings) -> int:
    """Hits stored with a verdict (valid tokens only: the readiness probes have none)."""
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(tracking_hits).where(
                tracking_hits.c.verdict.is_not(None))).scalar_one())
    finally:
        engine.dispose()


def measure(name: str, command: list[str], env: dict[str, str], base: str, script: Path,
            args: argparse.Namespace,
            settings: Settings | None = None) -> tuple[float, float, int, int]:
    """One server under wrk; with ``settings``, also checks every redirect became a stored hit."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_ready(f"{base}/c/warmup", proc)
        warm = run_wrk(base, script, 2, args.connections)  # warm-up: caches, lazy imports
        rate, p99, total, bad = run_wrk(base, script, args.seconds, args.connections)
        print(f"  {name:<22} {rate:>9,.0f} req/s   p99 {p99:6.1f} ms   {total:,} requests, {bad} non-3xx")
        answered = warm[2] - warm[3] + total - bad
        if settings is not None:
            started = time.perf_counter()
            stored = stored_hits(settings)
            while stored < answered and time.perf_counter() - started < 120:
                time.sleep(0.1)
                stored = stored_hits(settings)
            print(f"  redirects answered (warm-up + run): {answered:,}; stored with a verdict "
                  f"{time.perf_counter() - started:.1f} s after the load ended: {stored:,}")
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if settings is not None:
        stored = stored_hits(settings)
        print(f"  stored after shutdown: {stored:,} of {answered:,} answered"
              f"{'' if stored >= answered else '  MISSING HITS'} (any excess: requests in flight "
              f"when wrk stopped, at most {2 * args.connections})")
    return rate, p99, total, bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--recipients", type=int, default=2000)
    parser.add_argument("--port", type=int, default=18025)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt install wrk)")
    with tempfile.TemporaryDirectory(prefix="mc-bench-tracking-") as tmp:
        base = f"http://127.0.0.1:{args.port}"
        python_path = os.pathsep.join(p for p in (str(SRC_DIR), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": python_path, "MAILCARRIER_DATA_DIR": tmp, "MAILCARRIER_SECRET_KEY": "bench-secret-" + "k" * 32,
               "MAILCARRIER_PUBLIC_URL": base, "MAILCARRIER_DATABASE_URL": f"sqlite:///{tmp}/bench.db"}
        settings = Settings.of(data_dir=Path(tmp),
                            secret_key=env["MAILCARRIER_SECRET_KEY"], public_url=base,
                            database_url=env["MAILCARRIER_DATABASE_URL"])
        started = time.perf_counter()
        paths = build(settings, args.recipients)
        script = lua_script(paths, Path(tmp) / "clicks.lua")
        print(f"{len(paths):,} signed click URLs for {args.recipients:,} recipients "
              f"({time.perf_counter() - started:.1f} s to build); wrk -t1 -c{args.connections} "
              f"-d{args.seconds}s; {args.workers} server worker(s); {os.cpu_count()} cores")
        ours = measure("mailcarrier serve", [sys.executable, "-m", "mailcarrier.cli.main", "serve", "--port",
                                             str(args.port), "--workers", str(args.workers),
                                             "--log-level", "warning"], env, base, script, args, settings)
        peer = measure("bare Starlette 302", [sys.executable, "-m", "uvicorn", "--app-dir", str(SUPPORT_DIR),
                                              "tracking_peer:app", "--port", str(args.port),
                                              "--workers", str(args.workers), "--log-level", "warning",
                                              "--no-access-log"], env, base, script, args)
    print(f"p99: ours {ours[1]:.1f} ms, peer {peer[1]:.1f} ms (target: >= 3,000 redirects/s, p99 <= 50 ms)")
    print(f"RESULT redirects={ours[0]:.0f} req/s starlette_302={peer[0]:.0f} ratio={ours[0] / peer[0]:.2f}")


if __name__ == "__main__":
    main()
