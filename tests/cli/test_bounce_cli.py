"""``mailcarrier bounce parse`` over files, mbox files and directories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from mailcarrier.cli.main import app

DATA = Path(__file__).parent / "data"
runner = CliRunner()


def _lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_dsn_file_gives_one_record_with_reason() -> None:
    result = runner.invoke(app, ["bounce", "parse", str(DATA / "bounce_postfix.eml")])
    assert result.exit_code == 0, result.output
    (doc,) = _lines(result.output)
    assert doc["file"] == str(DATA / "bounce_postfix.eml")
    (record,) = doc["records"]  # type: ignore[misc]
    assert record == {"recipient": "nobody@receiver.example", "status": "5.1.1", "reply_code": 550,
                      "reason": "userunknown", "category": 2, "category_name": "invalid address",
                      "bounce_type": "hard", "address_invalid": True, "hard_bounce": True,
                      "action": "failed", "command": "rcpt", "rule": "first:userunknown",
                      "diagnostic": "smtp; 550 5.1.1 <nobody@receiver.example>: Recipient "
                                    "address rejected: User unknown"}


def test_ordinary_mail_gives_empty_records() -> None:
    result = runner.invoke(app, ["bounce", "parse", str(DATA / "ordinary.eml")])
    assert result.exit_code == 0
    assert _lines(result.output) == [{"file": str(DATA / "ordinary.eml"), "records": []}]


def test_mbox_messages_are_labelled_with_index(tmp_path: Path) -> None:
    box = tmp_path / "box"
    parts = [(DATA / name).read_bytes() for name in ("ordinary.eml", "bounce_postfix.eml")]
    box.write_bytes(b"".join(b"From sender@example Sat Jan  1 00:00:00 2026\n" + p + b"\n"
                             for p in parts))
    result = runner.invoke(app, ["bounce", "parse", str(box)])
    docs = _lines(result.output)
    assert [d["file"] for d in docs] == [f"{box}#1", f"{box}#2"]
    assert docs[0]["records"] == [] and len(docs[1]["records"]) == 1  # type: ignore[arg-type]


def test_directory_walk_and_bad_inputs_do_not_stop_the_run(tmp_path: Path) -> None:
    shutil.copy(DATA / "bounce_postfix.eml", tmp_path / "a.eml")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "empty.eml").write_bytes(b"")
    missing = tmp_path / "missing.eml"
    result = runner.invoke(app, ["bounce", "parse", str(tmp_path), str(missing)])
    docs = {d["file"]: d for d in _lines(result.output)}
    assert len(docs[str(tmp_path / "a.eml")]["records"]) == 1  # type: ignore[arg-type]
    assert "error" in docs[str(tmp_path / "sub" / "empty.eml")]
    assert "error" in docs[str(missing)]
    assert result.exit_code == 4  # partly done: the readable emails were reported


def test_table_format_renders() -> None:
    result = runner.invoke(app, ["bounce", "parse", "--format", "table", str(DATA)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "userunknown" in result.output
