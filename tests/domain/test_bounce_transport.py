"""What mail transport does to a bounce on its way must not change its reading.

Relays and mailbox stores re-encode text parts (7bit, quoted-printable, base64), switch line
endings, prepend an mbox ``From`` line and pad lines with white space (RFC 2045 6.7 (3): a
decoder deletes trailing white space, which is how a soft line break ``= `` is still a soft
line break). Each bounce is read before and after such a change; the records must be equal.
The shipped samples always run; the shared corpus too when it is next to the repository.
"""

from __future__ import annotations

import base64
import email
import quopri
import re
from collections.abc import Callable
from email import policy
from email.generator import BytesGenerator
from io import BytesIO
from pathlib import Path

import pytest

from mailcarrier.domain.bounce import parse_bounce
from mailcarrier.domain.errors import ParseError

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "src" / "mailcarrier" / "samples" / "bounces").glob("*.eml"))
CORPUS = sorted((ROOT.parent / "shared" / "corpus" / "bounces" / "maildir" / "bsd").glob("*.eml"))


def _reading(raw: bytes) -> list[tuple[str, str, str | None, bool]]:
    try:
        report = parse_bounce(raw)
    except ParseError:
        return []
    return [(r.recipient, r.reason.value, r.status, r.hard_bounce) for r in (report.records if report else ())]


def _recode(cte: str) -> Callable[[bytes], bytes]:
    def change(raw: bytes) -> bytes:
        message = email.message_from_bytes(raw, policy=policy.compat32)
        if any(part.defects for part in message.walk()):
            return raw  # the standard library would re-serialise a broken structure differently
        for part in message.walk():
            if part.get_content_maintype() != "text" or part.is_multipart():
                continue
            body = part.get_payload(decode=True)
            if not isinstance(body, bytes):
                continue
            del part["Content-Transfer-Encoding"]
            encoded = base64.encodebytes(body) if cte == "base64" else quopri.encodestring(body)
            part.set_payload(encoded.decode("ascii"))
            part["Content-Transfer-Encoding"] = cte
        out = BytesIO()
        BytesGenerator(out, mangle_from_=False).flatten(message)
        return out.getvalue()
    return change


def _pad(blank: bytes) -> Callable[[bytes], bytes]:
    return lambda raw: re.sub(rb"(\S)(\r?\n)", rb"\1" + blank + rb"\2", raw)


CHANGES: dict[str, Callable[[bytes], bytes]] = {
    "mbox From_ line": lambda raw: b"From MAILER-DAEMON  Thu Jun 13 02:22:14 2013\n" + raw,
    "CRLF line ends": lambda raw: raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"),
    "LF line ends": lambda raw: raw.replace(b"\r\n", b"\n"),
    "trailing spaces": _pad(b" "),
    "trailing tabs": _pad(b"\t"),
    "text parts as base64": _recode("base64"),
    "text parts as quoted-printable": _recode("quoted-printable"),
    "quoted-printable, then padded": lambda raw: _pad(b"  ")(_recode("quoted-printable")(raw)),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_transport_changes_keep_the_reading_of_the_samples(change: str) -> None:
    for path in SAMPLES:
        raw = path.read_bytes()
        assert _reading(CHANGES[change](raw)) == _reading(raw), path.name


@pytest.mark.skipif(not CORPUS, reason="the shared corpus is not next to the repository")
@pytest.mark.parametrize("change", list(CHANGES))
def test_transport_changes_keep_the_reading_of_the_corpus(change: str) -> None:
    changed = [path.name for path in CORPUS
               if _reading(CHANGES[change](path.read_bytes())) != _reading(path.read_bytes())]
    assert changed == []


def test_a_padded_soft_line_break_is_still_a_soft_line_break() -> None:
    raw = (b"From: MAILER-DAEMON@relay.sample-sender.test\r\nTo: news@sample-sender.test\r\n"
           b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
           b"--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
           b"--b\r\nContent-Type: message/delivery-status\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
           b"Reporting-MTA: dns; relay.sample-sender.test\r\n\r\n"
           b"Final-Recipient: rfc822; ines@sample-receiver.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
           b"Diagnostic-Code: smtp; 550 5.1.1 <ines@sample-receiver.test>: Recipient addr= \t \r\n"
           b"ess rejected: User unknown in local recipient table\r\n--b--\r\n")
    report = parse_bounce(raw)
    assert report is not None
    (record,) = report.records
    assert record.reason.value == "userunknown" and "address rejected" in record.diagnostic
