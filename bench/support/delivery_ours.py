"""mailcarrier's side of ``bench/delivery.py``: a fresh SQLite store, one mailing, worker processes.

The batch is the one Postfix gets: the same recipients over the same 1,000 domains and
loopback "MX" addresses (routed by a static table, as the peer is by its transport map), the
same ~30 KB personalised HTML. Timed from the moment the workers start until every
recipient has had its first attempt recorded (delivered, bounced, or deferred by the 4xx
sink) — the same end point as Postfix's drain, where deferred mail stays in its queue.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, text

from mailcarrier.config import Settings
from mailcarrier.delivery.dkim_keys import load_or_create_key
from mailcarrier.delivery.worker import run_worker
from mailcarrier.services.mailings import MailingDraft, create_mailing, send_mailing
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.tables import contacts

FIRST_PASS_OPEN = text(
    "SELECT count(*) FROM deliveries WHERE state IN ('queued', 'in_progress') "
    "AND (attempt_count = 0 OR claimed_by IS NOT NULL)")


def prepare(folder: Path, rcpts: list[tuple[str, str]], html: str) -> str:
    """Store, contacts, audience and a sent (enqueued) mailing; returns the database URL."""
    url = f"sqlite:///{folder / 'bench.db'}"
    engine = make_engine(url)
    upgrade(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        account = account_repo.create_account(conn, "bench", "Bench", now)
        audience = account_repo.create_audience(conn, account.id, "all", now)
        conn.execute(insert(contacts), [
            {"account_id": account.id, "email": email, "domain": email.partition("@")[2],
             "first_name": name, "last_name": "", "fields": {}, "created_at": now, "updated_at": now}
            for email, name in rcpts])
        conn.exec_driver_sql("INSERT INTO audience_members (audience_id, contact_id, added_at) "
                             f"SELECT {audience.id}, id, '2026-01-01 00:00:00.000000' FROM contacts")
    template = html.replace("{{ contact.first_name }}", "{{ first_name }}").replace(
        "{{ contact.email }}", "{{ email }}")
    mailing_id = create_mailing(engine, MailingDraft(
        account_id=account.id, from_address="news@bench.test", subject="Autumn, {{ first_name }}",
        html=template, text="Hello {{ first_name }}\n{{ unsubscribe_url }}", audience_id=audience.id), now)
    send_mailing(engine, account.id, mailing_id, now)
    engine.dispose()
    return url


def _worker(url: str, settings: Settings, index: int) -> None:
    engine = make_engine(url)

    async def run() -> None:
        stop = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.1)
                with engine.connect() as conn:
                    if conn.execute(FIRST_PASS_OPEN).scalar_one() == 0:
                        stop.set()

        watcher = asyncio.create_task(watch())
        await run_worker(settings, engine, stop=stop, worker_id=f"bench-{index}", poll_seconds=0.1)
        stop.set()
        await watcher

    asyncio.run(run())
    engine.dispose()


def run_ours(folder: Path, rcpts: list[tuple[str, str]], html: str, *, routes: str, sign: bool,
             processes: int) -> tuple[float, float]:
    """(seconds, CPU seconds of all worker processes) for the first pass over the batch."""
    url = prepare(folder, rcpts, html)
    settings = Settings.of(data_dir=folder / "data", secret_key="b" * 32,
                        static_routes=routes, dkim_sign=sign, smtp_timeout=30,
                        # the peer's Postfix runs at most 100 SMTP clients (default_process_limit);
                        # ours gets the same number of connections in flight, split over processes
                        delivery_concurrency=max(1, 100 // processes))
    if sign:  # the key is generated once, outside the timed part
        load_or_create_key(settings.storage.data_dir, "bench.test", settings.delivery.dkim_selector, "rsa")
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_worker, args=(url, settings, n)) for n in range(processes)]
    cpu_before = _children_cpu()
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    if any(worker.exitcode for worker in workers):
        raise SystemExit("a mailcarrier worker failed")
    return elapsed, _children_cpu() - cpu_before


def _children_cpu() -> float:
    import resource  # noqa: PLC0415

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
