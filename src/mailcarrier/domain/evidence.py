"""What a receiving server said about one recipient: the facts every classification reads.

A live SMTP reply and a bounce email's record for one recipient carry the same kinds of
facts, more or fewer of them: the reply code, the RFC 3463 enhanced status, the reply's
words, the SMTP command it answered, who wrote the report. :class:`Evidence` holds them so
one classifier (:mod:`mailcarrier.domain.classify`) decides both paths the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailcarrier.domain.smtp_reply import SMTPReply, SMTPStage
from mailcarrier.domain.vocabulary import Reason

__all__ = ["Evidence", "normalise_text"]


@dataclass(frozen=True, slots=True)
class Evidence:
    """The facts about one recipient's failure, as far as classification is concerned.

    A live reply fills ``diagnostic``, ``code``, ``status`` and ``command`` (the stage it
    answered, always known). A bounce email fills what its format states and leaves the
    rest empty: many quote a reply without its code or without the command.
    """

    #: The server's words (a reply's text, a DSN's Diagnostic-Code without its type).
    diagnostic: str
    #: The RFC 3463 enhanced status, "5.1.1"; None when nothing states one.
    status: str | None = None
    #: The SMTP command the reply answered; UNKNOWN when the report does not say.
    command: SMTPStage = SMTPStage.UNKNOWN
    #: "smtp" when the text is a remote server's reply; "x-unix" for a local delivery
    #: program's words, "x-postfix" and the like for the reporting MTA's own; "" unstated.
    diagnostic_type: str = "smtp"
    #: RFC 3464 Action: "failed" or "delayed" (a live reply: "failed").
    action: str = "failed"
    #: A reason the MTA detector read from its own fixed wording (bounce emails only).
    hint: Reason | None = None
    #: The notification's human-readable explanation for this recipient (bounce emails).
    context: str = ""
    #: The host that answered (from ``Remote-MTA``), lowercased.
    remote_host: str = ""
    #: The three-digit reply code, when known.
    code: int | None = None

    @classmethod
    def of_reply(cls, reply: SMTPReply, *, action: str = "", diagnostic_type: str = "smtp",
                 remote_host: str = "") -> Evidence:
        """The facts of a parsed reply, read at the stage it answered."""
        return cls(reply.text, str(reply.enhanced) if reply.enhanced else None, reply.stage, diagnostic_type,
                   action, remote_host=remote_host, code=reply.code)


# Addresses, IP literals and bracketed hosts vary per message but never decide a reason;
# masking them lets identical server templates share one cache entry. This pattern is the
# definition of what is masked: an address is only tried where a run of local-part
# characters starts, and that run is never re-scanned (possessive), so masking stays
# linear in the length of the reply.
_LOCAL = "\\w.+\\-=!#$%&'*/?^`{|}~"
_VARIABLE = re.compile(
    rf"(?<![{_LOCAL}<])<?[{_LOCAL}]*+@[\w\-.]+>?"
    r"|\b\d{1,3}(?:\.\d{1,3}){3}\b|\[[0-9a-fA-F:.]+\]"
)
_MASK = "<*>"
# The regex engine tries such an alternation at every position of the text, the masking's
# whole cost on the per-reply path. Three facts make most of those tries unnecessary, each
# leaving the result as _VARIABLE.sub gives it:
# * No match holds whitespace, and whitespace before or after a word reads to every
#   assertion of the pattern as the text's start or end does: the text may be collapsed
#   first, and each space-separated stretch masked on its own.
# * An address holds "@": a stretch of words without one needs only the other two
#   alternatives, which both begin with a plain character or class (the engine skips to
#   where one occurs), and neither occurs without "[" or three dots.
# * On ASCII text \w and \d mean their ASCII classes, which the engine checks faster.
_VARIABLE_ASCII = re.compile(_VARIABLE.pattern, re.ASCII)
# _VARIABLE without the address; "\b\d" as a digit not preceded by a word character.
_IP_OR_BRACKETED = re.compile(r"[0-9](?<!\w[0-9])[0-9]{0,2}(?:\.[0-9]{1,3}){3}\b|\[[0-9a-fA-F:.]+\]",
                              re.ASCII)


def _mask_without_address(words: str) -> str:
    if "[" not in words and words.count(".") < 3:
        return words
    return _IP_OR_BRACKETED.sub(_MASK, words)


def normalise_text(text: str) -> str:
    """The text rules see: addresses and IPs masked, whitespace collapsed.

    The same as ``" ".join(_VARIABLE.sub("<*>", text).split())``, several times faster
    (see above why; tests/domain/test_evidence.py compares the two).
    """
    text = " ".join(text.split())
    if not text.isascii():
        return _VARIABLE.sub(_MASK, text)
    at = text.find("@")
    if at < 0:
        return _mask_without_address(text)
    out: list[str] = []
    done = 0
    while at >= 0:
        # The word holding this "@" gets the whole pattern, the words before it the rest.
        start = text.rfind(" ", done, at) + 1
        end = text.find(" ", at)
        end = len(text) if end < 0 else end
        out += (_mask_without_address(text[done:start]), _VARIABLE_ASCII.sub(_MASK, text[start:end]))
        done = end
        at = text.find("@", done)
    out.append(_mask_without_address(text[done:]))
    return "".join(out)
