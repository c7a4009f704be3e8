"""Opens, clicks and unsubscribes over HTTP against the app, on SQLite and PostgreSQL.

Scanner bursts are replayed the way gateways produce them (every link within a couple of
seconds, ~40 s after delivery); the person's click comes ten minutes later.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, func, select

import mailcarrier
from mailcarrier.api.app import create_app
from mailcarrier.config import Settings
from mailcarrier.domain.tracking import TokenPurpose, TrackingToken, encode_token
from mailcarrier.services.tracking.engagement import mailing_engagement
from mailcarrier.services.tracking.settle import settled_events
from mailcarrier.services.tracking.spool import spool_marks
from mailcarrier.services.tracking.writer import HitWriter, spool_directory
from mailcarrier.storage.tables import activities, contacts
from mailcarrier.storage.tracking_spool_tables import tracking_spool_positions
from mailcarrier.storage.tracking_tables import consent_records, tracking_hits, tracking_links
from tests.api.conftest import T0, Clock
from tests.api.live import free_port
from tests.api.world import make_mailing

SCANNER_IP = "203.0.113.9"  # not in any known network: only behaviour gives it away
PERSON_IP = "198.51.100.23"
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126 Safari/537.36"


async def hit(app: FastAPI, url: str, *, ip: str = PERSON_IP, method: str = "GET",
              headers: dict[str, str] | None = None, content: bytes | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=(ip, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://mc.test") as http:
        return await http.request(method, url, headers={"User-Agent": UA, **(headers or {})},
                                  content=content)


def flush(app: FastAPI) -> None:
    assert app.state.tracking.recorder.flush(timeout=20)


def hits(db: Engine) -> list[dict[str, object]]:
    with db.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(tracking_hits).order_by(tracking_hits.c.id))]


async def test_links_rewritten_and_registered_once(client: httpx.AsyncClient, db: Engine,
                                                   settings: Settings, account_id: int) -> None:
    mailing_id, (ann, bob) = make_mailing(db, settings, account_id, ["ann@a.example", "bob@b.example"], T0)
    html = ann.prepared.html or ""
    assert "https://shop.example" not in html and "mailto:help@shop.example" in html
    assert html.count("http://mc.test/c/") == 3 and "http://mc.test/o/" in html
    assert ann.prepared.unsubscribe_url in html and ann.prepared.unsubscribe_url in (ann.prepared.text or "")
    assert "http://mc.test/c/" in (ann.prepared.text or "")
    headers = dict(ann.prepared.headers)
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["List-Unsubscribe"].startswith(f"<{ann.prepared.unsubscribe_url}>, <mailto:")
    with db.connect() as conn:
        rows = conn.execute(select(tracking_links.c.number, tracking_links.c.url)
                            .where(tracking_links.c.mailing_id == mailing_id)
                            .order_by(tracking_links.c.number)).all()
    assert [tuple(r) for r in rows] == [(1, "https://shop.example/sale?utm=1&x=2"),
                                        (2, "https://shop.example/new"), (3, "https://blog.example/post")]
    assert ann.click_url(1) != bob.click_url(1)  # per-recipient tokens, same link row


async def test_click_redirects_to_stored_destination_and_person_is_human(
        app: FastAPI, client: httpx.AsyncClient, db: Engine, settings: Settings, clock: Clock,
        account_id: int) -> None:
    _mailing_id, (ann,) = make_mailing(db, settings, account_id, ["ann@a.example"], T0)
    clock.now = T0 + timedelta(minutes=10)
    response = await hit(app, ann.click_url(1))
    assert response.status_code == 302
    assert response.headers["location"] == "https://shop.example/sale?utm=1&x=2"
    flush(app)
    (row,) = hits(db)
    assert row["verdict"] == "human" and row["contact_id"] == ann.contact_id
    assert row["ip"] == PERSON_IP and row["method"] == "GET" and row["token_valid"] is True
    assert row["user_agent"] == UA and row["headers"]["user-agent"] == UA  # type: ignore[index]


async def test_scanner_burst_is_machine_and_later_person_is_human(
        app: FastAPI, client: httpx.AsyncClient, db: Engine, settings: Settings, clock: Clock,
        account_id: int) -> None:
    mailing_id, (ann,) = make_mailing(db, settings, account_id, ["ann@a.example"], T0)
    # The gateway fetches every link 43 s after the 250, a fraction of a second apart.
    clock.now = T0 + timedelta(seconds=43)
    for number in (1, 2, 3):
        assert (await hit(app, ann.click_url(number), ip=SCANNER_IP)).status_code == 302
        clock.advance(seconds=0.4)
    flush(app)
    rows = hits(db)
    assert [r["verdict"] for r in rows] == ["machine"] * 3
    assert all("hit right after delivery" in r["reasons"] for r in rows)  # type: ignore[operator]
    assert "several links hit together" in rows[-1]["reasons"]  # type: ignore[operator]
    report = mailing_engagement(db, account_id, mailing_id)
    assert (report.clicks.human_total, report.clicks.machine_total, report.clicks.machine_unique) == (0, 3, 1)
    # The reader clicks the second link ten minutes later, from home.
    clock.now = T0 + timedelta(minutes=10)
    assert (await hit(app, ann.click_url(2))).status_code == 302
    flush(app)
    rows = hits(db)
    assert rows[-1]["verdict"] == "human" and rows[-1]["reasons"] == []
    upgraded = [r for r in rows if r["upgraded_at"] is not None]
    assert [r["link_id"] for r in upgraded] == [rows[-1]["link_id"]]  # same link only
    assert "upgraded by a later human hit" in upgraded[0]["reasons"]  # type: ignore[operator]
    report = mailing_engagement(db, account_id, mailing_id)
    assert report.clicks.human_unique == 1 and report.clicks.machine_total == 2
    per_link = {link.number: link.clicks for link in report.links}
    assert per_link[2].human_total == 2 and per_link[1].machine_total == 1 and per_link[3].human_total == 0


async def test_late_burst_first_hit_is_revised_to_machine(
        app: FastAPI, client: httpx.AsyncClient, db: Engine, settings: Settings, clock: Clock,
        account_id: int) -> None:
    _m, (ann,) = make_mailing(db, settings, account_id, ["ann@a.example"], T0)
    clock.now = T0 + timedelta(minutes=7)  # a sandbox re-scan, well after delivery
    for number in (1, 2, 3):
        await hit(app, ann.click_url(number), ip=SCANNER_IP)
        flush(app)  # one batch per hit: the burst is recognised across batches
        clock.advance(seconds=0.5)
    rows = hits(db)
    assert [r["verdict"] for r in rows] == ["machine"] * 3
    assert "part of a burst recognised later" in rows[0]["reasons"]  # type: ignore[operator]
    assert "several links hit together" in rows[2]["reasons"]  # type: ignore[operator]


async def test_hit_within_delivery_window_and_known_network_and_head(
        app: FastAPI, client: httpx.AsyncClient, db: Engine, settings: Settings, clock: Clock,
        account_id: int) -> None:
    _m, (ann, bob, cat) = make_mailing(db, settings, account_id,
                                       ["ann@a.example", "bob@b.example", "cat@c.example"], T0)
    clock.now = T0 + timedelta(seconds=20)
    await hit(app, ann.click_url(1), ip="40.107.22.5")  # Exchange Online Protection
    clock.now = T0 + timedelta(minutes=30)
    assert (await hit(app, bob.click_url(1), method="HEAD")).status_code == 302
    await hit(app, cat.click_url(3), headers={"Sec-Purpose": "prefetch"})
    flush(app)
    rows = hits(db)
    assert rows[0]["verdict"] == "machine"
    assert rows[0]["reasons"] == ["known network: Microsoft Exchange Online Protection"]
    assert rows[1]["verdict"] == "machine" and "HEAD request" in rows[1]["reasons"]  # type: ignore[operator]
    assert rows[2]["verdict"] == "machine" and "prefetch header" in rows[2]["reasons"]  # type: ignore[operator]
    # A hit soon after delivery from an unknown address is a machine too.
    clock.now = T0 + timedelta(seconds=30)
    await hit(app, cat.click_url(2), ip="192.0.2.77")
    flush(app)
    assert "hit right after delivery" in hits(db)[-1]["reasons"]  # type: ignore[operator]


async def test_one_address_clicking_for_many_recipients_is_machine(
        app: FastAPI, client: httpx.AsyncClient, db: Engine, settings: Settings, clock: Clock,
        account_id: int) -> None:
    emails = [f"user{i}@corp.example" for i in range(4)]
    _m, messages = make_mailing(db, settings, account_id, emails, T0)
    clock.now = T0 + timedelta(minutes=5)
    for message in messages:
        await hit(app, message.click_url(2), ip="192.0.2.200")
        clock.advance(seconds=7)
    flush(app)
    rows = hits(db)
    assert [r["verdict"] for r in rows] == ["machine"] * 4
    assert "one address clicking for several recipients" in rows[-1]["reasons"]  # type: ignore[operator]


async def test_opens_apple_mpp_and_pixel(app: FastAPI, client: httpx.AsyncClient, db: Engine,
                                         settings: Settings, clock: Clock, account_id: int) -> None:
    mailing_id, (ann, bob, cat) = make_mailing(db, settings, account_id,
                                               ["ann@icloud.com", "bob@b.example", "cat@c.example"], T0)
    clock.now = T0 + timedelta(minutes=3)
    pixel = await hit(app, ann.open_url, ip="17.58.0.4", headers={"User-Agent": "Mozilla/5.0"})
    assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"
    assert pixel.content.startswith(b"GIF89a") and "no-store" in pixel.headers["cache-control"]
    await hit(app, bob.open_url, ip="192.0.2.9", headers={"User-Agent": "Mozilla/5.0"})
    await hit(app, cat.open_url)
    flush(app)
    assert [r["verdict"] for r in hits(db)] == ["apple_mpp", "apple_mpp", "human"]
    report = mailing_engagement(db, account_id, mailing_id)
    assert (report.opens.human_unique, report.opens.machine_unique) == (1, 2)
    assert report.by_verdict == {"apple_mpp": 2, "human": 1}


@pytest.mark.parametrize("how", ["forged", "altered", "expired", "wrong_purpose", "garbage"])
async def test_bad_tokens_404_and_nothing_recorded_against_contact(
        app: FastAPI, client: httpx.AsyncClient, db: Engine, settings: Settings, clock: Clock,
        account_id: int, how: str) -> None:
    mailing_id, (ann,) = make_mailing(db, settings, account_id, ["ann@a.example"], T0)
    good = ann.click_url(1)
    token = good.rsplit("/", 1)[1]
    link_id = hits_link_id(db, mailing_id)
    if how == "forged":
        forged = TrackingToken(TokenPurpose.CLICK, account_id, mailing_id, ann.delivery_id, link_id)
        token = encode_token(forged, master_secret=b"not the server's secret", key_id=1)
    elif how == "altered":
        token = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    elif how == "expired":
        old = TrackingToken(TokenPurpose.CLICK, account_id, mailing_id, ann.delivery_id, link_id,
                            int((T0 - timedelta(days=1)).timestamp()))
        token = encode_token(old, master_secret=settings.resolved_secret(), key_id=1)
    elif how == "wrong_purpose":
        token = ann.open_url.rsplit("/", 1)[1]
    else:
        token = "%3Cscript%3E..%00%E2%98%83" * 3
    clock.now = T0 + timedelta(hours=1)
    for method in ("GET", "HEAD"):
        response = await hit(app, f"/c/{token}", method=method)
        assert response.status_code == 404 and "location" not in response.headers
    assert (await hit(app, f"/u/{token}")).status_code == 404
    assert (await hit(app, f"/u/{token}", method="POST")).status_code == 404
    flush(app)
    rows = hits(db)
    assert len(rows) == 2 and all(r["token_valid"] is False for r in rows)
    assert all(r["contact_id"] is None and r["mailing_id"] is None and r["verdict"] is None for r in rows)
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(activities)).scalar_one() == 0
        status = conn.execute(select(contacts.c.status).where(contacts.c.id == ann.contact_id)).scalar_one()
    assert status == "active"


def hits_link_id(db: Engine, mailing_id: int) -> int:
    with db.connect() as conn:
        return int(conn.execute(select(tracking_links.c.id).where(
            tracking_links.c.mailing_id == mailing_id, tracking_links.c.number == 1)).scalar_one())


async def test_unsubscribe_get_changes_nothing_post_opts_out_once(
        app: FastAPI, client: httpx.AsyncClient, db: Engine, settings: Settings, clock: Clock,
        account_id: int) -> None:
    _m, (ann,) = make_mailing(db, settings, account_id, ["ann@a.example"], T0)
    url = ann.prepared.unsubscribe_url.replace("http://mc.test", "")
    clock.now = T0 + timedelta(minutes=1)
    for _ in range(3):  # scanners fetch every GET
        page = await hit(app, url, ip=SCANNER_IP)
        assert page.status_code == 200 and 'method="post"' in page.text and "a**@a.example" in page.text
    with db.connect() as conn:
        assert conn.execute(select(contacts.c.status).where(contacts.c.id == ann.contact_id)).scalar_one() == "active"
        assert conn.execute(select(func.count()).select_from(activities)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(consent_records)).scalar_one() == 0
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for body in (b"", b"List-Unsubscribe=Yes", b"other=1"):  # not RFC 8058's one-click body
        refused = await hit(app, url, method="POST", headers=form, content=body)
        assert refused.status_code == 400 and "List-Unsubscribe=One-Click" in refused.text
    with db.connect() as conn:
        assert conn.execute(select(contacts.c.status).where(contacts.c.id == ann.contact_id)).scalar_one() == "active"
    multipart = (b'--B\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
                 b"One-Click\r\n--B--\r\n")
    for headers, body in ((form, b"List-Unsubscribe=One-Click"),  # RFC 8058 one-click, repeated,
                          ({"Content-Type": "multipart/form-data; boundary=B"}, multipart)):  # both forms
        done = await hit(app, url, method="POST", headers=headers, content=body)
        assert done.status_code == 200 and "location" not in done.headers
        assert "unsubscribed" in done.text
    with db.connect() as conn:
        assert conn.execute(select(contacts.c.status).where(contacts.c.id == ann.contact_id)).scalar_one() == "opted_out"
        types = conn.execute(select(activities.c.type).order_by(activities.c.id)).scalars().all()
        records = conn.execute(select(consent_records.c.action, consent_records.c.ip)).all()
    assert types == ["unsubscribe", "status_changed"]
    assert [tuple(r) for r in records] == [("opted_out", PERSON_IP)]
    again = await hit(app, url)
    assert "already unsubscribed" in again.text


async def test_settling_after_hold_feeds_contacts_and_webhooks(
        app: FastAPI, client: httpx.AsyncClient, db: Engine, settings: Settings, clock: Clock,
        account_id: int) -> None:
    _m, (ann, bob) = make_mailing(db, settings, account_id, ["ann@a.example", "bob@b.example"], T0)
    recorder = app.state.tracking.recorder
    clock.now = T0 + timedelta(minutes=10)
    await hit(app, ann.click_url(3))
    await hit(app, bob.click_url(1), method="HEAD")
    flush(app)
    assert recorder.settle() == 0 and settled_events(db) == []  # still within the hold
    clock.advance(seconds=settings.tracking.hold_seconds + 1)
    assert recorder.settle() == 2
    events = settled_events(db)
    assert [(e.contact_id, e.verdict, e.url) for e in events] == [
        (ann.contact_id, "human", "https://blog.example/post"),
        (bob.contact_id, "machine", "https://shop.example/sale?utm=1&x=2")]
    assert settled_events(db, after_id=events[0].hit_id) == events[1:]
    assert [e.contact_id for e in settled_events(db, human_only=True)] == [ann.contact_id]
    with db.connect() as conn:
        engaged = dict(conn.execute(select(contacts.c.id, contacts.c.last_engaged_at)).all())
    assert engaged[ann.contact_id] == T0 + timedelta(minutes=10) and engaged[bob.contact_id] is None
    assert recorder.settle() == 0  # settling is done once


async def test_endpoints_answer_while_database_is_locked(
        app: FastAPI, client: httpx.AsyncClient, db: Engine, settings: Settings, clock: Clock,
        account_id: int) -> None:
    if db.dialect.name != "sqlite":
        pytest.skip("the write lock is held with SQLite's BEGIN EXCLUSIVE")
    _m, (ann,) = make_mailing(db, settings, account_id, ["ann@a.example"], T0)
    clock.now = T0 + timedelta(minutes=10)
    await hit(app, ann.click_url(1))  # warms the link cache
    flush(app)
    release = threading.Event()
    locked = threading.Event()

    def hold_lock() -> None:
        with db.connect() as conn:
            conn.exec_driver_sql("COMMIT")  # leave the engine's implicit BEGIN
            conn.exec_driver_sql("BEGIN EXCLUSIVE")
            locked.set()
            release.wait(20)
            conn.exec_driver_sql("COMMIT")

    holder = threading.Thread(target=hold_lock)
    holder.start()
    assert locked.wait(5)
    try:
        started = time.perf_counter()
        for _ in range(50):
            assert (await hit(app, ann.click_url(1))).status_code == 302
            assert (await hit(app, ann.open_url)).status_code == 200
        elapsed = time.perf_counter() - started
    finally:
        release.set()
        holder.join()
    assert elapsed < 5, f"100 requests took {elapsed:.1f}s with the database locked"
    flush(app)
    assert len(hits(db)) == 101


# --- the real server: a writer process, the spool surviving kill -9, draining on SIGTERM ----


@contextmanager
def write_locked(db: Engine) -> Iterator[None]:
    """Hold the database's write lock (the writer can neither write nor, on PostgreSQL, read hits)."""
    with db.connect() as conn:
        if db.dialect.name == "sqlite":
            conn.exec_driver_sql("COMMIT")  # leave the engine's implicit BEGIN
            conn.exec_driver_sql("BEGIN EXCLUSIVE")
            try:
                yield
            finally:
                conn.exec_driver_sql("COMMIT")
        else:
            with conn.begin():
                conn.exec_driver_sql("LOCK TABLE tracking_hits IN ACCESS EXCLUSIVE MODE")
                yield


def start_server(db: Engine, settings: Settings, port: int) -> subprocess.Popen[bytes]:
    """``mailcarrier serve`` in a session of its own (so kill -9 reaches its writer too)."""
    source = str(Path(mailcarrier.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": source, "MAILCARRIER_DATA_DIR": str(settings.storage.data_dir),
           "MAILCARRIER_SECRET_KEY": settings.resolved_secret().decode(),
           "MAILCARRIER_PUBLIC_URL": settings.api.public_url,
           "MAILCARRIER_DATABASE_URL": db.url.render_as_string(hide_password=False)}
    proc = subprocess.Popen([sys.executable, "-m", "mailcarrier.cli.main", "serve", "--port", str(port),
                             "--log-level", "warning"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, (proc.stderr.read() if proc.stderr else b"").decode()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/c/ready", timeout=1).status_code == 404:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("mailcarrier serve did not start")


def stored_verdicts(db: Engine) -> list[tuple[str, str | None, int | None]]:
    with db.connect() as conn:
        return [(r.kind, r.verdict, r.contact_id) for r in conn.execute(
            select(tracking_hits.c.kind, tracking_hits.c.verdict, tracking_hits.c.contact_id)
            .where(tracking_hits.c.token_valid.is_(True)).order_by(tracking_hits.c.id))]


def wait_for_rows(db: Engine, count: int, timeout: float = 30) -> list[tuple[str, str | None, int | None]]:
    deadline = time.monotonic() + timeout
    rows = stored_verdicts(db)
    while len(rows) < count and time.monotonic() < deadline:
        time.sleep(0.1)
        rows = stored_verdicts(db)
    return rows


def test_serve_hits_survive_kill_9_and_are_written_after_restart(
        db: Engine, settings: Settings, account_id: int) -> None:
    _m, (ann, bob) = make_mailing(db, settings, account_id, ["ann@a.example", "bob@b.example"],
                                  datetime.now(UTC) - timedelta(hours=1))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    paths = [ann.click_url(1), ann.click_url(2), bob.click_url(3), bob.open_url] * 5
    proc = start_server(db, settings, port)
    try:
        with write_locked(db):
            for url in paths:
                response = httpx.get(url.replace("http://mc.test", base), headers={"User-Agent": UA})
                assert response.status_code in (200, 302)
            spooled = spool_marks(spool_directory(settings))
            assert sum(spooled.values()) > 0  # accepted, on disk, not in the database
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        assert stored_verdicts(db) == []  # nothing was written before the crash
        proc = start_server(db, settings, port)
        rows = wait_for_rows(db, len(paths))
        assert len(rows) == len(paths)
        assert sorted(r[0] for r in rows) == ["click"] * 15 + ["open"] * 5
        assert all(r[1] is not None for r in rows)
        assert {r[2] for r in rows} == {ann.contact_id, bob.contact_id}
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
    assert proc.returncode == 0
    assert spool_marks(spool_directory(settings)) == {}  # every segment drained and deleted


def test_serve_drains_the_spool_on_clean_shutdown(db: Engine, settings: Settings, account_id: int) -> None:
    _m, (ann,) = make_mailing(db, settings, account_id, ["ann@a.example"], datetime.now(UTC) - timedelta(hours=1))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(db, settings, port)
    try:
        with write_locked(db):
            for number in (1, 2, 3) * 10:
                assert httpx.get(ann.click_url(number).replace("http://mc.test", base)).status_code == 302
            proc.send_signal(signal.SIGTERM)  # stop while every hit still waits for the database
            time.sleep(1.0)
            assert proc.poll() is None  # the writer is still retrying, not giving up
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0
    rows = stored_verdicts(db)
    assert len(rows) == 30 and {r[2] for r in rows} == {ann.contact_id}
    assert spool_marks(spool_directory(settings)) == {}


def writer_pids(server_pid: int) -> set[int]:
    """Processes the server spawned to run the hit writer (not multiprocessing's resource tracker)."""
    found = set()
    for children in Path(f"/proc/{server_pid}/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"spawn_main" in command:
                found.add(int(pid))
    return found


def test_serve_replaces_a_writer_that_dies(db: Engine, settings: Settings, account_id: int) -> None:
    _m, (ann,) = make_mailing(db, settings, account_id, ["ann@a.example"], datetime.now(UTC) - timedelta(hours=1))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(db, settings, port)
    try:
        for number in (1, 2, 3) * 3:
            assert httpx.get(ann.click_url(number).replace("http://mc.test", base)).status_code == 302
        assert len(wait_for_rows(db, 9)) == 9
        (first,) = writer_pids(proc.pid)
        os.kill(first, signal.SIGKILL)
        for number in (1, 2, 3) * 3:  # accepted while no writer runs
            assert httpx.get(ann.click_url(number).replace("http://mc.test", base)).status_code == 302
        assert len(wait_for_rows(db, 18)) == 18
        (second,) = writer_pids(proc.pid)
        assert second != first
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
    assert proc.returncode == 0


async def test_writer_killed_after_a_commit_stores_nothing_twice(
        db: Engine, settings: Settings, clock: Clock, account_id: int) -> None:
    external = settings.with_values(tracking_writer="external")  # no writer thread
    app = create_app(external, db, clock=clock)
    _m, (ann,) = make_mailing(db, external, account_id, ["ann@a.example"], T0)
    clock.now = T0 + timedelta(minutes=10)
    policy = app.state.tracking.policy
    second = HitWriter(db, external, policy, clock=clock)
    async with app.router.lifespan_context(app):
        for number in (1, 2, 3):
            assert (await hit(app, ann.click_url(number))).status_code == 302
        assert hits(db) == []  # spooled; nobody drains in this process
        first = HitWriter(db, external, policy, clock=clock)
        assert first.reader.acquire(wait=False)
        first.adopt_stored_positions()
        assert first.drain_once() == 3
        first.reader.release()
        # What a kill -9 right after the database commit leaves: position files not yet moved.
        for position_file in spool_directory(external).glob("*.pos"):
            position_file.write_text("0", encoding="ascii")
        assert second.reader.acquire(wait=False)
        second.adopt_stored_positions()
        assert second.drain_once() == 0
        assert len(hits(db)) == 3
        assert (await hit(app, ann.click_url(1))).status_code == 302
        assert second.drain_once() == 1
    assert second.drain_once() == 0  # the server closed its segment: deleted, with its position
    second.reader.release()
    assert len(hits(db)) == 4 and all(r["verdict"] is not None for r in hits(db))
    assert spool_marks(spool_directory(external)) == {}
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tracking_spool_positions)).scalar_one() == 0
