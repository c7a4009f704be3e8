"""Property tests: the failed recipients parse_bounce reports do not depend on presentation.

Generated recipients are written into reports shaped like the templates of RFC 3464 DSNs,
Postfix, Exim, Sendmail, qmail and Exchange, with the address decorated the ways MTAs do it
(angle brackets, quotes, ``rfc822;``, case, DSN line folding), surrounded by arbitrary
boilerplate and followed by the returned message, whose own To/Cc/From are other addresses.
Whatever the mix, the recipients found are exactly the generated ones, lowercased, in
order. Any bytes at all give a report, ``None`` or a ParseError, never another exception.
"""

from __future__ import annotations

import string
from html import escape as html_escape

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailcarrier.domain.bounce import parse_bounce
from mailcarrier.domain.errors import ParseError

_LOCAL = st.from_regex(r"[a-z0-9][a-z0-9_+\-]{0,8}(?:\.[a-z0-9_+\-]{1,8}){0,2}", fullmatch=True)
_DOMAIN = st.from_regex(r"[a-z][a-z0-9]{0,8}(?:-[a-z0-9]{1,5})?\.(?:[a-z]{2,6}\.)?[a-z]{2,6}", fullmatch=True)


@st.composite
def _address(draw: st.DrawFn) -> str:
    """A valid address, in any letter case."""
    address = f"{draw(_LOCAL)}@{draw(_DOMAIN)}"
    flips = draw(st.lists(st.booleans(), min_size=len(address), max_size=len(address)))
    return "".join(c.upper() if flip else c for c, flip in zip(address, flips, strict=True))


_RECIPIENTS = st.lists(_address(), min_size=1, max_size=3,
                       unique_by=lambda a: a.lower())
# A listed address as prose writes it.
_DECORATION = st.sampled_from(["{a}", "<{a}>", "'{a}'", '"{a}"', "SMTP={a}", "rfc822;{a}"])
# Final-Recipient values (RFC 3464 2.3.2), folded or not (RFC 5322 2.2.3).
_FIELD = st.sampled_from(["rfc822;{a}", "rfc822; {a}", "RFC822; <{a}>", "rfc822;\n {a}", "rfc822;\n\t<{a}>"])
# Boilerplate a notice may open with: words and sentence punctuation, no addresses.
_BOILERPLATE = st.lists(st.text(alphabet=string.ascii_letters + " .,!", min_size=0, max_size=60),
                        max_size=4).map("\n".join)

# Gateways and Exchange quote the returned message's headers in the notice itself.
_SUMMARY = st.sampled_from([
    "", "Your message\n\n  To:      members@lists.example.com\n  Cc:      team@lists.example.com\n"
        "  Subject: Spring sale\n  Sent:    Fri, 4 Oct 2002 17:10:56 -0400\n\n",
    "Original message details:\n\n\t* From: news@shop.example\n\t* To: members@lists.example.com\n"
    "\t* Subject: Spring sale\n\n"])

_HEAD = "From: {sender}\nTo: news-bounces@shop.example\nSubject: {subject}\nMIME-Version: 1.0\n"
_ORIGINAL = ("Return-Path: <news-bounces@shop.example>\nFrom: Shop <news@shop.example>\n"
             "To: members@lists.example.com\nCc: team@lists.example.com\n"
             "Reply-To: help@shop.example\nSubject: Spring sale\n\nHello\n")


def _postfix(rcpts: list[str], deco: str) -> str:
    return "".join(f"{deco.format(a=a)}: host mx.example.net[192.0.2.1] said: 550 5.1.1 <{a}>: "
                   "Recipient address rejected: User unknown (in reply to RCPT TO command)\n\n"
                   for a in rcpts)


def _exim(rcpts: list[str], deco: str) -> str:
    return ("A message that you sent could not be delivered to one or more of its\nrecipients. "
            "This is a permanent error. The following address(es) failed:\n\n"
            + "".join(f"  {deco.format(a=a)}\n    host mx.example.net [192.0.2.1]\n"
                      f"    SMTP error from remote mail server after RCPT TO:<{a}>:\n"
                      "    550 5.1.1 User unknown\n\n" for a in rcpts))


def _sendmail(rcpts: list[str], deco: str) -> str:
    return ("The original message was received at Thu, 29 Apr 2010 23:34:45 +0900\n\n"
            "   ----- The following addresses had permanent fatal errors -----\n"
            + "".join(f"{deco.format(a=a)}\n    (reason: 550 5.1.1 User unknown)\n" for a in rcpts)
            + "\n   ----- Transcript of session follows -----\n"
            + "".join(f"... while talking to mx.example.net.:\n>>> RCPT To:<{a}>\n<<< 550 5.1.1 User unknown\n"
                      for a in rcpts))


def _qmail(rcpts: list[str], deco: str) -> str:
    return ("Hi. This is the qmail-send program at mx.shop.example.\n"
            "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
            "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
            + "".join(f"<{a}>:\n192.0.2.1 does not like recipient.\nRemote host said: 550 5.1.1 User unknown\n"
                      "Giving up on 192.0.2.1.\n\n" for a in rcpts))


def _exchange(rcpts: list[str], deco: str) -> str:
    return ("Delivery has failed to these recipients or groups:\n\n"
            + "".join(f"{deco.format(a=a)}\nThe e-mail address you entered couldn't be found.\n\n"
                      for a in rcpts))


_PROSE = {"postfix": _postfix, "exim": _exim, "sendmail": _sendmail, "qmail": _qmail, "exchange": _exchange}


def _prose_bounce(kind: str, rcpts: list[str], deco: str, boilerplate: str, summary: str = "",
                  html: bool = False) -> bytes:
    notice = f"{boilerplate}\n\n{summary}{_PROSE[kind](rcpts, deco)}"
    if html:  # an HTML-only notice; the returned message's body is then the only text/plain
        notice = "<HTML><BODY><P>" + html_escape(notice).replace("\n", "<BR>\n") + "</P></BODY></HTML>"
    return (_HEAD.format(sender="Mail Delivery System <MAILER-DAEMON@mx.shop.example>",
                         subject="Undelivered Mail Returned to Sender")
            + 'Content-Type: multipart/mixed; boundary="b"\n\n'
            f"--b\nContent-Type: text/{'html' if html else 'plain'}\n\n{notice}\n"
            f"--b\nContent-Type: message/rfc822\n\n{_ORIGINAL}\n--b--\n").encode()


def _dsn(rcpts: list[str], field: str, boilerplate: str) -> bytes:
    blocks = "".join(f"Final-Recipient: {field.format(a=a)}\nAction: failed\nStatus: 5.1.1\n"
                     f"Diagnostic-Code: smtp; 550 5.1.1 <{a}>... User unknown\n\n" for a in rcpts)
    return (_HEAD.format(sender="MAILER-DAEMON@mx.shop.example", subject="Delivery Status Notification")
            + 'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
            f"--b\nContent-Type: text/plain\n\n{boilerplate}\n\nYour message could not be delivered.\n"
            "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.shop.example\n\n"
            f"{blocks}--b\nContent-Type: text/rfc822-headers\n\n{_ORIGINAL}--b--\n").encode()


def _outcome(raw: bytes) -> str:
    """What parse_bounce made of ``raw``; any exception but ParseError propagates."""
    try:
        report = parse_bounce(raw)
    except ParseError:
        return "parse error"
    if report is None:
        return "none"
    assert all(r.recipient == r.recipient.lower() for r in report.records)
    return "report"


def _found(raw: bytes) -> list[str]:
    report = parse_bounce(raw)
    return [r.recipient for r in report.records] if report else []


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(_PROSE)), _RECIPIENTS, _DECORATION, _BOILERPLATE, _SUMMARY, st.booleans())
def test_prose_reports_name_exactly_the_failed_recipients(kind: str, rcpts: list[str], deco: str,
                                                          boilerplate: str, summary: str, html: bool) -> None:
    raw = _prose_bounce(kind, rcpts, deco, boilerplate, summary, html)
    assert _found(raw) == [a.lower() for a in rcpts]


@settings(max_examples=100)
@given(_RECIPIENTS, _FIELD, _BOILERPLATE)
def test_dsn_names_exactly_the_failed_recipients(rcpts: list[str], field: str, boilerplate: str) -> None:
    assert _found(_dsn(rcpts, field, boilerplate)) == [a.lower() for a in rcpts]


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_any_bytes_give_a_report_none_or_a_parse_error(raw: bytes) -> None:
    assert _outcome(raw) in ("report", "none", "parse error")


@settings(max_examples=200)
@given(st.sampled_from(sorted(_PROSE)), _RECIPIENTS, _DECORATION, st.integers(0, 10_000), st.binary(max_size=60))
def test_a_damaged_bounce_never_crashes(kind: str, rcpts: list[str], deco: str, at: int, junk: bytes) -> None:
    raw = _prose_bounce(kind, rcpts, deco, "")
    at %= len(raw)
    assert _outcome(raw[:at] + junk + raw[at:]) in ("report", "none", "parse error")
