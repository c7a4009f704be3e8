"""Non-standard bounces written as prose: Exim, qmail, Postfix and Sendmail without a
DSN part, Exchange 2003, Domino, Courier, mobile carriers, mailing-list managers ...

These MTAs write one paragraph per failed recipient: a line that starts with the address
(``  user@example.net``, ``<user@example.net>:``, ``user@example.net on <date>``), then
the reply or the reason. Transcripts name the recipient in ``RCPT TO:`` lines instead.
The detector finds those paragraphs; the MTA's fixed wording (``detectors.toml``) gives
the SMTP command and, for some phrases, the reason itself.
"""

from __future__ import annotations

import re

from mailcarrier.domain.addresses import ADDRESS, mailbox
from mailcarrier.domain.detectors.base import (
    BounceMail,
    Found,
    addresses,
    is_daemon,
    wording,
)
from mailcarrier.domain.smtp_reply import SMTPStage
from mailcarrier.domain.vocabulary import Reason

__all__ = ["BOUNCE_SENDER", "ProseDetector", "address_paragraphs", "says_failed"]

BOUNCE_SENDER = re.compile(r"mailer-daemon|postmaster|post_master|mail delivery (?:sub)?system|mdaemon|"
                            r"mailer@|mail-daemon|maildaemon", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (?:status )?(?:notification|failure|failed|report|problem)|returned mail|"
    r"failure notice|mail delivery failed|could not be delivered|non[- ]?delivery|delivery problem|"
    r"rejected|nicht zustellbar|non remis|mail system error|warning: could not send|"
    r"message not delivered|delivery has failed|bounce|mail failure|delayed|"
    r"not (?:a )?member|returned to sender|error", re.I)
# A line that starts with an address, possibly bracketed or bulleted.
_ADDRESS_LINE = re.compile(
    r"^[ \t>*\-]*(?:(?:rcpt to|recipient(?: address)?|address|failed recipient|original-recipient)"
    r":?[ \t]*)?[<\"'(\[]?(" + ADDRESS.pattern + r")[>\"')\]]?[:,;.]?(.*)$", re.I | re.M)
# A line quoting a header of the returned message ("  To:      list@example.org",
# "* From: sender@example.com"): Exchange ("Your message / To: / Subject: / Sent: / did not
# reach the following recipient(s)"), PMDF ("This report relates to a message you sent
# with the following header fields"), Notes and webmail templates summarise the original
# this way. The addresses there are the message's own, not failed recipients.
_SUMMARY_LINE = re.compile(
    r"^[ \t>*\-]*(?:to|cc|bcc|from|sender|reply-to|return-path|errors-to|subject|date|sent|"
    r"message-id|list-[a-z]+)[ \t]*:(?![ \t]*<?\s*$)", re.I | re.M)
_RCPT_LINE = re.compile(r"^[ \t>]*rcpt to:[ \t]*<?(" + ADDRESS.pattern + r")>?", re.I | re.M)


# A sentence or heading that says delivery failed, as MTA, gateway and webmail templates
# word it just before the recipients they list. Sources: Exchange 5.5-2019 NDR templates
# ("did not reach the following recipient(s)", "Delivery has failed to these recipients"),
# Exim's deliver.c/local_scan ("could not be delivered to", "rejected by the local scanning
# code"), qmail-send ("I wasn't able to deliver your message"), Symantec/Trend/Sophos gateway
# notices ("could not be delivered to the following recipients", "Failed Recipients"), and
# the French, German, Spanish, Italian, Portuguese, Russian, Chinese and Japanese versions
# carriers and webmail systems send.
_FAILURE_STATEMENT = re.compile(
    r"(?:could ?n[o']t|cannot|can't|could not) be (?:delivered|sent|forwarded)|"
    r"(?:was|were|has|have been) ?n[o']t (?:be(?:en)? )?delivered|wasn't delivered|"
    r"did not reach (?:the following|all|some|its)|delivery (?:has )?failed (?:to|for)|"
    r"failed recipients?|undeliverable (?:to|message|mail)|"
    r"(?:unable|not able|wasn't able|was not able|could not|couldn't) to deliver|"
    r"rejected by the local scanning code|message was not accepted|"
    r"n'a pas (?:pu )?(?:(?:é|e)t(?:é|e|re) |être )?(?:d(?:é|e)livr|remis|distribu|achemin)|non remis|"
    r"(?:konnte|kann) nicht zugestellt|unzustellbar|"
    r"no (?:se )?(?:ha )?(?:podido|pudo) (?:ser )?entregar|"
    r"non (?:è|e') stato possibile (?:consegnare|recapitare)|impossibile recapitare|"
    r"n(?:ã|a)o (?:p(?:ô|o)de|foi poss(?:í|i)vel) (?:ser )?entreg|"
    r"не может быть доставлено|не (?:было )?доставлено|"
    r"无法(?:发送|送达|投递)|退信|(?:配信|送信|配送)(?:でき|出来)ませんでした")  # for lowercased text
# A delay warning, not a failure: the MTA is still trying. Sendmail ("THIS IS A WARNING
# MESSAGE ONLY", "Warning: could not send message for past 4 hours"), Postfix ("THIS IS A
# WARNING ONLY", "Delayed Mail (still being retried)"), Exim ("has not yet been delivered
# to one or more of its recipients"), Exchange ("Delivery to the following recipients has
# been delayed"), gateways ("Delivery attempts will continue to be made").
_WARNING = re.compile(
    r"this is a warning (?:message )?only|has not yet been delivered|has been delayed|"
    r"(?:will|shall) (?:be retried|keep trying|continue to (?:try|retry))|still being retried|"
    r"delivery attempts will continue|warning: (?:could not send|message still undelivered)|"
    r"message (?:is )?delayed|delivery (?:status notification )?\(delay\)")
# Every _WARNING wording contains one of these.
_WARNING_WORDS = ("warning", "not yet", "delay", "retried", "keep trying", "continue")
# ... unless the notice also says it gave up.
_GAVE_UP = re.compile(r"permanent (?:error|failure)|permanent fatal|(?:i've |have )?given up|giving up|"
                      r"failed permanently|will not be retried|no further (?:delivery )?attempts")
# "... not accepting mail from <list@example.org>", "message from x@y": the sender of the
# returned message, never a failed recipient ("expanded from" names the recipient's alias).
_SENDER_MENTION = re.compile(
    r"(?<!expanded )(?<!generated )(?:mail|messages?|e-?mail|sent) from:?[ \t]*<?(" + ADDRESS.pattern + ")")
# Sendmail "(expanded from: x)", Postfix "(expanded from <x>)", Exim "(generated from x)":
# the address the sender used, which an alias or forward rewrote.
_EXPANDED_FROM = re.compile(r"\((?:expanded|generated) from:?[ \t\n]*<?(" + ADDRESS.pattern + r")>?", re.I)
# The FOR clause of a Received line (RFC 5321 4.4) in the returned message: the envelope
# recipient that copy of the message was delivered to.
_RECEIVED_FOR = re.compile(r"\bfor[ \t\n>]+<(" + ADDRESS.pattern + r")>", re.I)
# A mailbox named without a domain on a line of its own, as AOL, Sendmail and other
# systems list their local users ("\tscreenname").
_BARE_NAME = re.compile(r"[ \t]*([A-Za-z0-9][A-Za-z0-9._+\-]{0,63})[ \t]*")
# How far after the statement its list of recipients may run.
_LIST_REACH = 600
# How much of a notice the statements are looked for in: MTAs state the failure near the top.
_BODY_SCAN = 8000


def says_failed(body: str, address: str) -> bool:
    """Whether ``body`` states a delivery failure and names ``address`` right after it.

    A notice without reply codes (security gateways, webmail systems) is still a bounce
    when it says so and lists the recipient; a person's mail that merely mentions an
    address is not.
    """
    lowered = body[:_BODY_SCAN].lower()
    for m in _FAILURE_STATEMENT.finditer(lowered):
        if address in lowered[m.start(): m.end() + _LIST_REACH]:
            return True
    return False


def _local_recipients(body: str, reporting_domain: str) -> list[str]:
    """Mailboxes listed without a domain after a failure statement that ends in a colon.

    "Your mail to the following recipients could not be delivered because ...:\n\tname":
    the reporting system names its own users, so they take its domain.
    """
    if not reporting_domain:
        return []
    lowered = body[:_BODY_SCAN].lower()  # names are case-insensitive in practice
    for m in _FAILURE_STATEMENT.finditer(lowered):
        colon = lowered.find(":", m.end(), m.end() + 300)
        if colon < 0 or lowered[colon + 1: colon + 2] not in ("\n", ""):
            continue
        names: list[str] = []
        for line in lowered[colon + 1:].split("\n")[1:8]:
            if not line.strip():
                if names:
                    break
                continue
            bare = _BARE_NAME.fullmatch(line)
            if bare is None:
                break
            found = mailbox(f"{bare.group(1)}@{reporting_domain}")
            if found:
                names.append(found)
        if names:
            return names
    return []


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _address_line(line: str) -> re.Match[str] | None:
    # Most lines hold no "@", which every address line does: no regex call for them.
    return _ADDRESS_LINE.match(line) if "@" in line else None


def address_paragraphs(body: str) -> list[tuple[str, str]]:
    """``(address, what follows it)`` for each line that starts with an address.

    What follows runs to the next blank line or the next address line; an address alone
    on its paragraph takes the next paragraph (Sendmail and Exim put the reason there).
    """
    lines = body.split("\n")
    found: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        m = _address_line(lines[i])
        if m is None or _SUMMARY_LINE.match(lines[i]):
            i += 1
            continue
        parts = [m.group(2).strip()]
        indent = _indent(lines[i])
        j = i + 1
        # Folded lines of the same account are indented deeper, even when they start with
        # the address again (Postfix: "    <user@example.net>... User Unknown (in reply ...").
        while (j < len(lines) and lines[j].strip() and j - i < 16
               and (_address_line(lines[j]) is None or _indent(lines[j]) > indent)):
            parts.append(lines[j].strip())
            j += 1
        if not any(parts):
            # An address alone: the reason is in the next paragraphs (Gmail, Sendmail, Exim).
            k, taken = j, 0
            while k < len(lines) and taken < 12 and _address_line(lines[k]) is None:
                if lines[k].strip():
                    parts.append(lines[k].strip())
                    taken += 1
                elif taken and k + 1 < len(lines) and not lines[k + 1].strip():
                    break  # two blank lines end the account of this recipient
                k += 1
        address = mailbox(m.group(1))
        if address:
            found.append((address, " ".join(p for p in parts if p)))
        i = j
    return found


def _summary_lines(body: str) -> list[str]:
    """The lines of ``body`` that quote the returned message's headers."""
    lines = []
    for m in _SUMMARY_LINE.finditer(body):
        end = body.find("\n", m.start())
        lines.append(body[m.start(): end if end >= 0 else len(body)])
    return lines


def _window(body: str, address: str) -> str:
    at = body.lower().find(address)
    if at < 0:
        return ""
    at = body.rfind("\n", 0, at) + 1
    lines = [ln.strip() for ln in body[at: at + 800].split("\n") if ln.strip()]
    return " ".join(lines[:8])


def _before(body: str, address: str) -> str:
    """Up to a few lines of text before the line that names ``address``."""
    at = body.lower().find(address)
    if at < 0:
        return ""
    at = body.rfind("\n", 0, at)
    if at <= 0:
        return ""
    lines = [ln.strip() for ln in body[max(0, at - 400): at].split("\n") if ln.strip()]
    return " ".join(lines[-4:])


def _transcript_before(body: str, address: str) -> str:
    """The dialogue a Sendmail transcript shows just before the line naming ``address``.

    Sendmail writes the server's own reply (``<<< 550 Insecure Mail Relay``) after the
    command it answered (``>>> MAIL From:<...>``), then its summary for the recipient
    (``554 <user@example.net>... Remote protocol error``): the reply says why, the summary
    often does not. Empty when no ``<<<`` reply directly precedes that line.
    """
    at = body.lower().find(address)
    if at < 0:
        return ""
    start = body.rfind("\n", 0, at) + 1
    if body[start:at].lstrip().startswith(("<<<", ">>>")):
        return ""  # the address is named in the dialogue itself
    taken: list[str] = []
    for raw in reversed(body[max(0, start - 800): start].split("\n")[:-1]):
        line = raw.strip()
        if not line.startswith(("<<<", ">>>")) and "while talking to" not in line.lower():
            break
        taken.append(line)
    if not any(line.startswith("<<<") for line in taken):
        return ""
    return " ".join(reversed(taken))


_LIST_HEADERS = ("List-Post", "List-Help", "List-Subscribe", "List-Unsubscribe", "List-Owner", "X-BeenThere")
_SENDER_HEADERS = ("From", "Sender", "Reply-To", "Return-Path", "Errors-To")


def _senders_and_lists(mail: BounceMail) -> frozenset[str]:
    """Addresses the returned message names as its sender or its list: never failed recipients.

    The returned message's From, Sender, Reply-To, Return-Path and Errors-To are who sent
    it; a list's addresses (RFC 2369 List-* fields, Mailman's X-BeenThere) are where it was
    posted, and its To then names the list rather than the subscriber the copy went to.
    """
    original = mail.original
    if original is None:
        return frozenset()
    found = set(addresses(" ".join(original.get(h) for h in _SENDER_HEADERS)))
    lists = set(addresses(" ".join(original.get(h).replace("mailto:", " ") for h in _LIST_HEADERS)))
    return frozenset(found | lists)


# The reporting host as MTA templates name it: Postfix "This is the mail system at host x",
# qmail "This is the qmail-send program at x", Courier "delivery status notification from
# x, running the Courier mail server", xinnet/others "This is the deliver program at x".
_REPORTER = re.compile(r"(?:mail system at host|qmail-send program at|deliver program at|"
                       r"delivery status notification from) ([A-Za-z0-9][A-Za-z0-9.\-]*[A-Za-z0-9])", re.I)


def _reporting_host(mail: BounceMail, notice: str) -> str | None:
    """The host that wrote the notice: named by its template, else the notice's sender domain."""
    named = _REPORTER.search(notice)
    if named:
        return named.group(1).lower()
    sender = addresses(mail.header("From"))
    return sender[0].rpartition("@")[2] if sender else None


def _action(subject: str, notice: str) -> str:
    """``delayed`` for a delay warning (RFC 3464's action for "still trying"), else ``failed``."""
    subject = subject.lower()
    if not any(k in notice or k in subject for k in _WARNING_WORDS):
        return "failed"  # a substring test first: the regex scan is the slower one
    warning = _WARNING.search(notice) or _WARNING.search(subject)
    return "delayed" if warning and not _GAVE_UP.search(notice) else "failed"


def _unlisted_recipients(mail: BounceMail, own: frozenset[str]) -> list[str]:
    """The failed recipients of a notice that lists none: named in its prose, or implied."""
    body = mail.body
    senders = {mailbox(m.group(1)) for m in _SENDER_MENTION.finditer(body.lower())}
    anywhere = [a for a in addresses(body) if a not in own and not is_daemon(a) and a not in senders]
    quoted = set(addresses(" ".join(_summary_lines(body))))
    recipients = [a for a in anywhere if a not in quoted] or anywhere
    if len(recipients) > 1:
        # Addresses named in prose with no list to tell them apart ("The address to which
        # your message was addressed, x, ..."; a directory's suggestions): those the
        # returned message was delivered to are the ones that failed.
        envelope = {mailbox(m.group(1)) for m in _RECEIVED_FOR.finditer(mail.text)}
        recipients = [a for a in recipients if a in envelope] or recipients
    if not recipients:
        reporter = addresses(mail.header("From"))
        recipients = _local_recipients(body, reporter[0].rpartition("@")[2] if reporter else "")
    if not recipients and mail.original is not None:
        # Old Sendmail transcripts name no address: the returned message says who.
        to = [a for a in addresses(mail.original.get("To")) if a not in own]
        recipients = to if len(to) == 1 else []
    return recipients


class ProseDetector:
    """Bounces as paragraphs of prose, one per failed recipient."""

    name = "prose"

    def accepts(self, mail: BounceMail) -> bool:
        if BOUNCE_SENDER.search(mail.sender) or _BOUNCE_SUBJECT.search(mail.subject):
            return True
        head = mail.body[:4000]
        return (bool(mail.header("X-Failed-Recipients")) or bool(wording().markers.search(head))
                or bool(_FAILURE_STATEMENT.search(head.lower())))

    def detect(self, mail: BounceMail) -> tuple[Found, ...] | None:
        if not self.accepts(mail):
            return None
        body = mail.body
        words = wording()
        own = mail.own_addresses | _senders_and_lists(mail)
        paragraphs = [(a, t) for a, t in address_paragraphs(body) if not is_daemon(a)]
        if any(a not in own for a, _ in paragraphs):
            paragraphs = [(a, t) for a, t in paragraphs if a not in own]
        by_address: dict[str, str] = {}
        for address, text in paragraphs:
            # Of several accounts of one recipient (an address alone, then the transcript
            # line ">>> RCPT To:<it>" with the reply), the one quoting a reply wins, then
            # the longest.
            if address not in by_address or _rank(text) > _rank(by_address[address]):
                by_address[address] = text
        rcpt_lines = [a for a in addresses(" ".join(m.group(1) for m in _RCPT_LINE.finditer(body)))
                      if a not in own]
        failed = addresses(mail.header("X-Failed-Recipients"))
        recipients = failed or list(by_address) or rcpt_lines
        recipients = recipients or _unlisted_recipients(mail, own)
        if not recipients:
            return None
        general = " ".join(body.split())
        action = _action(mail.subject, general[:3000].lower())
        reporter = _reporting_host(mail, general[:1500])
        general_hint: list[Reason | None] = []
        found = []
        for address in recipients[:100]:
            text = by_address.get(address) or ""
            if not _has_reply(text):
                text = (text + " " + _window(body, address)).strip() if text else _window(body, address)
            if address in rcpt_lines and _REPLY.search(text) is None:
                text = general  # a "RCPT TO: x" listing: the error is told elsewhere
            elif _REPLY.search(text) is None and words.hint_in(text) is None:
                # "Could not be delivered because of 550 5.1.1 User unknown. The following
                # recipients were affected: x": the reason comes before the list.
                text = (_before(body, address) + " " + text).strip()
            if "<<<" not in text:
                dialogue = _transcript_before(body, address)
                text = f"{dialogue} {text}" if dialogue else text
            command = words.command_in(text)
            if command is SMTPStage.UNKNOWN and address in rcpt_lines:
                command = SMTPStage.RCPT
            hint = words.hint_in(text)
            if hint is None:
                if not general_hint:  # looked up once per mail, only when needed
                    general_hint.append(words.hint_in(general[:2000]))
                hint = general_hint[0]
            alias = _EXPANDED_FROM.search(text)
            original = mailbox(alias.group(1)) if alias else ""
            found.append(Found(address, text or general[:600], command=command, hint=hint, action=action,
                               reporting_mta=reporter,
                               original_recipient=original if original and original != address else None))
        return tuple(found)


# Failure evidence: a 4xx/5xx reply code or an RFC 3463 status (not a dotted IP address).
_REPLY = re.compile(r"(?<![\d.])(?:[45][0-5]\d(?:[ \-]|$)|[45]\.\d{1,3}\.\d{1,3}(?![\d.]*\d))")


def _rank(text: str) -> tuple[bool, int]:
    return _REPLY.search(text) is not None, len(text)


def _has_reply(text: str) -> bool:
    return len(text) > 20 and (_REPLY.search(text) is not None or len(text) > 60)
