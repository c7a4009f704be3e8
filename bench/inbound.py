"""End-to-end throughput of the return path: bounces over SMTP → stored → matched → acted on.

Set-up (not timed): a SQLite database with one mailing of N delivered deliveries; N bounce
emails taken round-robin from the corpus (``maildir/{bsd,dos,mac}``, bounces, complaints and
auto-replies; ``not/`` and ``err/`` left out), each readdressed to one delivery's signed VERP
return-path (``To:`` header and SMTP envelope recipient).

Timed: a client in a separate process sends all N over SMTP to ``InboundServer`` on loopback
(several concurrent connections, many messages per connection, as an MTA would); the clock
stops when every email is stored *and* processed (deliveries flipped, contacts updated). The
figure is emails per second end to end, plus the receive-only rate (last 250 received).

Peer, same run, same emails: flufl.bounce parse-only throughput (``email.message_from_bytes``
then ``all_failures``), which does no network, no storage and no matching.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import multiprocessing
import re
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flufl.bounce import all_failures
from sqlalchemy import func, select

from mailcarrier.domain.contact_status import StatusPolicy
from mailcarrier.domain.verp import VerpAddress, encode_return_path
from mailcarrier.inbound.smtp_server import InboundServer
from mailcarrier.services.inbound import InboundContext, IncomingEmail, process_all, store_incoming
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.inbound_tables import inbound_messages
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.tables import accounts, contacts, deliveries, mailings

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "bounces" / "maildir"
KEY = b"bench-secret"
DOMAIN = "bounces.bench.test"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
_TO = re.compile(rb"^To:.*?(?=^\S|\Z)", re.M | re.S | re.I)


def corpus() -> list[bytes]:
    files = [p for sub in ("bsd", "dos", "mac") for p in sorted((CORPUS / sub).glob("*")) if p.is_file()]
    if not files:
        sys.exit(f"no corpus at {CORPUS}")
    return [p.read_bytes() for p in files]


def readdress(raw: bytes, verp: str) -> bytes:
    """Point the bounce at ``verp`` (To: header) with CRLF line ends, as SMTP carries it."""
    text = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    head, _, body = text.partition(b"\n\n")
    head = _TO.sub(b"", head + b"\n").rstrip(b"\n")
    text = b"To: " + verp.encode() + b"\n" + head + b"\n\n" + body
    return text.replace(b"\n", b"\r\n")


def setup(db: Path, n: int) -> list[str]:
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    with engine.begin() as conn:
        account = conn.execute(accounts.insert().values(slug="bench", name="Bench", created_at=NOW)
                               ).inserted_primary_key[0]
        mailing = conn.execute(mailings.insert().values(
            account_id=account, from_address="news@bench.test", subject="s", sending_domain="bench.test",
            created_at=NOW)).inserted_primary_key[0]
        conn.execute(contacts.insert(), [
            {"account_id": account, "email": f"r{i}@d{i % 200}.test", "domain": f"d{i % 200}.test",
             "fields": {}, "created_at": NOW, "updated_at": NOW} for i in range(n)])
        ids = dict(conn.execute(select(contacts.c.email, contacts.c.id)).all())
        conn.execute(deliveries.insert(), [
            {"account_id": account, "mailing_id": mailing, "contact_id": ids[f"r{i}@d{i % 200}.test"],
             "email": f"r{i}@d{i % 200}.test", "domain": f"d{i % 200}.test", "state": "delivered",
             "message_id": f"m{i}@bench.test", "delivered_at": NOW} for i in range(n)])
        rows = conn.execute(select(deliveries.c.id).order_by(deliveries.c.id)).scalars().all()
    engine.dispose()
    return [encode_return_path(VerpAddress(account, mailing, d), key=KEY, bounce_domain=DOMAIN)
            for d in rows]


async def _session(host: str, port: int, jobs: list[tuple[str, bytes]]) -> None:
    reader, writer = await asyncio.open_connection(host, port)

    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if line[3:4] != b"-":
                return line

    await reply()
    writer.write(b"EHLO bench.client\r\n")
    await reply()
    for rcpt, data in jobs:
        stuffed = re.sub(rb"(?m)^\.", b"..", data)
        writer.write(b"MAIL FROM:<>\r\nRCPT TO:<" + rcpt.encode() + b">\r\nDATA\r\n")
        for _ in range(3):
            code = await reply()
            if code[:1] not in (b"2", b"3"):
                raise RuntimeError(f"refused: {code!r}")
        writer.write(stuffed + (b"" if stuffed.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        code = await reply()
        if not code.startswith(b"250"):
            raise RuntimeError(f"DATA refused: {code!r}")
    writer.write(b"QUIT\r\n")
    await reply()
    writer.close()


def client(host: str, port: int, jobs: list[tuple[str, bytes]], connections: int,
           done: multiprocessing.connection.Connection) -> None:
    async def run() -> None:
        await asyncio.gather(*(_session(host, port, jobs[i::connections]) for i in range(connections)))
    start = time.perf_counter()
    try:
        asyncio.run(run())
    except BaseException as exc:
        done.send(f"client failed: {exc!r}")
        raise
    done.send(time.perf_counter() - start)


def ours(n: int, connections: int, processors: int) -> tuple[float, float, dict[str, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        verps = setup(db, n)
        raws = corpus()
        jobs = [(v, readdress(raws[i % len(raws)], v)) for i, v in enumerate(verps)]
        engine = make_engine(f"sqlite:///{db}")
        ctx = InboundContext(KEY, DOMAIN, StatusPolicy(), timedelta(days=30))
        server = InboundServer(engine, ctx, accept=frozenset(), clock=lambda: NOW, batch=500,
                               processors=processors)
        server.start()
        try:
            parent, child = multiprocessing.Pipe()
            start = time.perf_counter()
            proc = multiprocessing.get_context("fork").Process(
                target=client, args=(server.host, server.port, jobs, connections, child))
            proc.start()
            send_seconds = parent.recv()
            proc.join()
            if isinstance(send_seconds, str):
                sys.exit(send_seconds)
            while True:
                with engine.connect() as conn:
                    left = conn.execute(select(func.count()).where(inbound_messages.c.state == "pending")
                                        ).scalar_one()
                    total = conn.execute(select(func.count()).select_from(inbound_messages)).scalar_one()
                if total >= n and left == 0:
                    break
                time.sleep(0.01)
            elapsed = time.perf_counter() - start
            with engine.connect() as conn:
                states = dict(conn.execute(select(inbound_messages.c.state, func.count())
                                           .group_by(inbound_messages.c.state)).all())
                states.update({f"delivery:{k}": v for k, v in conn.execute(
                    select(deliveries.c.state, func.count()).group_by(deliveries.c.state)).all()})
        finally:
            server.stop()
            engine.dispose()
    return n / elapsed, n / send_seconds, states


def breakdown(n: int) -> str:
    """Processing alone, in this process, on emails stored directly: where the time goes."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        verps = setup(db, n)
        raws = corpus()
        engine = make_engine(f"sqlite:///{db}")
        store_incoming(engine, [IncomingEmail(readdress(raws[i % len(raws)], v), "smtp", envelope_to=(v,))
                                for i, v in enumerate(verps)], NOW)
        ctx = InboundContext(KEY, DOMAIN, StatusPolicy(), timedelta(days=30))
        start = time.perf_counter()
        summary = process_all(engine, ctx, NOW)
        elapsed = time.perf_counter() - start
        engine.dispose()
    return (f"processing only (1 process, no SMTP): {n / elapsed:,.0f} emails/s; of {elapsed:.2f} s: "
            f"parse+match {summary.read_seconds:.2f} s, contact rules (services.contacts.apply_events, "
            f"{summary.contact_events} events) {summary.contact_seconds:.2f} s, "
            f"claims/look-ups/writes {summary.other_seconds:.2f} s")


def flufl(n: int) -> float:
    raws = corpus()
    emails = [raws[i % len(raws)] for i in range(n)]
    start = time.perf_counter()
    for raw in emails:
        with contextlib.suppress(Exception):  # the peer may raise on malformed mail
            all_failures(email.message_from_bytes(raw))
    return n / (time.perf_counter() - start)


def main(n: int = 10_000, connections: int = 32, processors: int = 1) -> None:
    rate, receive_rate, states = ours(n, connections, processors)
    peer = flufl(n)
    detail = breakdown(n)
    print(f"{n} bounce emails over SMTP, {connections} connections, {processors} processor processes, SQLite")
    print(f"mailcarrier inbound end to end: {rate:,.0f} emails/s (receive+store only: {receive_rate:,.0f}/s)")
    print(f"outcome: {states}")
    print(detail)
    print(f"flufl.bounce parse only:        {peer:,.0f} emails/s")
    print(f"RESULT inbound_end_to_end={rate:.0f} emails/s flufl_bounce_parse={peer:.0f} ratio={rate / peer:.2f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
