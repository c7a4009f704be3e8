"""Webhooks: signed POSTs of delivery, engagement and status events, through an outbox.

Events reach the outbox two ways: :func:`enqueue_event` for a caller that has an event in
hand, and :func:`pump_activities`, which turns new rows of the activity history (above a
watermark, in the same transaction as the outbox rows) into events, so the engines that
write history need not know about webhooks. :func:`send_due` claims due outbox rows with a
lease, POSTs them and records the answer; a failure is retried with exponential back-off,
and a crash mid-send only delays the row until its lease expires. Nothing is lost on restart.

Each POST carries ``Mailcarrier-Signature: t=<unix time>,v1=<hex HMAC-SHA256>`` over
``"<t>.<body>"`` with the endpoint's secret (verify with :func:`verify_signature`), and
``Mailcarrier-Event-Id`` so a receiver can drop duplicates (delivery is at-least-once).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Connection, Engine, and_, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from mailcarrier.domain.bounce_labels import bounce_labels
from mailcarrier.domain.errors import InvalidInputError, NotFoundError
from mailcarrier.domain.outbound_targets import TargetPolicy, check_url
from mailcarrier.services.figures import figures_of
from mailcarrier.services.tracking.settle import settled_events
from mailcarrier.storage.engine import run_write, write_transaction
from mailcarrier.storage.report_tables import report_watermarks
from mailcarrier.storage.tables import activities, attempts, contacts, deliveries, mailings
from mailcarrier.storage.webhook_tables import webhook_endpoints, webhook_outbox

__all__ = [
    "EVENT_TYPES",
    "Endpoint",
    "SendStats",
    "SentEvent",
    "backoff",
    "create_endpoint",
    "delete_endpoint",
    "enqueue_event",
    "get_endpoint",
    "list_endpoints",
    "pump_activities",
    "send_due",
    "sign",
    "verify_signature",
]

EVENT_TYPES = ("delivered", "deferred", "bounced", "opened", "clicked", "complained",
               "unsubscribed", "status_changed", "mailing_finished")
#: Activity type -> webhook event type.
#: Opens and clicks are not taken from the history (it records people only) but from the
#: settled tracking hits, which carry the human/machine verdict.
#: Deferrals come from the attempt log (the history records final outcomes only).
ACTIVITY_EVENTS = {"delivered": "delivered", "hard_bounce": "bounced",
                   "soft_bounce": "bounced", "complaint": "complained",
                   "unsubscribe": "unsubscribed", "status_changed": "status_changed"}
MAX_ATTEMPTS = 12
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=6)
LEASE = timedelta(seconds=60)
_WATERMARK = "webhook_pump"
_HIT_WATERMARK = "webhook_hits"
_ATTEMPT_WATERMARK = "webhook_attempts"
_FINISHED_WATERMARK = "webhook_mailings_finished"


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: int
    account_id: int
    url: str
    events: tuple[str, ...]
    active: bool
    description: str
    created_at: datetime
    secret: str | None = None  #: only returned when the endpoint is created


@dataclass(frozen=True, slots=True)
class SendStats:
    delivered: int = 0
    retried: int = 0
    dead: int = 0


@dataclass(frozen=True, slots=True)
class SentEvent:
    """One POST of an event and what came of it (for ``webhooks run`` to say what it sent)."""

    event_id: str
    event_type: str
    url: str
    #: ``delivered``, ``retry`` (``next_attempt_at`` set) or ``dead`` (given up).
    outcome: str
    status: int | None
    error: str | None
    next_attempt_at: datetime | None


def backoff(attempt: int) -> timedelta:
    """Delay before retry number ``attempt`` (1-based): 30 s doubling, capped at 6 h."""
    delay: timedelta = BACKOFF_BASE * (2 ** max(0, min(attempt - 1, 20)))
    return min(BACKOFF_CAP, delay)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: str, header: str, body: bytes, *, now: int,
                     tolerance: int = 300) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` within ``tolerance`` seconds of ``now``."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def _check(url: str, events: Sequence[str], policy: TargetPolicy) -> tuple[str, ...]:
    check_url(url, policy)  # UnsafeTargetError is a ValueError; checked again, resolved, at connect time
    unknown = [e for e in events if e not in EVENT_TYPES and e != "*"]
    if unknown or not events:
        raise InvalidInputError(f"choose events among {', '.join(EVENT_TYPES)} or '*'"
                         + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
    return tuple(dict.fromkeys(events))


def _endpoint(row: Any, secret: str | None = None) -> Endpoint:
    return Endpoint(row.id, row.account_id, row.url, tuple(row.events), bool(row.active),
                    row.description, row.created_at, secret)


def create_endpoint(engine: Engine, account_id: int, url: str, events: Sequence[str],
                    now: datetime, *, policy: TargetPolicy, description: str = "") -> Endpoint:
    """Register an endpoint; its secret is returned once, in the result.

    ``policy`` says which targets are allowed (https to public addresses by default); the
    sender checks the resolved address again on every connection.
    """
    chosen = _check(url, events, policy)
    if "\x00" in description:
        raise InvalidInputError("the description contains a NUL character")
    secret = "whsec_" + secrets.token_urlsafe(32)
    with write_transaction(engine) as conn:
        key = conn.execute(webhook_endpoints.insert().values(
            account_id=account_id, url=url, secret=secret, events=list(chosen), active=True,
            description=description[:2000], created_at=now)).inserted_primary_key
    assert key is not None
    return Endpoint(int(key[0]), account_id, url, chosen, True, description[:2000], now, secret)


def list_endpoints(engine: Engine, account_id: int, *, after_id: int = 0,
                   limit: int = 100) -> list[Endpoint]:
    w = webhook_endpoints.c
    with engine.connect() as conn:
        rows = conn.execute(select(webhook_endpoints).where(w.account_id == account_id, w.id > after_id)
                            .order_by(w.id).limit(max(1, min(limit, 500))))
        return [_endpoint(r) for r in rows]


def get_endpoint(engine: Engine, account_id: int, endpoint_id: int) -> Endpoint:
    w = webhook_endpoints.c
    with engine.connect() as conn:
        row = conn.execute(select(webhook_endpoints).where(
            w.account_id == account_id, w.id == endpoint_id)).one_or_none()
    if row is None:
        raise NotFoundError(f"no webhook endpoint {endpoint_id} in this account")
    return _endpoint(row)


def delete_endpoint(engine: Engine, account_id: int, endpoint_id: int) -> None:
    w = webhook_endpoints.c
    with write_transaction(engine) as conn:
        gone = conn.execute(webhook_endpoints.delete().where(
            w.account_id == account_id, w.id == endpoint_id)).rowcount
    if not gone:
        raise NotFoundError(f"no webhook endpoint {endpoint_id} in this account")


def _subscribers(conn: Connection, account_id: int, event_type: str) -> list[int]:
    w = webhook_endpoints.c
    rows = conn.execute(select(w.id, w.events).where(w.account_id == account_id,
                                                     w.active == True))  # noqa: E712
    return [r.id for r in rows if "*" in r.events or event_type in r.events]


def enqueue_event(conn: Connection, account_id: int, event_type: str, data: dict[str, Any],
                  now: datetime, *, event_id: str | None = None) -> int:
    """Queue one event for every subscribed endpoint of the account, in the caller's transaction."""
    if event_type not in EVENT_TYPES:
        raise InvalidInputError(f"unknown webhook event {event_type!r}")
    ident = event_id or uuid.uuid4().hex
    payload = {"id": ident, "type": event_type, "created_at": now.isoformat(), "data": data}
    rows = [{"account_id": account_id, "endpoint_id": eid, "event_id": ident,
             "event_type": event_type, "payload": payload, "created_at": now,
             "next_attempt_at": now} for eid in _subscribers(conn, account_id, event_type)]
    if rows:
        insert = sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert
        conn.execute(insert(webhook_outbox).on_conflict_do_nothing(
            index_elements=["endpoint_id", "event_id"]), rows)
    return len(rows)


def pump_activities(engine: Engine, now: datetime, *, chunk: int = 5000) -> int:
    """Turn new activity-history rows into webhook events; returns how many events were queued.

    The watermark moves in the same transaction as the outbox inserts, and the event id is
    derived from the activity id, so a crash can neither skip nor duplicate an event.
    """
    queued = 0
    while True:
        more, count = run_write(engine, lambda conn: _pump_chunk(conn, now, chunk),
                                what="queueing webhook events")
        queued += count
        if not more:
            break
    for pump in (_pump_deferrals, _pump_hits, _pump_finished_mailings):
        while True:
            more, count = run_write(engine, functools.partial(_run_pump, pump, engine, now, chunk),
                                    what="queueing webhook events")
            queued += count
            if not more:
                break
    return queued


def _run_pump(pump: Callable[[Engine, Connection, datetime, int], tuple[bool, int]], engine: Engine,
              now: datetime, chunk: int, conn: Connection) -> tuple[bool, int]:
    return pump(engine, conn, now, chunk)


def _pump_deferrals(_engine: Engine, conn: Connection, now: datetime, chunk: int) -> tuple[bool, int]:
    """Deferred attempts (a 4xx or a network failure, retried later) become ``deferred`` events."""
    last = _watermark(conn, _ATTEMPT_WATERMARK)
    t, d = attempts.c, deliveries.c
    if conn.execute(select(t.id).where(t.id > last).limit(1)).first() is None:
        return False, 0
    if conn.dialect.name == "postgresql":  # wait for in-flight writers: no lower id commits later
        conn.execute(text("LOCK TABLE attempts IN SHARE MODE"))
    top = conn.execute(select(t.id).where(t.id > last).order_by(t.id).offset(chunk - 1).limit(1)).scalar()
    window = t.id > last if top is None else and_(t.id > last, t.id <= top)
    newest = conn.execute(select(func.max(t.id)).where(window)).scalar()
    hooked = _hooked_accounts(conn)
    count = 0
    for r in conn.execute(
            select(t.id, t.number, t.ended_at, t.started_at, t.reply_code, t.enhanced_status, t.reply_text,
                   t.internal_code, t.reason, t.category, t.mx_host, d.account_id, d.id.label("delivery_id"),
                   d.mailing_id, d.contact_id, d.email, d.next_attempt_at)
            .join(deliveries, deliveries.c.id == t.delivery_id)
            .where(window, t.outcome == "deferred").order_by(t.id)):
        if r.account_id not in hooked:
            continue
        data = {"contact_id": r.contact_id, "email": r.email, "mailing_id": r.mailing_id,
                "delivery_id": r.delivery_id, "attempt": r.number,
                "occurred_at": (r.ended_at or r.started_at).isoformat(), "reply_code": r.reply_code,
                "enhanced_status": r.enhanced_status, "reply": r.reply_text,
                "internal_code": r.internal_code, "reason": r.reason, "category": r.category,
                "mx_host": r.mx_host,
                "next_attempt_at": r.next_attempt_at.isoformat() if r.next_attempt_at else None}
        count += enqueue_event(conn, r.account_id, "deferred", data, now, event_id=f"att-{r.id}")
    if newest is not None:
        conn.execute(update(report_watermarks).where(report_watermarks.c.name == _ATTEMPT_WATERMARK)
                     .values(last_id=newest))
    return top is not None, count


def _pump_finished_mailings(_engine: Engine, conn: Connection, now: datetime,
                            chunk: int) -> tuple[bool, int]:
    """A mailing whose every recipient is final becomes a ``mailing_finished`` event carrying its
    headline figures (``services.figures``: the numbers the CLI, API and dashboard show).

    The watermark holds the finish time in milliseconds (at first, the creation of the first
    endpoint); mailings finished at that very millisecond are looked at again and
    deduplicated by their event id. Late bounces can still change the figures afterwards:
    the event says how the mailing stood when it finished.
    """
    last = _watermark(conn, _FINISHED_WATERMARK)
    m = mailings.c
    if last == 0:  # first run: from the first endpoint on, not every mailing ever finished
        first = conn.execute(select(func.min(webhook_endpoints.c.created_at))).scalar()
        if first is None:
            return False, 0
        last = int(first.timestamp() * 1000)
    since = datetime.fromtimestamp(last / 1000, tz=UTC)
    rows = list(conn.execute(select(m.id, m.account_id, m.state, m.finished_at).where(
        m.state.in_(("done", "cancelled")), m.finished_at.is_not(None), m.finished_at >= since)
        .order_by(m.finished_at, m.id).limit(chunk)))
    if not rows:
        return False, 0
    hooked = _hooked_accounts(conn)
    count = 0
    for r in rows:
        if r.account_id not in hooked:
            continue
        figures = figures_of(conn, r.account_id, [r.id])[r.id]
        data = {"mailing_id": r.id, "state": r.state, "finished_at": r.finished_at.isoformat(),
                "figures": figures.headline()}
        count += enqueue_event(conn, r.account_id, "mailing_finished", data, now,
                               event_id=f"mailing-{r.id}-finished")
    newest = int(rows[-1].finished_at.timestamp() * 1000)
    conn.execute(update(report_watermarks).where(report_watermarks.c.name == _FINISHED_WATERMARK)
                 .values(last_id=newest))
    return len(rows) == chunk and newest > last, count


def _watermark(conn: Connection, name: str) -> int:
    """The watermark, locked for this transaction so concurrent pumps take turns."""
    w = report_watermarks.c
    insert = sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert
    conn.execute(insert(report_watermarks).values(name=name, last_id=0)
                 .on_conflict_do_nothing(index_elements=["name"]))
    return int(conn.execute(select(w.last_id).where(w.name == name).with_for_update()).scalar_one())


def _pump_hits(engine: Engine, conn: Connection, now: datetime, chunk: int) -> tuple[bool, int]:
    """Settled opens and clicks (with their human/machine verdict) become opened/clicked events."""
    last = _watermark(conn, _HIT_WATERMARK)
    hits = settled_events(engine, after_id=last, limit=chunk)
    if not hits:
        return False, 0
    hooked = _hooked_accounts(conn)
    count = 0
    for hit in hits:
        if hit.account_id not in hooked:
            continue
        data = {"contact_id": hit.contact_id, "mailing_id": hit.mailing_id,
                "delivery_id": hit.delivery_id, "occurred_at": hit.occurred_at.isoformat(),
                "human": hit.human, "machine": not hit.human, "verdict": hit.verdict,
                "reasons": list(hit.reasons), "url": hit.url}
        count += enqueue_event(conn, hit.account_id, "opened" if hit.kind == "open" else "clicked",
                               data, now, event_id=f"hit-{hit.hit_id}")
    conn.execute(update(report_watermarks).where(report_watermarks.c.name == _HIT_WATERMARK)
                 .values(last_id=hits[-1].hit_id))
    return len(hits) == chunk, count


def _hooked_accounts(conn: Connection) -> set[int]:
    return {int(r.account_id) for r in conn.execute(select(webhook_endpoints.c.account_id).distinct())}


def _pump_chunk(conn: Connection, now: datetime, chunk: int) -> tuple[bool, int]:
    w = report_watermarks.c
    last = _watermark(conn, _WATERMARK)
    a, c = activities.c, contacts.c
    if conn.execute(select(a.id).where(a.id > last).limit(1)).first() is None:
        return False, 0
    if conn.dialect.name == "postgresql":  # wait for in-flight writers: no lower id commits later
        conn.execute(text("LOCK TABLE activities IN SHARE MODE"))
    rows = list(conn.execute(
        select(activities, c.email).join(contacts, contacts.c.id == a.contact_id)
        .where(a.id > last).order_by(a.id).limit(chunk)))
    if not rows:
        return False, 0
    hooked = _hooked_accounts(conn)
    count = 0
    for r in rows:
        event_type = ACTIVITY_EVENTS.get(r.type)
        if event_type is None or r.account_id not in hooked:
            continue
        count += enqueue_event(conn, r.account_id, event_type, _activity_data(r), now,
                               event_id=f"act-{r.id}")
    conn.execute(update(report_watermarks).where(w.name == _WATERMARK).values(last_id=rows[-1].id))
    return len(rows) == chunk, count


def _activity_data(r: Any) -> dict[str, Any]:
    details = r.details or {}
    data: dict[str, Any] = {"contact_id": r.contact_id, "email": r.email, "mailing_id": r.mailing_id,
                            "delivery_id": r.delivery_id, "occurred_at": r.occurred_at.isoformat()}
    if r.type in ("hard_bounce", "soft_bounce"):
        bounce_type, address_invalid = bounce_labels(r.reason, r.category)
        data.update(hard=r.type == "hard_bounce", bounce_type=bounce_type,
                    address_invalid=address_invalid, reason=r.reason, category=r.category,
                    reply_code=r.reply_code, enhanced_status=r.enhanced_status,
                    diagnostic=r.diagnostic, suspected_filtering=bool(details.get("suspected_filtering")))
    elif r.type == "status_changed":
        data.update({"from": details.get("from"), "to": details.get("to"),
                     "email_invalid": details.get("email_invalid"), "cause": r.cause})
    return data


def _execute(statement: Any, conn: Connection) -> None:
    conn.execute(statement)


def _claim(engine: Engine, now: datetime, batch: int) -> list[Any]:
    o, w = webhook_outbox.c, webhook_endpoints.c
    due = and_(o.delivered_at.is_(None), o.dead_at.is_(None), o.next_attempt_at <= now,
               or_(o.lease_until.is_(None), o.lease_until < now))

    def claim(conn: Connection) -> list[Any]:
        query = select(o.id).where(due).order_by(o.next_attempt_at, o.id).limit(batch)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = [r.id for r in conn.execute(query)]
        if not ids:
            return []
        conn.execute(update(webhook_outbox).where(o.id.in_(ids)).values(lease_until=now + LEASE))
        return list(conn.execute(
            select(o.id, o.event_id, o.event_type, o.payload, o.attempts, w.url, w.secret)
            .join(webhook_endpoints, w.id == o.endpoint_id).where(o.id.in_(ids)).order_by(o.id)))

    return run_write(engine, claim, what="claiming webhook events")


def send_due(engine: Engine, client: httpx.Client, now: datetime, *, batch: int = 100,
             on_sent: Callable[[SentEvent], None] | None = None) -> SendStats:
    """POST the due outbox rows once; record success, back-off or giving up.

    Pass a client from :func:`mailcarrier.services.webhook_http.webhook_client`: it checks and
    pins every connection's address. Redirects are never followed (a 3xx is a failure).
    ``on_sent`` hears of each POST once its outcome is recorded.
    """
    stats = SendStats()
    o = webhook_outbox.c
    for row in _claim(engine, now, batch):
        body = json.dumps(row.payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "mailcarrier-webhooks",
                   "Mailcarrier-Event-Id": row.event_id, "Mailcarrier-Event": row.event_type,
                   "Mailcarrier-Signature": sign(row.secret, int(now.timestamp()), body)}
        status: int | None = None
        error: str | None = None
        try:
            response = client.post(row.url, content=body, headers=headers, follow_redirects=False)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        attempts_made = row.attempts + 1
        values: dict[str, Any] = {"attempts": attempts_made, "last_status": status,
                                  "last_error": error, "lease_until": None}
        if error is None:
            values["delivered_at"] = now
            stats = SendStats(stats.delivered + 1, stats.retried, stats.dead)
        elif attempts_made >= MAX_ATTEMPTS:
            values["dead_at"] = now
            stats = SendStats(stats.delivered, stats.retried, stats.dead + 1)
        else:
            values["next_attempt_at"] = now + backoff(attempts_made)
            stats = SendStats(stats.delivered, stats.retried + 1, stats.dead)
        recorded = update(webhook_outbox).where(o.id == row.id).values(**values)
        run_write(engine, functools.partial(_execute, recorded), what="recording a webhook POST")
        if on_sent is not None:
            outcome = "delivered" if error is None else ("dead" if "dead_at" in values else "retry")
            on_sent(SentEvent(row.event_id, row.event_type, row.url, outcome, status, error,
                              values.get("next_attempt_at")))
    return stats
