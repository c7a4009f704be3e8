"""Genuine bounces of real MTAs read as the reply they quote reads live.

Each file under ``data/genuine/<mta>/`` was written by the MTA itself (run from its Debian
package by bench/mta_bounces.py) after an MX gave it the reply of ``cases.toml`` at that
stage. Its one record names the recipient mailed, the SMTP command the reply answered, and
the reason, category and hard_bounce that ``classify_reply`` gives the reply at that stage.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mailcarrier.domain import SMTPStage, classify_reply, parse_reply
from mailcarrier.domain.bounce import parse_bounce

DATA = Path(__file__).parent / "data" / "genuine"
CASES = tomllib.loads((DATA / "cases.toml").read_text(encoding="utf-8"))["case"]
#: The command the record names for a reply given at each stage (a refused banner is the
#: connection's, a refused EHLO is named as such).
_COMMAND = {"connect": SMTPStage.CONNECT, "ehlo": SMTPStage.EHLO, "mail": SMTPStage.MAIL,
            "rcpt": SMTPStage.RCPT, "eod": SMTPStage.EOD}


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_a_genuine_bounce_reads_as_its_reply_reads_live(case: dict[str, str]) -> None:
    raw = (DATA / case["file"]).read_bytes()
    assert " ".join(case["reply"].split()[:4]) in " ".join(raw.decode().split()), "the bounce quotes the reply"
    live = classify_reply(parse_reply(case["reply"], SMTPStage(case["stage"])))
    report = parse_bounce(raw)
    assert report is not None
    (record,) = report.records
    assert record.recipient == case["recipient"]
    assert record.command is _COMMAND[case["stage"]]
    assert (record.reason, record.category, record.hard_bounce) == (live.reason, live.category, live.hard_bounce)


def test_every_mta_folder_has_cases() -> None:
    folders = {p.name for p in DATA.iterdir() if p.is_dir()}
    assert folders == {c["file"].split("/")[0] for c in CASES}
    assert all((DATA / c["file"]).is_file() for c in CASES)
