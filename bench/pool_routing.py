"""Cost of pool routing: the worker's delivery rate with source-IP routing against without it.

    .venv/bin/python bench/pool_routing.py [--messages 3000] [--rounds 3] [--url postgresql+psycopg://...]

Each round builds two identical fresh stores (SQLite files by default, or throwaway
PostgreSQL schemas with ``--url``): one account, an audience of N contacts spread over
20 domains, one mailing enqueued. Both are delivered by ``run_worker(until_idle=True)`` to
the same sandbox MX on loopback. The routed store has the account on a pool of three warm
loopback IPs (127.0.0.2-4), so every message pays for choosing its IP (warm-up and
throttle state read, counters written, one transaction) and for recording its reply in
the deferral automation (a second transaction). The peer is the same worker without
routing (the system's source address). Rounds alternate the two sides; medians reported.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine, text

from mailcarrier.config import Settings
from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.source_routing import PoolRouting
from mailcarrier.delivery.worker import SimulatedClock, run_worker
from mailcarrier.domain.warmup import WarmupLimits, load_schedules
from mailcarrier.services.mailings import MailingDraft, create_mailing, send_mailing
from mailcarrier.services.pools import membership
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.tables import audience_members, contacts

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
HTML = "<html><body><p>Hello {{ first_name }}</p>" + "<p>Spring news for everyone.</p>" * 40 + \
       '<a href="{{ unsubscribe_url }}">unsubscribe</a></body></html>'


@contextmanager
def store(url: str | None, work: Path, name: str) -> Iterator[Engine]:
    if url is None:
        engine = make_engine(f"sqlite:///{work / f'{name}.db'}")
        try:
            yield engine
        finally:
            engine.dispose()
        return
    admin = create_engine(url)
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in url else "?"
    engine = make_engine(f"{url}{sep}options=-csearch_path%3D{schema}")
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def world(engine: Engine, messages: int, routed: bool) -> int:
    upgrade(engine)
    with engine.begin() as conn:
        account = account_repo.create_account(conn, "bench", "Bench", T0)
        audience = account_repo.create_audience(conn, account.id, "all", T0)
        rows = [{"account_id": account.id, "email": f"user{k}@d{k % 20}.test", "domain": f"d{k % 20}.test",
                 "first_name": f"N{k}", "fields": {}, "created_at": T0, "updated_at": T0}
                for k in range(messages)]
        ids = conn.execute(contacts.insert().returning(contacts.c.id), rows).scalars().all()
        conn.execute(audience_members.insert(), [{"audience_id": audience.id, "contact_id": i, "added_at": T0}
                                                 for i in ids])
        if routed:
            membership.create_pool(conn, "house", "dedicated", T0)
            for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
                membership.add_ip(conn, "house", ip, T0, schedule=load_schedules()["standard"], warm=True)
            membership.assign_account(conn, account.id, "house", T0)
    mailing = create_mailing(engine, MailingDraft(account_id=account.id, from_address="news@shop.test",
                                                  subject="Hi {{ first_name }}", html=HTML,
                                                  text="Hello {{ first_name }} {{ unsubscribe_url }}",
                                                  audience_id=audience.id), T0)
    send_mailing(engine, account.id, mailing, T0)
    return account.id


def run(engine: Engine, settings: Settings, routed: bool) -> tuple[float, int]:
    routing = PoolRouting(engine, WarmupLimits()) if routed else None
    started = time.perf_counter()
    stats = asyncio.run(run_worker(settings, engine, until_idle=True, clock=SimulatedClock(T0),
                                   source_routing=routing))
    return time.perf_counter() - started, stats.delivered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--url", help="PostgreSQL URL (default: SQLite files)")
    args = parser.parse_args()
    ours: list[float] = []
    peer: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, Sandbox() as sandbox:
        work = Path(tmp)
        settings = Settings.of(data_dir=work / "data",
                            secret_key="bench-secret-" + "x" * 20, static_routes=f"*=127.0.0.1:{sandbox.port}",
                            dkim_sign=False, bounce_domain="bounces.shop.test", public_url="https://m.shop.test")
        for round_no in range(args.rounds):
            for routed in ((True, False) if round_no % 2 == 0 else (False, True)):
                with store(args.url, work, f"r{round_no}{'routed' if routed else 'plain'}") as engine:
                    world(engine, args.messages, routed)
                    seconds, delivered = run(engine, settings, routed)
                if delivered != args.messages:
                    sys.exit(f"only {delivered} of {args.messages} delivered (routed={routed})")
                rate = args.messages / seconds
                (ours if routed else peer).append(rate)
                print(f"round {round_no + 1} {'routed' if routed else 'plain '}: {seconds:6.2f} s  {rate:7.0f} msg/s")
    backend = "postgresql" if args.url else "sqlite"
    x, y = statistics.median(ours), statistics.median(peer)
    print(f"median routed {x:.0f} msg/s, plain {y:.0f} msg/s ({args.messages} messages, {backend})")
    print(f"RESULT pool_routed_delivery_{backend}={x:.0f} msg/s unrouted_worker={y:.0f} ratio={x / y:.2f}")


if __name__ == "__main__":
    main()
