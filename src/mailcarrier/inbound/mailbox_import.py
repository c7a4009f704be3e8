"""Read bounce emails from files: single ``.eml`` files, mbox files and maildir folders.

Every email becomes an :class:`IncomingEmail` (source ``file``, origin the path, ``PATH#N`` for
the N-th email of an mbox, counted from 1). An email over the size limit is kept truncated and
flagged, so it is still listed and never silently dropped. Unreadable paths are reported to
the caller, not raised, so one bad file does not stop an import.
"""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mailcarrier.services.inbound import IncomingEmail

__all__ = ["ImportProblem", "iter_emails"]


@dataclass(frozen=True, slots=True)
class ImportProblem:
    """A path that could not be read."""

    path: str
    error: str


def _email(raw: bytes, origin: str, max_bytes: int) -> IncomingEmail:
    truncated = len(raw) > max_bytes
    return IncomingEmail(raw[:max_bytes] if truncated else raw, "file", origin, truncated=truncated)


def _is_maildir(path: Path) -> bool:
    return all((path / sub).is_dir() for sub in ("cur", "new", "tmp"))


def _is_mbox(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(5) == b"From "


def _from_mbox(path: Path, max_bytes: int) -> Iterator[IncomingEmail]:
    box = mailbox.mbox(path, create=False)
    try:
        for index, key in enumerate(box.iterkeys(), start=1):
            yield _email(box.get_bytes(key), f"{path}#{index}", max_bytes)
    finally:
        box.close()


def _from_maildir(path: Path, max_bytes: int) -> Iterator[IncomingEmail]:
    box = mailbox.Maildir(path, factory=None, create=False)
    for key in sorted(box.iterkeys()):
        yield _email(box.get_bytes(key), f"{path}/{key}", max_bytes)


def _from_file(path: Path, max_bytes: int) -> Iterator[IncomingEmail]:
    if _is_mbox(path):
        yield from _from_mbox(path, max_bytes)
        return
    with path.open("rb") as handle:
        raw = handle.read(max_bytes + 1)
    yield _email(raw, str(path), max_bytes)


def iter_emails(paths: list[Path], *, max_bytes: int) -> Iterator[IncomingEmail | ImportProblem]:
    """Every email under ``paths``; plain directories are walked recursively."""
    for path in paths:
        try:
            if path.is_dir():
                if _is_maildir(path):
                    yield from _from_maildir(path, max_bytes)
                    continue
                for child in sorted(p for p in path.rglob("*") if p.is_file()):
                    try:
                        yield from _from_file(child, max_bytes)
                    except OSError as exc:
                        yield ImportProblem(str(child), exc.strerror or str(exc))
            elif path.is_file():
                yield from _from_file(path, max_bytes)
            else:
                yield ImportProblem(str(path), "no such file or directory")
        except (OSError, mailbox.Error) as exc:
            yield ImportProblem(str(path), getattr(exc, "strerror", None) or str(exc))
