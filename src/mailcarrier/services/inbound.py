"""The return path: store inbound emails raw, then read, match and act on them in batches.

Receiving and processing are separate steps on purpose. :func:`store_incoming` only writes
the raw bytes (nothing can be lost to a parser bug or a crash); :func:`process_pending` claims
stored emails, parses them with :func:`mailcarrier.domain.bounce.parse_bounce`, matches each to
its delivery (:mod:`mailcarrier.services.bounce_matching`) and acts:

* only a bounce or complaint matched by a signed VERP address or one of our Message-IDs acts;
  one matched by recipient address alone is stored ``unverified`` (with its candidate
  deliveries) and shown for review, never applied: anyone can mail ``postmaster@`` a list of
  subscriber addresses with status 5.1.1;
* a failed recipient: an activity with reason, category and details, the delivery moves to
  ``bounced_hard``/``bounced_soft`` even if it was ``delivered`` (a late bounce; the attempt
  with its 250 stays as evidence), and the contact status rules run
  (:func:`mailcarrier.services.contacts.apply_events`, B2B suspected filtering included);
* a complaint (ARF): the contact is opted out at once; its ``complaint`` activity is what the
  account's complaint rate counts;
* a delay notification or an auto-reply: recorded on the inbound email, nothing changes;
* a mail to ``unsubscribe@<bounce domain>`` (the ``mailto:`` of ``List-Unsubscribe``) with a
  valid unsubscribe token in its subject or body: the contact is opted out once, source
  ``mailto`` (:func:`mailcarrier.services.consent.opt_out_by_token`);
* a bounce (VERP- or Message-ID-matched) of a delivery a worker is still sending: a receiving
  server may mail its DSN before the worker has committed the 250. The email stays
  ``pending``, parked on that delivery, and is processed again once the worker's batch is
  recorded (:func:`mailcarrier.storage.inbound_messages.claim_pending`).

Nothing is counted twice: a second copy of the same email is marked ``duplicate``, and a
delivery that already has a bounce (or complaint) activity gets no second one, whatever
email claims it. Anything unreadable is marked ``failed`` with the error and kept for
``reprocess``.
"""

from __future__ import annotations

import contextlib
import email.policy
import hashlib
import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from email.parser import BytesParser
from typing import Any

from sqlalchemy import Connection, Engine

from mailcarrier.config import Settings
from mailcarrier.domain.bounce import BounceRecord, BounceReport, parse_bounce
from mailcarrier.domain.contact_status import (
    ContactEvent,
    DomainEvidence,
    EventKind,
    StatusPolicy,
    Transition,
)
from mailcarrier.domain.errors import NotFoundError, ParseError
from mailcarrier.domain.tracking import TokenPurpose, decode_token
from mailcarrier.domain.vocabulary import Category, Reason
from mailcarrier.services import consent
from mailcarrier.services.bounce_matching import (
    Attribution,
    MatchKeys,
    MatchResult,
    attribute,
    kind_of,
    match_keys,
)
from mailcarrier.services.contacts import ContactEventRecord, apply_events
from mailcarrier.services.policies import status_policy
from mailcarrier.services.pools import reputation, warmup
from mailcarrier.services.tracking.keys import TrackingKeys, tracking_keys
from mailcarrier.storage import filtering
from mailcarrier.storage import inbound_messages as store
from mailcarrier.storage.engine import run_write

__all__ = [
    "BatchSummary",
    "Candidate",
    "InboundContext",
    "IncomingEmail",
    "UnverifiedBounce",
    "accept_unverified",
    "content_digest",
    "list_inbound",
    "pending_count",
    "process_all",
    "process_pending",
    "release_for_reprocess",
    "store_incoming",
    "unverified_bounces",
]

log = logging.getLogger(__name__)

#: Header fields added on the way in (they differ between two copies of the same DSN).
_TRACE = re.compile(rb"^(received|return-path|delivered-to|x-original-to|envelope-to|x-envelope-to|"
                    rb"x-envelope-from|arc-[a-z-]+|authentication-results|x-received|x-gm-[a-z-]+)\s*:",
                    re.I)
_CLAIM_STALE = timedelta(minutes=10)
_COUNTED = ("hard_bounce", "soft_bounce", "complaint")
_SENT_STATES = ("delivered", "in_progress", "bounced_hard", "bounced_soft")
#: Candidate deliveries kept on an unverified email (a forged one may list thousands).
_MAX_CANDIDATES = 1000


@dataclass(frozen=True, slots=True)
class IncomingEmail:
    """One received email and where it came from."""

    raw: bytes
    source: str  #: smtp | file | imap
    origin: str = ""  #: peer ip:port, file path, imap://user@host/folder;uid=n
    envelope_from: str | None = None
    envelope_to: tuple[str, ...] = ()
    truncated: bool = False  #: only the first ``inbound_max_bytes`` were kept
    peer_ip: str | None = None  #: SMTP: the reporting host's address
    helo: str | None = None  #: SMTP: the name the reporting host gave in HELO/EHLO


@dataclass(frozen=True, slots=True)
class InboundContext:
    """What processing needs from the settings."""

    key: bytes
    bounce_domain: str
    policy: StatusPolicy
    recipient_window: timedelta
    #: keys of the unsubscribe tokens (None: ``key`` under key id 1, the settings' default)
    tracking: TrackingKeys | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> InboundContext:
        return cls(settings.resolved_secret(), settings.inbound.bounce_domain, status_policy(settings),
                   timedelta(days=settings.inbound.recipient_match_days), tracking_keys(settings))

    @property
    def unsubscribe_address(self) -> str:
        """Where ``List-Unsubscribe``'s mailto points (see MailingRenderer.render)."""
        return f"unsubscribe@{self.bounce_domain.lower()}"

    @property
    def keys(self) -> TrackingKeys:
        return self.tracking if self.tracking is not None else TrackingKeys(1, {1: self.key})


@dataclass
class BatchSummary:
    """What one processing run did."""

    claimed: int = 0
    states: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)
    bounced_deliveries: int = 0
    contact_events: int = 0
    #: wall-clock seconds spent reading (parse + match), in the contact rules, and in the rest
    #: (claims, look-ups, writes): where the time goes, for operators and benchmarks
    read_seconds: float = 0.0
    contact_seconds: float = 0.0
    other_seconds: float = 0.0

    def add(self, other: BatchSummary) -> None:
        self.claimed += other.claimed
        self.bounced_deliveries += other.bounced_deliveries
        self.contact_events += other.contact_events
        self.read_seconds += other.read_seconds
        self.contact_seconds += other.contact_seconds
        self.other_seconds += other.other_seconds
        for mine, theirs in ((self.states, other.states), (self.kinds, other.kinds)):
            for key, value in theirs.items():
                mine[key] = mine.get(key, 0) + value


def content_digest(raw: bytes) -> str:
    """SHA-256 of the email without trace headers and with uniform line ends.

    Two copies of one DSN (delivered twice, or once by SMTP and once by IMAP) differ only in
    the headers added on the way; the digest ignores those so the second copy is recognised.
    """
    text = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    head, sep, body = text.partition(b"\n\n")
    kept: list[bytes] = []
    skipping = False
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        skipping = bool(_TRACE.match(line))
        if not skipping:
            kept.append(line)
    return hashlib.sha256(b"\n".join(kept) + sep + body).hexdigest()


def _row(email: IncomingEmail, now: datetime) -> dict[str, Any]:
    return {"received_at": now, "source": email.source, "origin": email.origin[:1024],
            "envelope_from": (email.envelope_from or None) and email.envelope_from[:512],
            "envelope_to": [a[:512] for a in email.envelope_to], "size": len(email.raw),
            "peer_ip": (email.peer_ip or None) and email.peer_ip[:45],
            "helo": (email.helo or None) and email.helo[:255],
            "truncated": email.truncated, "digest": content_digest(email.raw), "raw": email.raw,
            "state": "pending"}


def store_incoming(engine: Engine, emails: Sequence[IncomingEmail], now: datetime) -> None:
    """Write received emails raw, in one transaction (call before acknowledging them)."""
    if not emails:
        return
    rows = [_row(e, now) for e in emails]
    run_write(engine, lambda conn: store.insert_inbound(conn, rows), what="storing inbound emails")
    log.debug("stored %d inbound emails", len(rows), extra={"event": "inbound.stored"})


def accept_unverified(engine: Engine, ids: Sequence[int]) -> int:
    """An operator reviewed these unverified emails and vouches for them: the next processing
    run applies their recipient matches (activities say ``accepted_by_operator``)."""
    return run_write(engine, lambda conn: store.accept_unverified(conn, ids),
                     what="accepting unverified inbound emails")


def release_for_reprocess(engine: Engine, states: Sequence[str], ids: Sequence[int] = ()) -> int:
    """Send stored emails back to ``pending`` so the next processing run reads them again."""
    return run_write(engine, lambda conn: store.release_to_pending(conn, states, ids),
                     what="releasing inbound emails")


def pending_count(engine: Engine) -> int:
    """How many stored emails wait for processing (claimed ones included)."""
    with engine.connect() as conn:
        return store.count_in_state(conn, "pending")


def list_inbound(engine: Engine, *, states: Sequence[str] = (), kind: str | None = None,
                 limit: int = 100) -> list[store.InboundRow]:
    with engine.connect() as conn:
        return store.list_inbound(conn, states=states, kind=kind, limit=limit)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A delivery an unverified bounce names by its recipient address."""

    delivery_id: int
    mailing_id: int
    email: str
    state: str


@dataclass(frozen=True, slots=True)
class UnverifiedBounce:
    """A bounce or complaint matched by recipient address alone: shown for review, never applied."""

    id: int
    received_at: datetime
    kind: str | None
    source: str
    peer_ip: str | None  #: the reporting host (SMTP)
    helo: str | None  #: the name it gave in HELO/EHLO
    envelope_from: str | None
    candidates: list[Candidate]
    candidate_count: int
    note: str | None


def unverified_bounces(engine: Engine, account_id: int, *, before_id: int | None = None,
                       limit: int = 50, candidates: int = 100) -> list[UnverifiedBounce]:
    """The account's unverified bounces, newest first, each with up to ``candidates`` deliveries."""
    with engine.connect() as conn:
        rows = store.list_unverified(conn, account_id, before_id=before_id, limit=limit)
        refs = store.deliveries_by_ids(conn, (i for r in rows for i in r.matched_delivery_ids[:candidates]))
    out: list[UnverifiedBounce] = []
    for row in rows:
        listed = [refs[i] for i in row.matched_delivery_ids[:candidates]
                  if i in refs and refs[i].account_id == account_id]
        out.append(UnverifiedBounce(
            row.id, row.received_at, row.kind, row.source, row.peer_ip, row.helo, row.envelope_from,
            [Candidate(r.id, r.mailing_id, r.email, r.state) for r in listed],
            len(row.matched_delivery_ids), row.error))
    return out


def process_all(engine: Engine, ctx: InboundContext, now: datetime, *, batch: int = 500) -> BatchSummary:
    """Process pending emails until none is left."""
    total = BatchSummary()
    while True:
        summary = process_pending(engine, ctx, now, limit=batch)
        total.add(summary)
        if summary.claimed < batch:
            return total


@dataclass
class _Reading:
    stored: store.StoredInbound
    report: BounceReport | None = None
    kind: str = "other"
    keys: MatchKeys | None = None
    error: str | None = None
    duplicate_of: int | None = None
    match: MatchResult | None = None
    #: a delivery still being sent that this bounce is about: processed again once it is recorded
    waiting_for: int | None = None
    #: a mail to the unsubscribe address: (token text, account id, delivery id) of its valid token
    unsubscribe: tuple[str, int, int] | None = None


#: "unsubscribe-TOKEN" (our mailto subject), "unsubscribe TOKEN" or "unsubscribe: TOKEN";
#: tokens are URL-safe base64, so a "-" may also start the token itself.
_UNSUBSCRIBE_TOKEN = re.compile(r"unsubscribe(?:[ \t:]+|-)?([A-Za-z0-9_-]{16,})", re.I)
_BODY_SCAN = 20_000  # characters of the body searched for a token


def _addressed_to(stored: store.StoredInbound, address: str) -> bool:
    """Whether ``address`` is an envelope recipient (SMTP) or, for imports, in To/Cc/Delivered-To."""
    if any(a.strip().strip("<>").lower() == address for a in stored.envelope_to):
        return True
    if stored.envelope_to:
        return False
    head = stored.raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0][:65536]
    pattern = rb"^(to|cc|delivered-to|x-original-to)\s*:[^\n]*(\n[ \t][^\n]*)*" + re.escape(address.encode())
    return re.search(pattern, head, re.I | re.M) is not None


def _unsubscribe_tokens(raw: bytes) -> list[str]:
    """Candidate tokens: the subject first, then the text of the body (a client may put it there)."""
    message = BytesParser(policy=email.policy.default).parsebytes(raw)
    found: list[str] = []
    texts = [str(message.get("subject", "") or "")]
    part = message.get_body(preferencelist=("plain", "html"))
    if part is not None:
        with contextlib.suppress(LookupError, ValueError, AssertionError):  # undecodable body
            texts.append(str(part.get_content())[:_BODY_SCAN])
    for text in texts:
        for match in _UNSUBSCRIBE_TOKEN.finditer(text):
            found.append(match.group(1))
    return found


def _read_unsubscribe(reading: _Reading, ctx: InboundContext, now: datetime) -> None:
    """Find the first valid unsubscribe token of a mail to the unsubscribe address."""
    reading.kind = "unsubscribe"
    try:
        candidates = _unsubscribe_tokens(reading.stored.raw)
    except Exception as exc:  # hostile MIME: keep the email, say why
        reading.error = f"unreadable: {type(exc).__name__}: {exc}"
        return
    for candidate in candidates:
        token = decode_token(candidate, secrets=ctx.keys.secrets, purpose=TokenPurpose.UNSUBSCRIBE,
                             now=int(now.timestamp()))
        if token is not None:
            reading.unsubscribe = (candidate, token.account_id, token.delivery_id)
            return


def _read(stored: store.StoredInbound, ctx: InboundContext) -> _Reading:
    reading = _Reading(stored)
    try:
        reading.report = parse_bounce(stored.raw)
    except ParseError as exc:
        reading.error = f"unreadable: {exc}"
    except (RecursionError, MemoryError) as exc:
        reading.error = f"unreadable: too deeply nested or too large ({type(exc).__name__})"
    except Exception as exc:  # a parser bug must not stop the batch; the raw email is kept
        log.exception("bounce parser failed on inbound email %d", stored.id,
                      extra={"event": "inbound.parser_error"})
        reading.error = f"parser error: {type(exc).__name__}: {exc}"
    if reading.error is None:
        reading.kind = kind_of(reading.report)
        if stored.truncated:
            reading.error = "email over the size limit: stored truncated, not acted on"
    try:
        reading.keys = match_keys(stored.raw, stored.envelope_to, reading.report,
                                  key=ctx.key, bounce_domain=ctx.bounce_domain)
    except Exception as exc:  # header parsing of hostile input: keep the email, say why
        log.exception("reading headers failed on inbound email %d", stored.id,
                      extra={"event": "inbound.parser_error"})
        reading.error = reading.error or f"unreadable headers: {type(exc).__name__}: {exc}"
    return reading


def process_pending(engine: Engine, ctx: InboundContext, now: datetime, *,
                    limit: int = 500) -> BatchSummary:
    """Claim up to ``limit`` stored emails, read, match and act on them."""
    started = time.perf_counter()
    token = uuid.uuid4().hex

    def claim(conn: Connection) -> tuple[list[store.StoredInbound], dict[str, int]]:
        found = store.claim_pending(conn, token, now, now - _CLAIM_STALE, limit)
        return found, store.first_ids_by_digest(conn, (s.digest for s in found))

    claimed, first = run_write(engine, claim, what="claiming inbound emails")
    summary = BatchSummary(claimed=len(claimed))
    mark = time.perf_counter()
    readings: list[_Reading] = []
    for stored in claimed:
        if _addressed_to(stored, ctx.unsubscribe_address):
            readings.append(_Reading(stored))
            _read_unsubscribe(readings[-1], ctx, now)
        else:
            readings.append(_read(stored, ctx))
    summary.read_seconds = time.perf_counter() - mark
    for reading in readings:
        original = first.get(reading.stored.digest, reading.stored.id)
        if original < reading.stored.id:
            reading.duplicate_of = original
    for reading in readings:
        if reading.kind == "unsubscribe" and reading.unsubscribe and reading.duplicate_of is None:
            # Idempotent: a second mail (or a crash before the results are saved) changes nothing.
            consent.opt_out_by_token(engine, ctx.policy, ctx.keys, reading.unsubscribe[0], now,
                                     ip=None, user_agent=None, via="mailto")
    live = [r for r in readings if r.error is None and r.duplicate_of is None and r.keys is not None
            and r.kind != "unsubscribe"]
    batch = _Batch()

    def plan(conn: Connection) -> list[ContactEventRecord]:
        # Matching and planning read in the transaction that writes (BEGIN IMMEDIATE on
        # SQLite): what they decide from (delivery states, bounces already counted) cannot
        # change before the writes. Run again from here if the unit is retried.
        _match(conn, live, ctx, now)
        batch.events, batch.flips, batch.test_rows = _plan(conn, live, ctx, now)
        batch.parked = [(r.stored.id, waiting, f"waiting for the send of delivery {waiting} to be recorded",
                         r.kind) for r in readings if (waiting := r.waiting_for) is not None]
        parked_ids = {row_id for row_id, *_rest in batch.parked}
        batch.results = [_result(r, now) for r in readings if r.stored.id not in parked_ids]
        return [e for e, _ in batch.events]

    def finish(conn: Connection, transitions: list[Transition]) -> None:
        # Every effect of the batch commits with its contact events, or none does: a crash
        # between two steps cannot leave a bounce half applied (its delivery flipped but
        # not counted against the sending IP, or the emails still claimed and read again).
        summary.bounced_deliveries = store.flip_deliveries(
            conn, _delivery_rows(batch.events, transitions, batch.flips, now) + batch.test_rows)
        store.save_results(conn, batch.results)
        store.park_waiting(conn, batch.parked, now)
        if batch.events:
            _count_against_sending_ips(conn, batch.events, transitions)
            reputation.record_bounce_signals_in(conn, [(a.delivery.id, e.account_id, e.diagnostic or "")
                                                  for e, a in batch.events], now)  # traps, listings

    mark = time.perf_counter()
    transitions = apply_events(engine, ctx.policy, plan, now, finish=finish)
    summary.contact_seconds = time.perf_counter() - mark
    summary.contact_events = len(transitions)
    parked, results = batch.parked, batch.results
    summary.other_seconds = time.perf_counter() - started - summary.read_seconds - summary.contact_seconds
    if parked:
        summary.states["waiting"] = len(parked)
        for row_id, delivery_id, _why, _kind in parked:
            log.info("inbound email %d waits for delivery %d's send to be recorded", row_id,
                     delivery_id, extra={"event": "inbound.waiting_for_send"})
    for result in results:
        summary.states[result["state"]] = summary.states.get(result["state"], 0) + 1
        if result["kind"]:
            summary.kinds[result["kind"]] = summary.kinds.get(result["kind"], 0) + 1
    return summary


@dataclass
class _Batch:
    """What one run of the batch's unit of work decided (replaced whole if the unit is retried)."""

    events: list[tuple[ContactEventRecord, Attribution]] = field(default_factory=list)
    flips: set[int] = field(default_factory=set)
    test_rows: list[dict[str, Any]] = field(default_factory=list)
    parked: list[tuple[int, int, str, str | None]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)


def _match(conn: Any, readings: list[_Reading], ctx: InboundContext, now: datetime) -> None:
    """Batch look-ups for every method, then attribute each email."""
    for reading in readings:
        reading.waiting_for = None
    keys = [r.keys for r in readings if r.keys is not None]
    by_id = store.deliveries_by_ids(conn, (v.delivery_id for k in keys for v in k.verp))
    by_mid = store.deliveries_by_message_ids(conn, (m for k in keys for m in k.message_ids))
    # Recipient look-ups (unindexed by address alone) only for emails nothing else matched.
    pending: list[_Reading] = []
    for reading in readings:
        assert reading.keys is not None
        reading.match = attribute(reading.report, reading.keys, by_id=by_id, by_message_id=by_mid,
                                  by_recipient={})
        if reading.match.method is None and not reading.keys.forged and reading.keys.recipients:
            pending.append(reading)
    if not pending:
        return
    addresses = [a for r in pending if r.keys is not None for a in r.keys.recipients]
    # An email an operator accepted after review is matched as of when it arrived, not now.
    since = min([now, *(r.stored.received_at for r in pending if r.stored.accepted)]) - ctx.recipient_window
    by_rcpt = store.recent_deliveries_by_email(conn, addresses, since)
    for reading in pending:
        assert reading.keys is not None
        reading.match = attribute(reading.report, reading.keys, by_id=by_id, by_message_id=by_mid,
                                  by_recipient=by_rcpt)


#: The contact events to apply, the deliveries they flip, and the delivery rows flipped without
#: a contact event (bounces of test sends: seed 003, a test send never changes a contact).
_Plan = tuple[list[tuple[ContactEventRecord, Attribution]], set[int], list[dict[str, Any]]]
_IN_FLIGHT_STATES = ("queued", "in_progress")
#: Only these methods prove which message bounced; a bounce matched by them may wait for its send.
_VERIFIED_METHODS = ("verp", "message_id")


def _event_kind(kind: str, record: BounceRecord | None) -> EventKind | None:
    if record is None:
        return None
    if kind == "complaint":
        return EventKind.COMPLAINT
    if kind == "bounce" and record.action == "failed":
        return EventKind.HARD_BOUNCE if record.category.is_hard else EventKind.SOFT_BOUNCE
    return None


def _plan(conn: Connection, readings: list[_Reading], ctx: InboundContext, now: datetime) -> _Plan:
    """The contact events to apply and the deliveries to flip; already-counted ones skipped."""
    wanted: list[tuple[_Reading, Attribution, EventKind]] = []
    for reading in readings:
        assert reading.match is not None
        if reading.match.method not in _VERIFIED_METHODS and not reading.stored.accepted:
            # Matched by recipient address alone: anyone can mail postmaster@ a list of our
            # subscribers' addresses. Stored as 'unverified' for review, never applied.
            continue
        for attribution in reading.match.attributions:
            kind = _event_kind(reading.kind, attribution.record)
            if kind is None:
                continue
            delivery = attribution.delivery
            if (kind is not EventKind.COMPLAINT and delivery.claimed
                    and delivery.state in _IN_FLIGHT_STATES
                    and reading.match.method in _VERIFIED_METHODS):
                # A fast bounce: the receiving server answered 250 and mailed its DSN before
                # the worker committed that 250. The email waits (pending) for the commit
                # instead of being dropped as a bounce of a message never sent.
                if reading.waiting_for is None:
                    reading.waiting_for = delivery.id
                continue
            wanted.append((reading, attribution, kind))
    if not wanted:
        return [], set(), []
    tests = store.test_mailings(conn, {a.delivery.mailing_id for _, a, _k in wanted})
    test_rows = [_test_send_row(a.delivery.id, a.record, now) for _, a, k in wanted
                 if a.delivery.mailing_id in tests and k is not EventKind.COMPLAINT and a.record is not None
                 and a.delivery.state in _SENT_STATES]
    wanted = [(r, a, k) for r, a, k in wanted if a.delivery.mailing_id not in tests]
    if not wanted:
        return [], set(), test_rows
    seen = store.seen_activities(conn, (a.delivery for _, a, _k in wanted), _COUNTED)
    pairs = {(a.delivery.mailing_id, a.delivery.domain) for _, a, k in wanted
             if a.record is not None and a.record.category == Category.INVALID_ADDRESS}
    since = now - timedelta(days=ctx.policy.filtering_recent_days)
    domain_counts = filtering.domain_evidence(conn, pairs, since) if pairs else {}
    events: list[tuple[ContactEventRecord, Attribution]] = []
    flips: set[int] = set()
    for reading, attribution, kind in wanted:
        delivery, record = attribution.delivery, attribution.record
        assert record is not None and reading.match is not None
        counted = ("complaint",) if kind is EventKind.COMPLAINT else ("hard_bounce", "soft_bounce")
        if any((delivery.id, t) in seen for t in counted):
            continue
        if kind is not EventKind.COMPLAINT and delivery.state not in _SENT_STATES:
            log.warning("bounce for delivery %d in state %s ignored (never sent)", delivery.id,
                        delivery.state, extra={"event": "inbound.bounce_for_unsent"})
            continue
        seen.update((delivery.id, t) for t in counted)
        evidence = None
        if kind is not EventKind.COMPLAINT and record.category == Category.INVALID_ADDRESS:
            pair = (delivery.mailing_id, delivery.domain)
            # this bounce's own delivery is not counted yet (it still reads delivered)
            bad, total, before = domain_counts.get(pair, (0, 1, 0))
            domain_counts[pair] = (bad + 1, total, before)
            evidence = DomainEvidence(bad + 1, max(total, 1), before)
        if kind is not EventKind.COMPLAINT:
            flips.add(delivery.id)
        events.append((_contact_record(reading, attribution, kind, evidence), attribution))
    return events, flips, test_rows


def _test_send_row(delivery_id: int, record: BounceRecord, now: datetime) -> dict[str, Any]:
    """The delivery row of a test send's late bounce: recorded on the delivery, not the contact."""
    category = Category(record.category)
    return {"delivery_id": delivery_id,
            "state": "bounced_hard" if category.is_hard else "bounced_soft",
            "last_reason": record.reason.value, "last_category": int(category),
            "last_reply_code": record.reply_code, "last_enhanced_status": record.status,
            "last_diagnostic": record.diagnostic[:2000] or None, "suspected_filtering": False,
            "final_at": now}


def _contact_record(reading: _Reading, attribution: Attribution, kind: EventKind,
                    evidence: DomainEvidence | None) -> ContactEventRecord:
    record, delivery = attribution.record, attribution.delivery
    assert record is not None and reading.match is not None
    reason = record.reason if kind is not EventKind.COMPLAINT else Reason.FEEDBACK
    details: dict[str, Any] = {"inbound_message_id": reading.stored.id, "matched_by": reading.match.method,
                               "action": record.action, "rule": record.rule,
                               "late": delivery.state == "delivered"}
    if reading.stored.accepted:
        details["accepted_by_operator"] = True
    if reading.report is not None and reading.report.feedback_type:
        details["feedback_type"] = reading.report.feedback_type
    event = ContactEvent(kind, reading.stored.received_at, reason,
                         record.category if kind is not EventKind.COMPLAINT else None,
                         domain_evidence=evidence,
                         retracts_delivery_at=delivery.delivered_at if kind is not EventKind.COMPLAINT
                         else None)
    return ContactEventRecord(
        delivery.account_id, delivery.contact_id, event, mailing_id=delivery.mailing_id,
        delivery_id=delivery.id, reply_code=record.reply_code, enhanced_status=record.status,
        diagnostic=record.diagnostic[:2000] or None, remote_mta=record.remote_mta,
        cause=f"inbound email #{reading.stored.id} (matched by {reading.match.method})", details=details)


def _delivery_rows(events: list[tuple[ContactEventRecord, Attribution]], transitions: Sequence[Any],
                   flips: set[int], now: datetime) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for (event, attribution), transition in zip(events, transitions, strict=True):
        if attribution.delivery.id not in flips or attribution.record is None:
            continue
        category = transition.category if transition.category is not None else attribution.record.category
        rows.append({
            "delivery_id": attribution.delivery.id,
            "state": "bounced_hard" if Category(category).is_hard else "bounced_soft",
            "last_reason": transition.reason.value if transition.reason is not None else None,
            "last_category": int(category), "last_reply_code": event.reply_code,
            "last_enhanced_status": event.enhanced_status, "last_diagnostic": event.diagnostic,
            "suspected_filtering": bool(transition.suspected_filtering), "final_at": now,
        })
    return rows


def _count_against_sending_ips(conn: Connection, events: list[tuple[ContactEventRecord, Attribution]],
                               transitions: Sequence[Any]) -> None:
    """Late hard bounces and complaints count against the IP and day that sent the message.

    They hold that IP's warm-up ramp like synchronous ones (:func:`warmup.record_ip_outcome`);
    messages sent from an address outside every pool are not counted anywhere.
    """
    counted: dict[int, str] = {}
    for (event, attribution), transition in zip(events, transitions, strict=True):
        if event.event.kind is EventKind.COMPLAINT:
            counted[attribution.delivery.id] = "complained"
        elif transition.category is not None and Category(transition.category).is_hard:
            counted[attribution.delivery.id] = "bounced"
    sent_from = store.delivered_attempts(conn, counted)
    tally: dict[tuple[str, date, str], int] = {}
    for delivery_id, (address, started) in sent_from.items():
        key = (address, started.date(), counted[delivery_id])
        tally[key] = tally.get(key, 0) + 1
    for (address, day, what), count in sorted(tally.items()):
        try:
            warmup.record_ip_outcome(conn, address, day, **{what: count})
        except NotFoundError:
            continue  # the default source address, not one of a pool


def _result(reading: _Reading, now: datetime) -> dict[str, Any]:
    stored = reading.stored
    base: dict[str, Any] = {"id": stored.id, "kind": reading.kind, "match_method": None,
                            "matched_delivery_ids": None, "account_id": None, "duplicate_of": None,
                            "error": reading.error, "processed_at": now}
    if reading.duplicate_of is not None:
        log.info("inbound email %d duplicates %d: nothing changed", stored.id, reading.duplicate_of,
                 extra={"event": "inbound.duplicate"})
        return {**base, "state": "duplicate", "duplicate_of": reading.duplicate_of}
    if reading.error is not None or (reading.match is None and reading.kind != "unsubscribe"):
        log.warning("inbound email %d not processed: %s", stored.id, reading.error,
                    extra={"event": "inbound.failed"})
        return {**base, "state": "failed", "kind": reading.kind if reading.report else None}
    if reading.kind == "unsubscribe":
        if reading.unsubscribe is None:
            return {**base, "state": "unmatched",
                    "error": "mail to the unsubscribe address without a valid unsubscribe token"}
        _text, account_id, delivery_id = reading.unsubscribe
        return {**base, "state": "processed", "match_method": "token",
                "matched_delivery_ids": [delivery_id], "account_id": account_id}
    match = reading.match
    assert match is not None
    if match.method is None:
        log.info("inbound email %d (%s) unmatched: %s", stored.id, reading.kind, match.note,
                 extra={"event": "inbound.unmatched"})
        return {**base, "state": "unmatched", "error": match.note}
    ids = [a.delivery.id for a in match.attributions]
    if match.method not in _VERIFIED_METHODS and not stored.accepted:
        accounts = {a.delivery.account_id for a in match.attributions}
        log.warning("inbound email %d (%s) matched %d deliveries by recipient address alone: "
                    "unverified, not applied", stored.id, reading.kind, len(ids),
                    extra={"event": "inbound.unverified"})
        return {**base, "state": "unverified", "match_method": match.method,
                "matched_delivery_ids": ids[:_MAX_CANDIDATES],
                "account_id": accounts.pop() if len(accounts) == 1 else None,
                "error": f"matched {len(ids)} deliveries by recipient address alone (no signed VERP "
                         "address or Message-ID of ours): nothing changed; review it with "
                         "`mailcarrier bounces list --unverified`"}
    return {**base, "state": "processed", "match_method": match.method, "matched_delivery_ids": ids,
            "account_id": match.attributions[0].delivery.account_id}


