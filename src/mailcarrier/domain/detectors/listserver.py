"""Mailing-list managers refusing or holding a post: the list address is the failed recipient.

When a campaign reaches a list address, the list manager, not an MTA, answers: GNU Mailman
("Your mail to 'X' ... is being held until the list moderator can review it", "You are not
allowed to post to this mailing list"), L-Soft LISTSERV ("You are not authorized to send
mail to the X list"), Sympa ("Your message for list 'x' has been rejected"), Majordomo and
fml ("You are not a member of this list"), ezmlm ("only subscribers may post"). These
notices name no failed address in MTA fashion; the list they speak for is the recipient.
A refusal is a failure; a moderation hold is not (the post may still go out), so it is
reported as ``delayed``.
"""

from __future__ import annotations

import re

from mailcarrier.domain.addresses import mailbox
from mailcarrier.domain.detectors.base import BounceMail, Found, addresses
from mailcarrier.domain.vocabulary import Reason

__all__ = ["ListServerDetector"]

_REFUSED = re.compile(
    r"you are not (?:authorized|allowed|permitted) to (?:send mail|send messages?|post|submit)[^.\n]{0,40}"
    r"(?:list|group)|"
    r"you (?:are|were) not a (?:member|subscriber) of (?:this|the|that) (?:mailing[ -])?(?:list|group)|"
    r"only (?:subscribers|members|list members) (?:may|can|are allowed to) (?:post|send|write)|"
    r"your (?:message|mail|post(?:ing)?) (?:to|for) (?:the )?(?:list|mailing[ -]list)?[^\n]{0,80}"
    r"(?:was|has been) (?:automatically )?(?:rejected|refused|denied|discarded)|"
    r"non-?member (?:submission|post(?:ing)?) (?:from|to|rejected|refused)")
_HELD = re.compile(
    r"is being held until the list moderator|awaits? (?:list )?moderator(?:'s)? approval|"
    r"(?:has been|is) held for (?:moderation|approval)|requires? (?:moderator )?approval before")
# Senders that are list managers: the robots themselves, and the owner/bounce addresses a
# list writes from (RFC 2369 names the roles; the suffixes are Mailman's, Sympa's, ezmlm's).
_ROBOT = re.compile(r"^(?:listserv|majordomo|sympa|mailman|ecartis|lyris|listproc|smartlist|fml|ezmlm)\b|"
                    r"-(?:owner|bounces?|request|admin|return)(?:[+\-][^@]*)?$", re.I)
_SUFFIX = re.compile(r"-(?:owner|bounces?|request|admin|return)(?:[+\-][^@]*)?$", re.I)
_LIST_NAME = re.compile(
    r"(?:to|for) (?:the )?'?\"?([A-Za-z0-9][A-Za-z0-9._\-]{0,63})'?\"? (?:mailing[ -])?list"
    r"|(?:mail|message|post) (?:to|for) (?:list )?'([A-Za-z0-9][A-Za-z0-9._\-]{0,63})'", re.I)
_SCAN = 3000
_QUOTED_HEADER = re.compile(r"^[ \t>*\-]*(?:subject|to|cc|from|date|sent)[ \t]*:", re.I)


def _list_address(mail: BounceMail, text: str, sentence: str) -> str:
    """The address of the list the notice speaks for, or ``""``.

    In order: an address the refusal itself names ("not a member of this mailing list
    <x>"), the RFC 2369/2919 headers, the list's owner/bounce address without its suffix,
    the list's name at the robot's domain (LISTSERV).
    """
    own = mail.own_addresses
    named = [a for a in addresses(sentence) if a not in own and not _ROBOT.search(a.rpartition("@")[0])]
    if named:
        return named[0]
    for header in ("List-Post", "X-BeenThere", "List-Id"):
        value = mail.header(header)
        if header == "List-Id" and value:
            m = re.search(r"<([^<>]+)>", value)
            label = m.group(1) if m else value.strip()
            head, _, domain = label.partition(".")
            found = mailbox(f"{head}@{domain}") if domain else ""
        else:
            found = next(iter(addresses(value)), "")
        if found:
            return found
    sender = next(iter(addresses(mail.header("From"))), "")
    if not sender:
        return ""
    local, _, domain = sender.rpartition("@")
    if _SUFFIX.search(local):
        return mailbox(f"{_SUFFIX.sub('', local)}@{domain}")
    by_name = _LIST_NAME.search(text)
    if by_name:
        name = by_name.group(1) or by_name.group(2)
        # LISTSERV writes from LISTSERV@LISTS.EXAMPLE.ORG about "the SALE-L list".
        return mailbox(f"{name}@{domain}")
    return ""


class ListServerDetector:
    """List managers' refusals (failed) and moderation holds (delayed) of a post."""

    name = "listserver"

    def detect(self, mail: BounceMail) -> tuple[Found, ...] | None:
        # Only the From address tells a list manager's own notice: List-Id and X-Mailman
        # headers also ride on MTA bounces of list mail.
        sender = next(iter(addresses(mail.header("From"))), "")
        if not _ROBOT.search(sender.rpartition("@")[0]):
            return None
        # Not the quoted headers of a returned notice ("Subject: Your message ... awaits
        # moderator approval" inside a bounce of that notice).
        text = " ".join(line for line in mail.body[:_SCAN].split("\n") if not _QUOTED_HEADER.match(line))
        text = " ".join(text.split())
        lowered = text.lower()
        refused = _REFUSED.search(lowered)
        held = None if refused else _HELD.search(lowered)
        if refused is None and held is None:
            return None
        match = refused or held
        assert match is not None
        start = max(0, text.rfind(". ", 0, match.start()) + 1)
        end = text.find(". ", match.end())
        sentence = text[start: end + 1 if 0 <= end < match.end() + 300 else match.end() + 200].strip()
        address = _list_address(mail, text, sentence)
        if not address:
            return None
        host = sender.rpartition("@")[2] or None
        if refused is not None:
            return (Found(address, sentence, action="failed", hint=Reason.REJECTED, context=text[:600],
                          reporting_mta=host),)
        return (Found(address, sentence, action="delayed", hint=Reason.ONHOLD, context=text[:600],
                      reporting_mta=host),)
