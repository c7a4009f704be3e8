"""Failed-recipient agreement on GNU Mailman's bounce collection (flufl.bounce's test data).

flufl.bounce's source distribution ships ~120 real bounces under ``tests/data`` and names,
in ``tests/test_detectors.py``, the addresses each one should yield. That collection was
written by other people for another parser, so it is mail this project has never been
tuned on: a fair check that recipient extraction generalises.

For each file the expected set is the union of the addresses the test table lists for it
(a file listed twice, once by a detector that does not read it, keeps the addresses of the
one that does; ``dumbass_01.txt`` is expected empty by ``test_scan_unrecognized``). Ours is
the set of addresses the sender mailed, per record ``parse_bounce`` returns for a bounce
(kinds ``dsn`` and ``nonstandard``: auto-replies and complaints are not failed recipients):
``original_recipient`` when the report states one (RFC 3464 Original-Recipient, Sendmail's
"expanded from"), else ``recipient``; inbound matching looks addresses up the same way. Addresses
compare case-insensitively, as mailbox matching does in practice. The figure is the share
of files whose two sets are exactly equal; flufl.bounce's own result (``all_failures``,
temporary and permanent) is scored the same way.

The wheel does not carry the test data; the script fetches the source distribution of the
installed version with pip (``--data DIR`` points at an unpacked ``tests`` folder instead)
and caches it under ``~/.cache/mailcarrier``.

Usage: ``python bench/mailman_recipients.py [--data DIR] [--show]``
"""

from __future__ import annotations

import argparse
import ast
import email
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

from flufl.bounce import all_failures

from mailcarrier.domain.bounce import parse_bounce
from mailcarrier.domain.errors import ParseError

CACHE = Path.home() / ".cache" / "mailcarrier"


def fetch_tests() -> Path:
    """The ``tests`` folder of flufl.bounce's sdist, downloaded once with pip."""
    release = version("flufl.bounce")
    target = CACHE / f"flufl_bounce-{release}"
    tests = target / "tests"
    if (tests / "test_detectors.py").is_file():
        return tests
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--no-binary", ":all:", "-d", tmp,
                        f"flufl.bounce=={release}"], check=True)
        archive = next(Path(tmp).glob("*.tar.gz"))
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers()
                       if "/tests/" in m.name and (m.isfile() or m.isdir())]
            CACHE.mkdir(parents=True, exist_ok=True)
            tar.extractall(CACHE, members=members, filter="data")
    if not (tests / "test_detectors.py").is_file():
        sys.exit(f"flufl.bounce {release}: no tests/test_detectors.py in its source distribution")
    return tests


def expectations(tests: Path) -> dict[str, frozenset[str]]:
    """File name -> expected failed addresses, read from the test table (never executed)."""
    tree = ast.parse((tests / "test_detectors.py").read_text(encoding="utf-8"))
    table: list[tuple[str, str, list[bytes], bool]] = []
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "DETECTORS"):
            table = ast.literal_eval(node.value)
    if not table:
        sys.exit("test_detectors.py: no DETECTORS table")
    expected: dict[str, set[str]] = {}
    for _module, filename, addresses, _temporary in table:
        expected.setdefault(filename, set()).update(a.decode().lower() for a in addresses)
    # test_scan_unrecognized: no address is detectable in this one.
    expected.setdefault("dumbass_01.txt", set())
    return {name: frozenset(found) for name, found in expected.items()}


def ours(raw: bytes) -> frozenset[str]:
    try:
        report = parse_bounce(raw)
    except ParseError:
        return frozenset()
    if report is None or report.kind not in ("dsn", "nonstandard"):
        return frozenset()
    # The address the sender mailed (Original-Recipient, Sendmail's "expanded from"), which is
    # what a list manager or inbound matching looks up, else the final recipient.
    return frozenset((r.original_recipient or r.recipient).lower() for r in report.records if r.recipient)


def peer(raw: bytes) -> frozenset[str]:
    try:
        temporary, permanent = all_failures(email.message_from_bytes(raw))
    except Exception:  # the peer may raise on malformed mail; it then found nothing
        return frozenset()
    return frozenset(a.decode("utf-8", "replace").lower() for a in temporary | permanent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, help="flufl.bounce's unpacked tests folder")
    parser.add_argument("--show", action="store_true", help="list every file that disagrees")
    args = parser.parse_args()
    tests = args.data or fetch_tests()
    expected = expectations(tests)
    a = b = 0
    for name in sorted(expected):
        raw = (tests / "data" / name).read_bytes()
        want, got, theirs = expected[name], ours(raw), peer(raw)
        a += got == want
        b += theirs == want
        if args.show and got != want:
            print(f"{name}: expected {sorted(want)} got {sorted(got)} flufl {sorted(theirs)}")
    n = len(expected)
    print(f"{n} emails with expected failed recipients (flufl.bounce {version('flufl.bounce')} tests)")
    print(f"mailcarrier  exact sets {a}/{n} = {a / n:.1%}")
    print(f"flufl.bounce exact sets {b}/{n} = {b / n:.1%}")
    print(f"RESULT mailman_recipients={a / n * 100:.1f} % flufl_bounce={b / n * 100:.1f} "
          f"ratio={a / b if b else float('inf'):.2f}")


if __name__ == "__main__":
    main()
