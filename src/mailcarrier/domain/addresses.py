"""Mailbox addresses as bounce reports write them, reduced to the address itself.

MTAs decorate the failed recipient in many ways: RFC 3464 prefixes the address type
(``rfc822; user@example.net``), X.400 gateways and Exchange write ``SMTP=user@...`` or
``smtp:user@...``, prose puts it in angle brackets, quotes (``'user@example.net'``),
brackets or parentheses, and ends a sentence with it. :func:`mailbox` strips all of that
and then accepts only an address that is syntactically valid (RFC 5321/5322 as
``email-validator`` checks it, never with a DNS look-up): a bounce yields only recipients
that could be contacts.

``email-validator`` is the one third-party import of the domain core; it is pure syntax
checking (no I/O when ``check_deliverability`` is off) and it is what the contact import
accepts, so both sides of the match agree on what an address is.
"""

from __future__ import annotations

import re
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

__all__ = ["ADDRESS", "find_mailboxes", "mailbox"]

#: A candidate address in free text: permissive on purpose, :func:`mailbox` decides.
#: Letters beyond ASCII are taken too: SMTPUTF8 (RFC 6531) addresses and IDN domains appear
#: in RFC 6533 global DSNs and in prose.
ADDRESS = re.compile(r"[\w!#$%&'*+/=?^`{|}~.\-]+@[\w\-]+(?:\.[\w\-]+)+")

# Decorations around the address: RFC 3464 address types ("rfc822;"), X.400/Exchange
# proxy prefixes ("SMTP=", "smtp:", "dda:SMTP="), mailto: links.
_PREFIX = re.compile(r"^(?:(?:rfc822|x400|utf-8|unknown|smtp|dda:smtp|mailto)\s*[;:=]\s*)+", re.I)
_EDGES = " \t\r\n<>\"'`()[]{},;:.!?*"


@lru_cache(maxsize=8192)
def mailbox(candidate: str) -> str:
    """The lowercased address in ``candidate`` (IDNA domain), or ``""`` when it holds no valid one.

    ``candidate`` is one token as a report writes it: ``<User@Example.NET>``,
    ``rfc822;user@example.net``, ``SMTP=user@example.net``, ``'user@example.net'``.
    """
    value = candidate.strip(_EDGES)
    for _ in range(3):  # prefixes and edges can nest: "<smtp:'user@x'>"
        stripped = _PREFIX.sub("", value).strip(_EDGES)
        if stripped == value:
            break
        value = stripped
    local, _, _ = value.rpartition("@")
    if not local or len(local) > 64 or len(value) > 254:  # RFC 5321 4.5.3.1.1 and .3
        return ""
    try:
        # test_environment: the RFC 2606 ".test" names stay addresses (test set-ups and the
        # sandbox deliver to them); other special-use names (localhost, .invalid) do not.
        valid = validate_email(value, check_deliverability=False, test_environment=True)
    except EmailNotValidError:
        return ""
    # The domain in its ASCII (IDNA) form, as contact import stores it, so both match.
    return f"{valid.local_part}@{valid.ascii_domain}".lower()


def find_mailboxes(text: str) -> list[str]:
    """The valid addresses in ``text``, lowercased, in order of appearance, without repeats."""
    seen: dict[str, None] = {}
    if "@" not in text:  # every match holds one: spares the regex its try at every position
        return []
    for m in ADDRESS.finditer(text):
        found = mailbox(m.group(0))
        if found:
            seen.setdefault(found, None)
    return list(seen)
