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
# masking them lets identical server templates share one cache entry. One pass; an address
# is only tried where a run of local-part characters starts, and that run is never
# re-scanned (possessive), so masking stays linear in the length of the reply.
_LOCAL = "\\w.+\\-=!#$%&'*/?^`{|}~"
_VARIABLE = re.compile(
    rf"(?<![{_LOCAL}<])<?[{_LOCAL}]*+@[\w\-.]+>?"
    r"|\b\d{1,3}(?:\.\d{1,3}){3}\b|\[[0-9a-fA-F:.]+\]"
)


def normalise_text(text: str) -> str:
    """The text rules see: addresses and IPs masked, whitespace collapsed."""
    return " ".join(_VARIABLE.sub("<*>", text).split())
