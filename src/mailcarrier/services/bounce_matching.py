"""Tie an inbound email to the delivery it is about, and say how sure we are.

Three methods, tried in order of authority, and the one that matched is recorded:

1. ``verp``: the signed VERP return-path the email came to (the SMTP envelope recipient, or the
   same address found in its headers or in the returned message). The HMAC signature makes it
   proof; an address of our form whose signature fails is a forgery and changes nothing.
2. ``message_id``: our Message-ID found in the returned message, or in ``In-Reply-To`` /
   ``References`` (auto-replies quote it there).
3. ``recipient``: the bounced address plus that address's most recent delivery within a window;
   when deliveries of several accounts qualify the email stays unmatched rather than guess.
   The address the sender used comes first: a DSN's ``Original-Recipient`` (RFC 3464 2.3.1) or
   Sendmail's "(expanded from: ...)", before the ``Final-Recipient`` an alias expanded it to.

The functions here read values only (the look-ups are done in batches by the caller), so the
decision is testable without a database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32

from mailcarrier.domain.bounce import BounceRecord, BounceReport
from mailcarrier.domain.verp import VerpAddress, decode_return_path
from mailcarrier.storage.inbound_messages import DeliveryRef

__all__ = [
    "Attribution",
    "MatchKeys",
    "MatchResult",
    "attribute",
    "kind_of",
    "match_keys",
]

_MESSAGE_ID = re.compile(r"<([^<>\s]+@[^<>\s]+)>")
#: How useful a record is when one delivery has several: a failure says most.
_ACTION_RANK = {"failed": 0, "feedback": 0, "delayed": 1, "autoreply": 2}


@dataclass(frozen=True, slots=True)
class MatchKeys:
    """What an inbound email offers for matching."""

    verp: tuple[VerpAddress, ...]  #: valid signed return-paths, envelope first
    forged: tuple[str, ...]  #: addresses of our VERP form whose signature fails
    message_ids: tuple[str, ...]  #: without angle brackets
    recipients: tuple[str, ...]  #: lowercased bounced addresses


@dataclass(frozen=True, slots=True)
class Attribution:
    """One delivery the email is about, with the record that speaks of it (None: no record)."""

    delivery: DeliveryRef
    record: BounceRecord | None


@dataclass(frozen=True, slots=True)
class MatchResult:
    method: str | None  #: verp | message_id | recipient | None (unmatched)
    attributions: tuple[Attribution, ...]
    note: str | None = None  #: why nothing matched, for the unmatched list


def kind_of(report: BounceReport | None) -> str:
    """The inbound kind: bounce, delay, autoreply, complaint or other (success DSNs, mail)."""
    if report is None:
        return "other"
    if report.kind == "feedback":
        return "complaint"
    if report.kind == "autoreply":
        return "autoreply"
    actions = {r.action for r in report.records}
    if report.kind == "nonstandard" or "failed" in actions:
        return "bounce"
    if "delayed" in actions:
        return "delay"
    return "other"


def _verp_pattern(bounce_domain: str) -> re.Pattern[bytes]:
    domain = re.escape(bounce_domain.lower().encode("ascii", "replace"))
    return re.compile(rb"(?<![A-Za-z0-9.\-])b-[A-Za-z0-9.\-]{4,80}@" + domain + rb"(?![A-Za-z0-9\-])", re.I)


_PATTERNS: dict[str, re.Pattern[bytes]] = {}


def match_keys(raw: bytes, envelope_to: tuple[str, ...], report: BounceReport | None, *,
               key: bytes, bounce_domain: str) -> MatchKeys:
    """Collect the matching evidence of one email (pure; raw bytes are only searched)."""
    suffix = "@" + bounce_domain.lower()
    valid: list[VerpAddress] = []
    forged: list[str] = []

    def check(addresses: list[str]) -> None:
        for address in dict.fromkeys(a.lower() for a in addresses):
            decoded = decode_return_path(address, key=key)
            if decoded is None:
                forged.append(address)
            elif decoded not in valid:
                valid.append(decoded)

    check([a for a in envelope_to if a.lower().endswith(suffix) and a.lower().startswith("b-")])
    message_ids: list[str] = []
    if report is not None and report.original_message_id:
        message_ids.append(report.original_message_id.strip().strip("<>"))
    recipients = tuple(dict.fromkeys(a.lower() for r in report.records for a in _addresses_of(r) if a)) \
        if report is not None else ()
    if valid:  # the envelope is the strongest evidence: no need to search the text
        return MatchKeys(tuple(valid), tuple(forged), tuple(message_ids), recipients)
    pattern = _PATTERNS.get(bounce_domain)
    if pattern is None:
        pattern = _PATTERNS[bounce_domain] = _verp_pattern(bounce_domain)
    check([m.group(0).decode("ascii", "replace") for m in pattern.finditer(raw)])
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw[:65536], headersonly=True)
    for name in ("In-Reply-To", "References"):
        for value in headers.get_all(name, []):
            message_ids.extend(m.group(1) for m in _MESSAGE_ID.finditer(str(value)))
    return MatchKeys(tuple(valid), tuple(forged), tuple(dict.fromkeys(m for m in message_ids if m)),
                     recipients)


def _addresses_of(record: BounceRecord) -> tuple[str, ...]:
    """The addresses a record speaks for: the one the sender used first, then the final one."""
    if record.original_recipient:
        return (record.original_recipient, record.recipient)
    return (record.recipient,)


def _best_record(report: BounceReport | None, delivery: DeliveryRef) -> BounceRecord | None:
    """The record about ``delivery``: its own address first, else the most telling one."""
    if report is None or not report.records:
        return None
    email = delivery.email.lower()
    own = [r for r in report.records if any(a.lower() == email for a in _addresses_of(r) if a)]
    pool = own or list(report.records)
    return min(pool, key=lambda r: _ACTION_RANK.get(r.action, 3))


def attribute(report: BounceReport | None, keys: MatchKeys, *,
              by_id: dict[int, DeliveryRef], by_message_id: dict[str, DeliveryRef],
              by_recipient: dict[str, list[DeliveryRef]]) -> MatchResult:
    """Decide which deliveries the email is about, given the batch's look-up results."""
    for verp in keys.verp:
        ref = by_id.get(verp.delivery_id)
        if ref is not None and ref.account_id == verp.account_id and ref.mailing_id == verp.mailing_id:
            return MatchResult("verp", (Attribution(ref, _best_record(report, ref)),))
    if keys.forged and not keys.verp:
        return MatchResult(None, (), f"forged or altered VERP address {keys.forged[0]}: ignored")
    for mid in keys.message_ids:
        ref = by_message_id.get(mid)
        if ref is not None:
            return MatchResult("message_id", (Attribution(ref, _best_record(report, ref)),))
    found: list[Attribution] = []
    notes: list[str] = []
    for record in report.records if report is not None else ():
        address, refs = next(((a, by_recipient[a.lower()]) for a in _addresses_of(record)
                              if a and by_recipient.get(a.lower())), ("", []))
        if not refs:
            continue
        if len({r.account_id for r in refs}) > 1:
            notes.append(f"{address}: recent deliveries in several accounts")
            continue
        if all(a.delivery.id != refs[0].id for a in found):
            found.append(Attribution(refs[0], record))
    if found:
        return MatchResult("recipient", tuple(found))
    if keys.verp:
        notes.insert(0, "VERP address names a delivery that does not exist")
    return MatchResult(None, (), "; ".join(notes) or "no VERP address, Message-ID or recent delivery matched")
