"""``mailcarrier bounce``: read bounce emails from files, mbox files and directories."""

from __future__ import annotations

import json
import mailbox
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from mailcarrier.cli.exit_codes import ExitCode, epilog
from mailcarrier.domain.bounce import BounceReport, parse_bounce
from mailcarrier.domain.classify import explain
from mailcarrier.domain.errors import ParseError

app = typer.Typer(help="Read bounce emails, complaints and auto-replies.", no_args_is_help=True)


_UNREADABLE = "cannot read:"


class BounceFormat(StrEnum):
    JSONL = "jsonl"
    TABLE = "table"


def _is_mbox(path: Path) -> bool:
    """An mbox file starts with a ``From `` separator line; a single email does not."""
    with path.open("rb") as handle:
        return handle.read(5) == b"From "


def _mbox_messages(path: Path) -> Iterator[tuple[str, bytes | str]]:
    box = mailbox.mbox(path, create=False)
    try:
        for index, key in enumerate(box.iterkeys(), start=1):
            yield f"{path}#{index}", box.get_bytes(key)
    finally:
        box.close()


def _file_inputs(path: Path) -> Iterator[tuple[str, bytes | str]]:
    """Yield (label, raw bytes) per email, or (label, error text) when unreadable."""
    try:
        if _is_mbox(path):
            yield from _mbox_messages(path)
            return
        yield str(path), path.read_bytes()
    except OSError as exc:
        yield str(path), f"{_UNREADABLE} {exc.strerror or exc}"


def iter_inputs(paths: list[Path]) -> Iterator[tuple[str, bytes | str]]:
    """Every email under the given paths; directories are walked recursively (maildir too)."""
    for path in paths:
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                yield from _file_inputs(child)
        elif path.exists():
            yield from _file_inputs(path)
        else:
            yield str(path), f"{_UNREADABLE} no such file or directory"


def report_json(label: str, report: BounceReport | None) -> dict[str, object]:
    """The JSON line printed for one email (stable keys)."""
    records = [] if report is None else [
        {"recipient": r.recipient, "status": r.status, "reply_code": r.reply_code,
         "reason": r.reason.value, "category": int(r.category), "category_name": r.category.label,
         "bounce_type": r.bounce_type.value if r.bounce_type else None,
         "address_invalid": r.address_invalid,
         # Sisimai's "hardbounce" (= address_invalid), kept for scripts written against it.
         "hard_bounce": r.hard_bounce,
         "action": r.action, "command": r.command.value, "rule": r.rule,
         "diagnostic": r.diagnostic}
        for r in report.records]
    return {"file": label, "records": records}


def _read(label: str, raw: bytes | str) -> dict[str, object]:
    if isinstance(raw, str):
        return {"file": label, "error": raw}
    try:
        return report_json(label, parse_bounce(raw))
    except ParseError as exc:
        return {"file": label, "error": str(exc)}


@app.command("parse", epilog=epilog(ExitCode.PARTIAL))
def parse_command(
    paths: list[Path] = typer.Argument(..., help="Email files (.eml), mbox files or directories "
                                       "(walked recursively, maildir included). Emails found in an "
                                       "mbox are labelled PATH#N, N counting from 1."),
    output: BounceFormat = typer.Option(BounceFormat.JSONL, "--format", "-f",
                                        help="jsonl: one JSON object per email; table: Rich table."),
    explain_flag: bool = typer.Option(False, "--explain",
                                      help="Print, per record, the evidence read in precedence order "
                                           "and the rule that decided."),
) -> None:
    """Say, for each email, which recipients bounced and why.

    Exit 0 when every input could be read (a malformed email is reported, not fatal); exit 4
    when a path could not be read (the others are reported).
    """
    if explain_flag:
        _explain(paths)
        return
    docs = (_read(label, raw) for label, raw in iter_inputs(paths))
    failed = False
    if output is BounceFormat.JSONL:
        for doc in docs:
            failed = failed or str(doc.get("error", "")).startswith(_UNREADABLE)
            typer.echo(json.dumps(doc, ensure_ascii=False))
    else:
        table = Table("file", "recipient", "status", "code", "reason", "cat", "type", "diagnostic")
        for doc in docs:
            failed = failed or str(doc.get("error", "")).startswith(_UNREADABLE)
            _add_rows(table, doc)
        Console().print(table)
    if failed:
        raise typer.Exit(ExitCode.PARTIAL)


def _add_rows(table: Table, doc: dict[str, object]) -> None:
    label = str(doc["file"])
    if "error" in doc:
        table.add_row(label, "", "", "", "error", "", "", str(doc["error"]))
        return
    records = doc["records"]
    assert isinstance(records, list)
    if not records:
        table.add_row(label, "", "", "", "not a bounce", "", "", "")
    for rec in records:
        table.add_row(label, rec["recipient"], rec["status"] or "", str(rec["reply_code"] or ""),
                      rec["reason"], str(rec["category"]), rec["bounce_type"] or "",
                      rec["diagnostic"][:60])


def _explain(paths: list[Path]) -> None:
    for label, raw in iter_inputs(paths):
        if isinstance(raw, str):
            typer.echo(f"{label}: {raw}")
            continue
        try:
            report = parse_bounce(raw)
        except ParseError as exc:
            typer.echo(f"{label}: error: {exc}")
            continue
        if report is None:
            typer.echo(f"{label}: not a bounce, a complaint or an auto-reply")
            continue
        typer.echo(f"{label}: {report.kind}")
        for record in report.records:
            typer.echo(f"  recipient {record.recipient or '(none)'}")
            if record.evidence is None:
                typer.echo(f"{'decided by':>28}: {record.rule}")
                typer.echo(f"{'reason':>28}: {record.reason.value}")
                continue
            for key, value in explain(record.evidence):
                typer.echo(f"{key:>28}: {value}")
