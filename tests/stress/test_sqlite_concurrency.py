"""Everything at once on one SQLite file: no lock error surfaces, nothing exits, every count exact.

Two delivery worker processes (``worker --processes 2``) send two new mailings with tracked
links, one of them personalised, while a contact import of 45,000 rows runs, the inbound
server (``mailcarrier inbound``) receives and applies 300 bounces of an earlier mailing, and
API clients read with keys whose authentication used to write. Before the fix the workers
died with "database is locked" registering the new mailings' links while rendering, and the
API answered 500 during their writes.
"""

from __future__ import annotations

import collections
import csv
import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from starlette.testclient import TestClient

from mailcarrier.api.app import create_app
from mailcarrier.config import Settings
from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.services.mailings import MailingDraft, create_mailing, send_mailing
from mailcarrier.storage import api_keys as key_repo
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.inbound_tables import inbound_messages
from mailcarrier.storage.tables import activities, audience_members, audiences, contacts, deliveries
from mailcarrier.storage.tracking_tables import tracking_links
from tests.delivery.world import make_world
from tests.inbound.factory import BOUNCE_DOMAIN, KEY, dsn
from tests.inbound.factory import make_world as make_sent_world

RECIPIENTS = 1500
BOUNCES = 300
IMPORTS = 3
IMPORT_ROWS = 15_000
HTML = ('<p>Hello {{ first_name }}</p><a href="https://shop.example/sale">sale</a>'
        '<a href="https://shop.example/new">new</a>'
        '<a href="https://shop.example/city/{{ fields.city }}">near you</a>'
        '<a href="{{ unsubscribe_url }}">unsubscribe</a>')
LOCK_WORDS = ("database is locked", "database table is locked", "SQLITE_BUSY")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'busy.db'}")
    yield engine
    engine.dispose()


def _env(tmp_path: Path, url: str, mx_port: int, inbound_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCARRIER_")}
    env.update({
        "MAILCARRIER_DATABASE_URL": url, "MAILCARRIER_DATA_DIR": str(tmp_path / "data"),
        "MAILCARRIER_SECRET_KEY": KEY.decode(), "MAILCARRIER_BOUNCE_DOMAIN": BOUNCE_DOMAIN,
        "MAILCARRIER_STATIC_ROUTES": f"*=127.0.0.1:{mx_port}", "MAILCARRIER_SMTP_TIMEOUT": "10",
        "MAILCARRIER_DELIVERY_LEASE_SECONDS": "60", "MAILCARRIER_DELIVERY_BATCH_SIZE": "100",
        "MAILCARRIER_DKIM_ALGORITHM": "ed25519", "MAILCARRIER_DELIVERY_CONCURRENCY": "8",
        "MAILCARRIER_INBOUND_PORT": str(inbound_port), "MAILCARRIER_PUBLIC_URL": "https://mail.shop.example",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"),
                                       env.get("PYTHONPATH", "")]),
    })
    return env


def _cli(*args: str, env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """A CLI process writing its output to ``log`` (a pipe nobody reads would fill and block it)."""
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "mailcarrier.cli.main", *args], env=env, cwd=cwd,
                                stdout=out, stderr=subprocess.STDOUT)


def _write_csvs(tmp_path: Path) -> list[Path]:
    files = []
    for n in range(IMPORTS):
        path = tmp_path / f"import{n}.csv"
        with path.open("w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["email", "first_name", "city"])
            for i in range(IMPORT_ROWS):
                out.writerow([f"i{n}.{i:05d}@imported{i % 17}.example", f"I{i}", "Nantes"])
        files.append(path)
    return files


def _send_bounces(port: int, returns: list[tuple[str, str, str]], failures: list[str]) -> None:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            for n, (return_path, address, message_id) in enumerate(returns):
                raw = dsn(to=return_path, recipient=address, message_id=message_id,
                          dsn_id=f"stress-{n}@mx.receiver.test")
                client.sendmail("", [return_path], raw)
    except (OSError, smtplib.SMTPException) as exc:
        failures.append(repr(exc))


def _read_api(app_settings: Settings, engine: Engine, keys: list[str], mailing_id: int,
              stop: threading.Event, statuses: collections.Counter[int]) -> None:
    moment = [datetime.now(UTC)]

    def clock() -> datetime:  # every call 10 s later: key caches miss, last uses fall due
        moment[0] += timedelta(seconds=10)
        return moment[0]

    app = create_app(app_settings, engine, clock=clock)
    with TestClient(app) as client:
        n = 0
        while not stop.is_set():
            key = keys[n % len(keys)]
            path = "/api/v1/whoami" if n % 2 else f"/api/v1/mailings/{mailing_id}"
            statuses[client.get(path, headers={"X-API-Key": key}).status_code] += 1
            n += 1
            time.sleep(0.01)


def _wait_processed(engine: Engine, count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            done = conn.execute(select(func.count()).where(inbound_messages.c.state == "processed")).scalar_one()
        if done >= count:
            break
        time.sleep(0.25)
    return int(done)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_workers_import_inbound_and_api_at_once_on_one_sqlite_file(store: Engine, tmp_path: Path) -> None:
    started = time.monotonic()
    world = make_world(store, [f"r{i:05d}@d{i % 11}.example" for i in range(RECIPIENTS)])
    sent = make_sent_world(store, [f"old{i:04d}@receiver.test" for i in range(BOUNCES)], slug="old",
                           upgrade_db=False)
    t0 = datetime.now(UTC)
    mailing_ids = []
    for subject in ("Sale", "News"):
        mailing_id = create_mailing(store, MailingDraft(
            account_id=world.account_id, from_address="news@shop.example", subject=subject, html=HTML,
            text="Hello {{ first_name }}: https://shop.example/sale", audience_id=world.audience_id), t0)
        send_mailing(store, world.account_id, mailing_id, t0)
        mailing_ids.append(mailing_id)
    with store.begin() as conn:
        keys = [key_repo.create_api_key(conn, world.account_id, f"reader {n}", ["*"], t0)[1] for n in range(12)]
    files = _write_csvs(tmp_path)
    url = store.url.render_as_string(hide_password=False)
    inbound_port = _free_port()
    app_settings = Settings.of(data_dir=tmp_path / "data", secret_key=KEY.decode(),
                            bounce_domain=BOUNCE_DOMAIN, database_url=url)
    with Sandbox() as sandbox:
        env = _env(tmp_path, url, sandbox.port, inbound_port)
        logs = {name: tmp_path / f"{name}.log" for name in ("inbound", "workers", *(f"import{n}" for n in range(IMPORTS)))}
        inbound = _cli("inbound", env=env, cwd=tmp_path, log=logs["inbound"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the server answers once it listens
            try:
                socket.create_connection(("127.0.0.1", inbound_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        statuses: collections.Counter[int] = collections.Counter()
        stop_reading = threading.Event()
        reader = threading.Thread(target=_read_api, args=(app_settings, store, keys, mailing_ids[0],
                                                          stop_reading, statuses))
        bounce_failures: list[str] = []
        returns = [(s.return_path, s.email, s.message_id) for s in sent.sent.values()]
        bouncer = threading.Thread(target=_send_bounces, args=(inbound_port, returns, bounce_failures))
        workers = _cli("worker", "--until-idle", "--processes", "2", env=env, cwd=tmp_path, log=logs["workers"])
        reader.start()
        bouncer.start()
        imports = []
        for n, path in enumerate(files):  # one after the other, all while the workers send
            job = _cli("contacts", "import", str(path), "--audience", f"imported{n}", "--account", "shop",
                       env=env, cwd=tmp_path, log=logs[f"import{n}"])
            job.wait(timeout=180)
            imports.append(job)
        workers.wait(timeout=180)
        bouncer.join(60)
        processed = _wait_processed(store, BOUNCES, 60)
        stop_reading.set()
        reader.join(30)
        inbound.send_signal(signal.SIGTERM)
        inbound.wait(timeout=60)
        received = collections.Counter(r.recipient for r in sandbox.received)
    elapsed = time.monotonic() - started

    text = {name: path.read_text(errors="replace") for name, path in logs.items()}
    assert not [(name, w) for name, t in text.items() for w in LOCK_WORDS if w in t], \
        {name: t[-3000:] for name, t in text.items()}
    assert workers.returncode == 0, text["workers"][-3000:]
    assert all(job.returncode == 0 for job in imports), text
    assert inbound.returncode == 0, text["inbound"][-3000:]
    assert bounce_failures == []
    assert statuses and set(statuses) == {200}, statuses

    with store.connect() as conn:
        states = collections.Counter(conn.execute(select(deliveries.c.mailing_id, deliveries.c.state)).all())
        links = conn.execute(select(func.count()).select_from(tracking_links)).scalar_one()
        members = dict(conn.execute(select(audiences.c.name, func.count()).join(
            audience_members, audience_members.c.audience_id == audiences.c.id).group_by(audiences.c.name)).all())
        total_contacts = conn.execute(select(func.count()).select_from(contacts)).scalar_one()
        hard = conn.execute(select(func.count()).where(activities.c.type == "hard_bounce")).scalar_one()
        inbound_states = collections.Counter(conn.execute(select(inbound_messages.c.state)).scalars())
    for mailing_id in mailing_ids:
        assert states[(mailing_id, "delivered")] == RECIPIENTS
    assert states[(sent.mailing_id, "bounced_hard")] == BOUNCES
    assert sum(received.values()) == 2 * RECIPIENTS and set(received.values()) == {2}
    assert links == 2 * 4  # per mailing: sale, new, and the city link for Lyon and for Paris
    assert members == {"news": RECIPIENTS, **{f"imported{n}": IMPORT_ROWS for n in range(IMPORTS)}}
    assert total_contacts == RECIPIENTS + BOUNCES + IMPORTS * IMPORT_ROWS
    assert hard == BOUNCES and processed == BOUNCES and inbound_states == {"processed": BOUNCES}
    assert elapsed < 200, f"took {elapsed:.0f} s"
    print(f"stress run: {elapsed:.1f} s, API answers {dict(statuses)}")
