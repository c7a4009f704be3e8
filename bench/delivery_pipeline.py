"""mailcarrier's delivery pipeline alone, against Postfix's ``smtp-sink`` on loopback.

    .venv/bin/python bench/delivery_pipeline.py [--messages 20000] [--processes 2] [--sign]

A fresh SQLite store with N contacts over 1,000 recipient domains (all routed to one
``smtp-sink`` by a static route), one mailing of ~30 KB personalised HTML, enqueued, then
``run_worker(..., until_idle=True)`` in ``--processes`` processes, timed from the first
claim to the last recorded result: claim, render, (DKIM-sign), send, classify, record,
contact events. In the same run ``smtp-source`` pushes the same number of 30 KB messages
into ``smtp-sink``: the loopback ceiling, printed for scale (it is not a mail server doing
a mail server's work; ``bench/delivery.py`` compares with a real Postfix).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert

from mailcarrier.config import Settings
from mailcarrier.delivery.worker import run_worker
from mailcarrier.services.mailings import MailingDraft, create_mailing, send_mailing
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.tables import contacts

PARAGRAPH = ("<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
             "incididunt ut labore.</p>\n")
HTML = ("<html><body><h1>Hello {{ first_name }}</h1>" + PARAGRAPH * 280
        + "<a href='{{ unsubscribe_url }}'>unsubscribe</a></body></html>")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _sink(port: int) -> subprocess.Popen[bytes]:
    sink = subprocess.Popen(["smtp-sink", "-u", "root", f"127.0.0.1:{port}", "1000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    return sink


def _prepare(folder: Path, messages: int) -> str:
    url = f"sqlite:///{folder / 'bench.db'}"
    engine = make_engine(url)
    upgrade(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        account = account_repo.create_account(conn, "bench", "Bench", now)
        audience = account_repo.create_audience(conn, account.id, "all", now)
        conn.execute(insert(contacts), [
            {"account_id": account.id, "email": f"u{i}@d{i % 1000}.example", "domain": f"d{i % 1000}.example",
             "first_name": f"F{i}", "last_name": "L", "fields": {"city": "Paris"}, "created_at": now,
             "updated_at": now} for i in range(messages)])
        conn.exec_driver_sql("INSERT INTO audience_members (audience_id, contact_id, added_at) "
                             f"SELECT {audience.id}, id, '2026-01-01 00:00:00' FROM contacts")
    mailing_id = create_mailing(engine, MailingDraft(
        account_id=account.id, from_address="news@shop.example", subject="Hi {{ first_name }}", html=HTML,
        text="Hi {{ first_name }}\n{{ unsubscribe_url }}", audience_id=audience.id), now)
    send_mailing(engine, account.id, mailing_id, now)
    engine.dispose()
    return url


def _worker(url: str, settings: Settings, index: int) -> None:
    engine = make_engine(url)
    asyncio.run(run_worker(settings, engine, until_idle=True, worker_id=f"bench-{index}"))
    engine.dispose()


def ours(messages: int, processes: int, sign: bool) -> float:
    folder = Path(tempfile.mkdtemp(prefix="mc-bench-"))
    port = _free_port()
    sink = _sink(port)
    try:
        url = _prepare(folder, messages)
        settings = Settings.of(data_dir=folder / "data", secret_key="b" * 32,
                            static_routes=f"*=127.0.0.1:{port}", dkim_sign=sign, smtp_timeout=30)
        if sign:  # the key is generated once, not inside the timed part
            from mailcarrier.delivery.dkim_keys import load_or_create_key  # noqa: PLC0415
            load_or_create_key(settings.storage.data_dir, "shop.example", settings.delivery.dkim_selector, "rsa")
        context = multiprocessing.get_context("fork")
        started = time.perf_counter()
        workers = [context.Process(target=_worker, args=(url, settings, n)) for n in range(processes)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - started
        if any(worker.exitcode for worker in workers):
            raise SystemExit("a worker failed")
        # ru_maxrss of RUSAGE_CHILDREN is the largest peak among the (forked) worker processes
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"worker processes: peak RSS {peak_mb:.0f} MB (largest of {processes})", flush=True)
        return messages / elapsed
    finally:
        sink.terminate()
        shutil.rmtree(folder, ignore_errors=True)


def ceiling(messages: int) -> float:
    port = _free_port()
    sink = _sink(port)
    try:
        started = time.perf_counter()
        subprocess.run(["smtp-source", "-s", "20", "-l", "30000", "-m", str(messages), "-f", "b@x.example",
                        "-t", "u@d.example", f"127.0.0.1:{port}"], check=True, capture_output=True)
        return messages / (time.perf_counter() - started)
    finally:
        sink.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--sign", action="store_true", help="DKIM-sign every message (RSA-2048)")
    args = parser.parse_args()
    if not shutil.which("smtp-sink") or not shutil.which("smtp-source"):
        sys.exit("needs Postfix's smtp-sink and smtp-source (Debian package postfix)")
    rate = ours(args.messages, args.processes, args.sign)
    top = ceiling(args.messages)
    label = "signed" if args.sign else "unsigned"
    print(f"mailcarrier pipeline ({label}, {args.processes} process(es)): {rate:,.0f} msg/s")
    print(f"loopback ceiling smtp-source -> smtp-sink: {top:,.0f} msg/s")
    print(f"RESULT pipeline_{label}={rate:.0f} msg/s smtp_source_ceiling={top:.0f} ratio={rate / top:.2f}")


if __name__ == "__main__":
    main()
