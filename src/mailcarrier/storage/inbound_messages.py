"""SQL of the return path: storing inbound emails raw, claiming them, and the delivery look-ups.

Storing comes first and is a plain batch insert, so the SMTP server can commit many received
emails at once (group commit) before it answers 250. Processing claims pending rows with a
token, so two processors (the server's background task and a ``bounces reprocess``) never
read the same email at the same time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Connection, and_, bindparam, case, cast, exists, func, or_, select, update

from mailcarrier.storage.inbound_tables import inbound_messages
from mailcarrier.storage.tables import activities, attempts, deliveries, mailings

__all__ = [
    "DeliveryRef",
    "InboundRow",
    "StoredInbound",
    "accept_unverified",
    "claim_pending",
    "count_in_state",
    "delivered_attempts",
    "deliveries_by_ids",
    "deliveries_by_message_ids",
    "first_ids_by_digest",
    "flip_deliveries",
    "insert_inbound",
    "list_inbound",
    "list_unverified",
    "park_waiting",
    "raw_message",
    "recent_deliveries_by_email",
    "release_to_pending",
    "save_results",
    "seen_activities",
    "test_mailings",
]

_CHUNK = 500  # stays under SQLite's bound-parameter limit with room to spare
#: Claim token of an email parked until the worker records the send of the delivery it bounces
#: (``wait:<delivery id>``): the bounce outran the worker's commit of the 250.
WAIT_PREFIX = "wait:"
#: ``match_method`` of a pending email an operator accepted after review (see accept_unverified)
ACCEPTED = "accepted"


@dataclass(frozen=True, slots=True)
class StoredInbound:
    """A claimed inbound email, as the processor reads it."""

    id: int
    received_at: datetime
    source: str
    envelope_to: tuple[str, ...]
    digest: str
    truncated: bool
    raw: bytes
    #: an operator reviewed this unverified email and accepted it (``bounces accept``)
    accepted: bool = False


@dataclass(frozen=True, slots=True)
class InboundRow:
    """An inbound email as listed (no raw bytes)."""

    id: int
    received_at: datetime
    source: str
    origin: str
    envelope_from: str | None
    envelope_to: tuple[str, ...]
    size: int
    state: str
    kind: str | None
    match_method: str | None
    matched_delivery_ids: tuple[int, ...]
    account_id: int | None
    duplicate_of: int | None
    error: str | None
    processed_at: datetime | None
    peer_ip: str | None = None
    helo: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryRef:
    """The parts of a delivery the return path needs."""

    id: int
    account_id: int
    mailing_id: int
    contact_id: int
    email: str
    domain: str
    state: str
    message_id: str | None
    claimed: bool
    last_seen_at: datetime | None
    delivered_at: datetime | None


def insert_inbound(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Store received emails (dicts keyed by column name; ``state`` defaults to pending)."""
    if rows:
        conn.execute(inbound_messages.insert(), list(rows))


def claim_pending(conn: Connection, token: str, now: datetime, stale_before: datetime,
                  limit: int) -> list[StoredInbound]:
    """Claim up to ``limit`` pending emails (oldest first) for the processor holding ``token``.

    A claim older than ``stale_before`` is taken over: its processor died mid-batch.
    """
    m = inbound_messages.c
    d = deliveries.c
    # A parked email is free again once no worker holds its delivery: the worker's batch
    # commit (state and attempt) and the release of its claim are one write. A delivery that
    # is gone (its mailing deleted) frees it too; it is then read as unmatched.
    parked = m.claim_token.startswith(WAIT_PREFIX, autoescape=True)
    # the delivery id out of the token, compared with the primary key (an index look-up)
    awaited = case((parked, cast(func.substr(m.claim_token, len(WAIT_PREFIX) + 1), BigInteger)), else_=None)
    still_claimed = exists().where(d.id == awaited, d.claim_token.is_not(None))
    free = and_(m.state == "pending",
                or_(m.claim_token.is_(None), m.claimed_at < stale_before, and_(parked, ~still_claimed)))
    # PostgreSQL: rows another processor is claiming are skipped, not waited for; SQLite has
    # one writer at a time (the caller's BEGIN IMMEDIATE) and ignores the clause.
    ids = (select(m.id).where(free).order_by(m.id).limit(limit)
           .with_for_update(skip_locked=True).scalar_subquery())
    conn.execute(update(inbound_messages).where(m.id.in_(ids), free)
                 .values(claim_token=token, claimed_at=now))
    query = (select(m.id, m.received_at, m.source, m.envelope_to, m.digest, m.truncated, m.raw,
                    m.match_method)
             .where(m.claim_token == token, m.state == "pending").order_by(m.id))
    return [StoredInbound(r.id, r.received_at, r.source, tuple(r.envelope_to or ()), r.digest,
                          bool(r.truncated), bytes(r.raw), r.match_method == ACCEPTED)
            for r in conn.execute(query)]


def first_ids_by_digest(conn: Connection, digests: Iterable[str]) -> dict[str, int]:
    """The id of the first stored copy of each digest."""
    wanted = sorted(set(digests))
    found: dict[str, int] = {}
    m = inbound_messages.c
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start:start + _CHUNK]
        query = select(m.digest, func.min(m.id)).where(m.digest.in_(chunk)).group_by(m.digest)
        found.update({digest: int(first) for digest, first in conn.execute(query)})
    return found


def save_results(conn: Connection, results: Sequence[dict[str, Any]]) -> None:
    """Write processing outcomes and release the claims.

    Each dict has ``id``, ``state``, ``kind``, ``match_method``, ``matched_delivery_ids``,
    ``account_id``, ``duplicate_of``, ``error`` and ``processed_at``.
    """
    if not results:
        return
    m = inbound_messages.c
    statement = (update(inbound_messages).where(m.id == bindparam("row_id"))
                 .values(state=bindparam("state"), kind=bindparam("kind"),
                         match_method=bindparam("match_method"),
                         matched_delivery_ids=bindparam("matched_delivery_ids",
                                                        type_=m.matched_delivery_ids.type),
                         account_id=bindparam("account_id"), duplicate_of=bindparam("duplicate_of"),
                         error=bindparam("error"),
                         processed_at=bindparam("processed_at", type_=m.processed_at.type),
                         claim_token=None, claimed_at=None))
    conn.execute(statement, [{**r, "row_id": r["id"]} for r in results])


def park_waiting(conn: Connection, parked: Sequence[tuple[int, int, str, str | None]],
                 now: datetime) -> None:
    """Leave emails pending, parked until delivery ``(email id, delivery id, why, kind)``'s send
    is recorded; :func:`claim_pending` hands them out again from then on."""
    if not parked:
        return
    m = inbound_messages.c
    statement = (update(inbound_messages).where(m.id == bindparam("row_id"))
                 .values(state="pending", claim_token=bindparam("token"), claimed_at=now,
                         error=bindparam("why"), kind=bindparam("kind")))
    conn.execute(statement, [{"row_id": row_id, "token": f"{WAIT_PREFIX}{delivery_id}", "why": why,
                              "kind": kind} for row_id, delivery_id, why, kind in parked])


def accept_unverified(conn: Connection, ids: Sequence[int]) -> int:
    """Mark unverified emails as accepted by an operator and send them back to pending."""
    m = inbound_messages.c
    result = conn.execute(update(inbound_messages).where(m.id.in_(list(ids)), m.state == "unverified")
                          .values(state="pending", match_method=ACCEPTED, claim_token=None,
                                  claimed_at=None))
    return int(result.rowcount)


def release_to_pending(conn: Connection, states: Sequence[str], ids: Sequence[int] = ()) -> int:
    """Send emails in ``states`` (or with the given ids) back to pending; returns how many."""
    m = inbound_messages.c
    condition = m.id.in_(list(ids)) if ids else m.state.in_(list(states))
    result = conn.execute(update(inbound_messages).where(condition)
                          .values(state="pending", claim_token=None, claimed_at=None))
    return int(result.rowcount)


def list_inbound(conn: Connection, *, states: Sequence[str] = (), kind: str | None = None,
                 limit: int = 100) -> list[InboundRow]:
    """Stored emails, newest first, optionally filtered by state and kind."""
    m = inbound_messages.c
    query = select(*(c for c in inbound_messages.c if c.name not in ("raw", "digest", "truncated",
                                                                      "claim_token", "claimed_at")))
    if states:
        query = query.where(m.state.in_(list(states)))
    if kind:
        query = query.where(m.kind == kind)
    query = query.order_by(m.id.desc()).limit(limit)
    return [InboundRow(r.id, r.received_at, r.source, r.origin, r.envelope_from,
                       tuple(r.envelope_to or ()), r.size, r.state, r.kind, r.match_method,
                       tuple(r.matched_delivery_ids or ()), r.account_id, r.duplicate_of, r.error,
                       r.processed_at, r.peer_ip, r.helo)
            for r in conn.execute(query)]


def list_unverified(conn: Connection, account_id: int, *, before_id: int | None,
                    limit: int) -> list[InboundRow]:
    """An account's unverified emails (matched by recipient address alone), newest first."""
    m = inbound_messages.c
    query = select(*(c for c in inbound_messages.c if c.name not in ("raw", "digest", "truncated",
                                                                      "claim_token", "claimed_at"))
                   ).where(m.account_id == account_id, m.state == "unverified")
    if before_id is not None:
        query = query.where(m.id < before_id)
    return [InboundRow(r.id, r.received_at, r.source, r.origin, r.envelope_from,
                       tuple(r.envelope_to or ()), r.size, r.state, r.kind, r.match_method,
                       tuple(r.matched_delivery_ids or ()), r.account_id, r.duplicate_of, r.error,
                       r.processed_at, r.peer_ip, r.helo)
            for r in conn.execute(query.order_by(m.id.desc()).limit(limit))]


def _refs(conn: Connection, condition: Any) -> list[DeliveryRef]:
    d = deliveries.c
    query = select(d.id, d.account_id, d.mailing_id, d.contact_id, d.email, d.domain, d.state,
                   d.message_id, d.claim_token,
                   func.coalesce(d.delivered_at, d.final_at, d.next_attempt_at), d.delivered_at
                   ).where(condition)
    return [DeliveryRef(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8] is not None, r[9], r[10])
            for r in conn.execute(query)]


def deliveries_by_ids(conn: Connection, ids: Iterable[int]) -> dict[int, DeliveryRef]:
    wanted = sorted(set(ids))
    found: dict[int, DeliveryRef] = {}
    for start in range(0, len(wanted), _CHUNK):
        found.update((ref.id, ref) for ref in _refs(conn, deliveries.c.id.in_(wanted[start:start + _CHUNK])))
    return found


def deliveries_by_message_ids(conn: Connection, message_ids: Iterable[str]) -> dict[str, DeliveryRef]:
    """Deliveries by Message-ID (stored with or without angle brackets), keyed without them."""
    bare = sorted({mid.strip().strip("<>") for mid in message_ids if mid.strip().strip("<>")})
    spellings = bare + [f"<{mid}>" for mid in bare]
    found: dict[str, DeliveryRef] = {}
    for start in range(0, len(spellings), _CHUNK):
        for ref in _refs(conn, deliveries.c.message_id.in_(spellings[start:start + _CHUNK])):
            found[(ref.message_id or "").strip("<>")] = ref
    return found


def recent_deliveries_by_email(conn: Connection, emails: Iterable[str],
                               since: datetime) -> dict[str, list[DeliveryRef]]:
    """Deliveries to each address sent (or finished) since ``since``, newest first."""
    wanted = sorted({e.lower() for e in emails if e})
    found: dict[str, list[DeliveryRef]] = {}
    d = deliveries.c
    recent = func.coalesce(d.delivered_at, d.final_at, d.next_attempt_at) >= since
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start:start + _CHUNK]
        for ref in _refs(conn, and_(d.email.in_(chunk), recent,
                                    d.state.in_(("delivered", "in_progress", "bounced_hard",
                                                 "bounced_soft")))):
            found.setdefault(ref.email.lower(), []).append(ref)
    for refs in found.values():
        refs.sort(key=lambda r: (r.last_seen_at is not None, r.last_seen_at, r.id), reverse=True)
    return found


def test_mailings(conn: Connection, mailing_ids: Iterable[int]) -> set[int]:
    """Which of these mailings are test sends (their outcomes never change a contact)."""
    ids = sorted(set(mailing_ids))
    if not ids:
        return set()
    return set(conn.execute(select(mailings.c.id).where(mailings.c.id.in_(ids),
                                                        mailings.c.kind == "test")).scalars())


def seen_activities(conn: Connection, refs: Iterable[DeliveryRef],
                    types: Sequence[str]) -> set[tuple[int, str]]:
    """(delivery id, activity type) pairs already recorded: what was already counted.

    Filtered by mailing and type first, so the (mailing_id, type) index does the work.
    """
    wanted = sorted({(r.mailing_id, r.id) for r in refs})
    seen: set[tuple[int, str]] = set()
    a = activities.c
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start:start + _CHUNK]
        query = select(a.delivery_id, a.type).where(a.mailing_id.in_(sorted({m for m, _ in chunk})),
                                                    a.type.in_(list(types)),
                                                    a.delivery_id.in_([d for _, d in chunk]))
        seen.update((int(r[0]), str(r[1])) for r in conn.execute(query))
    return seen


def flip_deliveries(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Move delivered (or unclaimed in-progress) deliveries to a bounced state.

    Each dict has ``delivery_id``, ``state``, ``last_reason``, ``last_category``,
    ``last_reply_code``, ``last_enhanced_status``, ``last_diagnostic``, ``suspected_filtering``
    and ``final_at``. ``delivered_at`` and the attempts are left alone: the 250 stays on record
    next to the later bounce; ``contact_event_pending`` is cleared because the caller applies
    the bounce to the contact itself. Returns how many rows changed.
    """
    if not rows:
        return 0
    d = deliveries.c
    statement = (update(deliveries)
                 .where(d.id == bindparam("delivery_id"),
                        or_(d.state == "delivered", and_(d.state == "in_progress", d.claim_token.is_(None))))
                 .values(state=bindparam("state"), last_reason=bindparam("last_reason"),
                         last_category=bindparam("last_category"),
                         last_reply_code=bindparam("last_reply_code"),
                         last_enhanced_status=bindparam("last_enhanced_status"),
                         last_diagnostic=bindparam("last_diagnostic"),
                         suspected_filtering=bindparam("suspected_filtering"),
                         outcome_unknown=False, next_attempt_at=None,
                         # this bounce is applied to the contact here; the worker must not
                         # apply the flipped state a second time
                         contact_event_pending=False,
                         final_at=bindparam("final_at", type_=d.final_at.type)))
    return int(conn.execute(statement, list(rows)).rowcount)


def raw_message(conn: Connection, message_id: int) -> bytes | None:
    """The stored raw bytes of one inbound email, or None."""
    value = conn.execute(select(inbound_messages.c.raw).where(inbound_messages.c.id == message_id)
                         ).scalar_one_or_none()
    return bytes(value) if value is not None else None


def count_in_state(conn: Connection, state: str) -> int:
    m = inbound_messages.c
    return int(conn.execute(select(func.count()).where(m.state == state)).scalar_one())


def delivered_attempts(conn: Connection, delivery_ids: Iterable[int]) -> dict[int, tuple[str, datetime]]:
    """The accepted attempt of each delivery: (local IP it was sent from, when it started)."""
    wanted = sorted(set(delivery_ids))
    found: dict[int, tuple[str, datetime]] = {}
    a = attempts.c
    for start in range(0, len(wanted), _CHUNK):
        query = select(a.delivery_id, a.local_ip, a.started_at).where(
            a.delivery_id.in_(wanted[start:start + _CHUNK]), a.outcome == "delivered",
            a.local_ip.is_not(None))
        found.update((int(r[0]), (str(r[1]), r[2])) for r in conn.execute(query))
    return found
