"""The hit spool on a real directory: producers in this and other processes, one reader.

What matters: a record ``append`` returned for is read exactly once in the normal course
(again only if the reader dies before committing), survives its producer's kill -9, and a
segment disappears only once it is finished and read to the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

import mailcarrier
from mailcarrier.domain.tracking import TokenPurpose, TrackingToken
from mailcarrier.services.tracking.hits import RawHit, decode_hit, encode_hit
from mailcarrier.services.tracking.spool import SpoolProducer, SpoolReader, caught_up, spool_marks


def read_all(reader: SpoolReader, max_records: int = 1000) -> list[bytes]:
    batch = reader.read(max_records)
    reader.commit(batch)
    return batch.records


def test_records_read_once_in_order_and_finished_segments_deleted(tmp_path: Path) -> None:
    first, second = SpoolProducer(tmp_path), SpoolProducer(tmp_path)
    for i in range(5):
        first.append(b"a%d" % i)
        second.append(b"b%d" % i)
    reader = SpoolReader(tmp_path)
    assert reader.acquire(wait=False)
    records = read_all(reader)
    assert sorted(records) == [b"a%d" % i for i in range(5)] + [b"b%d" % i for i in range(5)]
    assert [r for r in records if r.startswith(b"a")] == [b"a%d" % i for i in range(5)]
    assert read_all(reader) == []
    assert len(spool_marks(tmp_path)) == 2  # both producers still hold their segments
    first.close()
    reader.retire()
    assert len(spool_marks(tmp_path)) == 1
    second.append(b"late")
    assert read_all(reader) == [b"late"]
    second.close()
    reader.retire()
    assert spool_marks(tmp_path) == {} and not list(tmp_path.glob("*.pos"))


def test_only_one_reader_and_uncommitted_records_are_read_again(tmp_path: Path) -> None:
    producer = SpoolProducer(tmp_path)
    for i in range(10):
        producer.append(b"r%d" % i)
    reader = SpoolReader(tmp_path)
    assert reader.acquire(wait=False)
    other = SpoolReader(tmp_path)
    assert not other.acquire(wait=False)
    committed = reader.read(4)
    reader.commit(committed)
    lost = reader.read(3)  # the reader "dies" before committing these
    assert lost.records == [b"r4", b"r5", b"r6"]
    reader.release()
    assert other.acquire(wait=False)
    assert read_all(other) == [b"r%d" % i for i in range(4, 10)]


def test_caught_up_follows_commits_from_any_reader(tmp_path: Path) -> None:
    producer = SpoolProducer(tmp_path)
    producer.append(b"one")
    marks = spool_marks(tmp_path)
    assert not caught_up(tmp_path, marks)
    producer.append(b"two")
    reader = SpoolReader(tmp_path)
    reader.acquire(wait=False)
    batch = reader.read(1)
    reader.commit(batch)
    assert caught_up(tmp_path, marks) and not caught_up(tmp_path, spool_marks(tmp_path))
    read_all(reader)
    assert caught_up(tmp_path, spool_marks(tmp_path))


def test_segments_rotate_and_each_is_retired_when_read(tmp_path: Path) -> None:
    producer = SpoolProducer(tmp_path, segment_bytes=100)
    reader = SpoolReader(tmp_path)
    reader.acquire(wait=False)
    records = [b"%03d" % i + b"x" * 20 for i in range(40)]
    for record in records:
        producer.append(record)
    assert len(spool_marks(tmp_path)) > 5
    got: list[bytes] = []
    while batch := read_all(reader, 7):
        got += batch
    assert got == records  # segment names sort by creation time
    assert len(spool_marks(tmp_path)) == 1  # only the one still open


def test_torn_record_of_a_dead_producer_is_skipped(tmp_path: Path) -> None:
    producer = SpoolProducer(tmp_path)
    producer.append(b"whole")
    (segment,) = spool_marks(tmp_path)
    producer.close()
    with open(tmp_path / segment, "ab") as handle:  # what a write cut short by a full disk leaves
        handle.write(b'{"k":"cli')
    reader = SpoolReader(tmp_path)
    reader.acquire(wait=False)
    batch = reader.read(10)
    assert batch.records == [b"whole"]
    reader.commit(batch)
    assert spool_marks(tmp_path) == {}


def test_records_survive_kill_9_of_the_producer(tmp_path: Path) -> None:
    source = str(Path(mailcarrier.__file__).resolve().parents[1])
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from mailcarrier.services.tracking.spool import SpoolProducer
        producer = SpoolProducer(Path({str(tmp_path)!r}))
        for i in range(1000):
            producer.append(b"hit %d" % i)
        print("appended", flush=True)
        time.sleep(60)
        """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": source})
    try:
        assert child.stdout is not None and child.stdout.readline() == b"appended\n"
        reader = SpoolReader(tmp_path)
        reader.acquire(wait=False)
        reader.retire()
        assert len(spool_marks(tmp_path)) == 1  # alive: its segment stays
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        assert read_all(reader, 5000) == [b"hit %d" % i for i in range(1000)]
        assert spool_marks(tmp_path) == {}
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_concurrent_appends_from_threads_stay_whole(tmp_path: Path) -> None:
    producer = SpoolProducer(tmp_path, segment_bytes=4096)

    def append(prefix: bytes) -> None:
        for i in range(500):
            producer.append(prefix + b"-%d-" % i + b"y" * 50)

    threads = [threading.Thread(target=append, args=(b"t%d" % n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reader = SpoolReader(tmp_path)
    reader.acquire(wait=False)
    got: list[bytes] = []
    while batch := read_all(reader, 300):
        got += batch
    assert sorted(got) == sorted(b"t%d-%d-" % (n, i) + b"y" * 50 for n in range(4) for i in range(500))


@pytest.mark.parametrize("token", [None, TrackingToken(TokenPurpose.CLICK, 3, 44, 555, 6, 1_900_000_000)])
def test_hit_records_round_trip(token: TrackingToken | None) -> None:
    hit = RawHit(kind="click", at=datetime(2026, 5, 1, 9, 0, 1, 250_000, tzinfo=UTC), method="HEAD",
                 ip="2001:db8::1", user_agent='Mozilla "5.0"\n\u2603',
                 headers={"user-agent": "x\ny", "sec-purpose": "prefetch"}, token=token)
    record = encode_hit(hit)
    assert b"\n" not in record
    assert decode_hit(record) == hit


def test_reading_needs_the_lock(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="acquire"):
        SpoolReader(tmp_path).read(1)


def test_each_producer_gets_a_share_of_a_batch(tmp_path: Path) -> None:
    busy, quiet = SpoolProducer(tmp_path, segment_bytes=200), SpoolProducer(tmp_path)
    for i in range(300):
        busy.append(b"busy %03d" % i)
    for i in range(5):
        quiet.append(b"quiet %d" % i)
    reader = SpoolReader(tmp_path)
    reader.acquire(wait=False)
    first = read_all(reader, 40)
    assert [r for r in first if r.startswith(b"quiet")] == [b"quiet %d" % i for i in range(5)]
    assert [r for r in first if r.startswith(b"busy")] == [b"busy %03d" % i for i in range(20)]
    rest: list[bytes] = []
    while batch := read_all(reader, 40):
        rest += batch
    assert rest == [b"busy %03d" % i for i in range(20, 300)]  # in order across its segments
