"""Open and click tracking: links at send time, hits at request time, verdicts, engagement.

Send time: :func:`prepare_message_links` registers a message's links in the link table
(one row per distinct URL per mailing), rewrites the HTML and text parts to signed click
URLs, adds the open pixel and returns the RFC 8058 ``List-Unsubscribe`` headers.

Request time: the HTTP endpoints only verify the token, answer, and hand a :class:`RawHit`
to a :class:`HitRecorder`, which appends it to an on-disk spool (:mod:`.hit_spool`). A
:class:`HitWriter` - a thread, or a process of its own under ``mailcarrier serve`` - drains
the spool in batches (:func:`record_hits`), so neither a slow database nor the work of
classifying slows a redirect, and an accepted hit survives a crash. Each hit gets a verdict
from the pure rules (:mod:`mailcarrier.domain.engagement`), which may also revise earlier
hits: a burst recognised late turns its first hits into machines, and a person's later hit
upgrades the earlier machine verdicts on the same message.

After the hold (``tracking_hold_seconds``) a hit is *settled* (:func:`settle_hits`): human
engagement is applied to the contact, and :func:`settled_events` hands it to webhooks and
automation. Reports (:func:`mailing_engagement`) count human and machine separately.
"""

from __future__ import annotations

import hashlib
import html as html_lib
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, case, delete, func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from mailcarrier.config import Settings
from mailcarrier.domain.contact_status import ContactEvent, EventKind, StatusPolicy
from mailcarrier.domain.engagement import (
    PARTNER_REASON,
    burst_partners,
    classify_request,
    prefetch_requested,
    upgrade_targets,
)
from mailcarrier.domain.errors import ConfigurationError, ConflictError
from mailcarrier.domain.links import LinkRow, add_open_pixel, scan_links
from mailcarrier.domain.machine_activity import (
    Hit,
    Network,
    Thresholds,
    Verdict,
    VerdictKind,
    load_networks,
    upgrade,
)
from mailcarrier.domain.tracking import TokenPurpose, TrackingToken, encode_token
from mailcarrier.services.composition import MailingRenderer, RecipientData, RenderedBodies
from mailcarrier.services.contacts import ContactEventRecord, apply_events
from mailcarrier.services.hit_spool import SpoolProducer, SpoolReader, caught_up, spool_marks
from mailcarrier.storage.engine import run_write
from mailcarrier.storage.tables import deliveries
from mailcarrier.storage.tracking_spool_tables import tracking_spool_positions
from mailcarrier.storage.tracking_tables import tracking_hits, tracking_links

__all__ = [
    "UNSUBSCRIBE_PLACEHOLDERS",
    "Counts",
    "EngagementEvent",
    "HitRecorder",
    "HitWriter",
    "LinkDirectory",
    "LinkEngagement",
    "LinkTracker",
    "MailingEngagement",
    "NetworkIndex",
    "PreparedMessage",
    "RawHit",
    "TrackingKeys",
    "decode_hit",
    "encode_hit",
    "mailing_engagement",
    "make_link_hook",
    "prepare_message_links",
    "record_hits",
    "register_links",
    "settle_hits",
    "settled_events",
    "spool_directory",
    "stored_headers",
    "thresholds",
    "tracking_keys",
]

_log = logging.getLogger("mailcarrier.tracking")

#: Where a template asks for the unsubscribe URL (filled in after link rewriting).
UNSUBSCRIBE_PLACEHOLDERS = ("{{unsubscribe_url}}", "{{ unsubscribe_url }}", "[unsubscribe]",
                            "%unsubscribe%", "%UNSUBSCRIBE%")
#: Request headers kept with each hit: what the verdict used, and what an analyst would ask for.
STORED_HEADERS = ("user-agent", "accept", "accept-language", "purpose", "sec-purpose", "x-purpose",
                  "x-moz", "referer", "via", "from", "x-forwarded-for", "sec-fetch-mode",
                  "sec-fetch-site", "sec-fetch-user")
_MAX_HEADER = 512
#: Stands in for the unsubscribe URL while links are rewritten (links.py leaves "{{" alone).
_PROTECTED = "{{mailcarrier_unsubscribe_url}}"
_MAX_USER_AGENT = 1024
#: Hits of one address kept for the burst rules; "more than 2 links / recipients" never needs more.
RECENT_PER_SOURCE = 32
#: Stored hits read per batch for each of the two look-backs.
POOL_LIMIT = 2000


# --- keys and thresholds from settings ------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrackingKeys:
    """The key id that signs new tokens, and every master secret still accepted, by id."""

    key_id: int
    secrets: Mapping[int, bytes]

    @property
    def current(self) -> bytes:
        return self.secrets[self.key_id]


def tracking_keys(settings: Settings) -> TrackingKeys:
    """Keys from settings: the current secret under ``tracking_key_id`` plus retired ones."""
    found: dict[int, bytes] = {settings.tracking_key_id: settings.resolved_secret()}
    for raw_entry in settings.tracking_retired_secrets.split(","):
        entry = raw_entry.strip()
        if not entry:
            continue
        key_id, sep, secret = entry.partition(":")
        if not sep or not key_id.strip().isdigit() or not secret or int(key_id) > 255:
            raise ConfigurationError(
                "MAILCARRIER_TRACKING_RETIRED_SECRETS entries must look like 'KEY_ID:SECRET' "
                "with KEY_ID in 0..255")
        found.setdefault(int(key_id), secret.encode())
    return TrackingKeys(settings.tracking_key_id, found)


def thresholds(settings: Settings) -> Thresholds:
    """The machine-activity thresholds configured by the operator."""
    return Thresholds(
        burst_seconds=settings.tracking_burst_seconds,
        burst_links=settings.tracking_burst_links,
        shared_ip_seconds=settings.tracking_shared_ip_seconds,
        shared_ip_recipients=settings.tracking_shared_ip_recipients,
        after_delivery_seconds=settings.tracking_after_delivery_seconds,
    )


# --- send time ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """Bodies with tracked links, plus the headers every marketing message carries."""

    html: str | None
    text: str | None
    headers: tuple[tuple[str, str], ...]
    unsubscribe_url: str
    links: tuple[LinkRow, ...]


def _url_hash(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def register_links(conn: Connection, account_id: int, mailing_id: int, urls: Sequence[str],
                   now: datetime) -> dict[str, int]:
    """Link ids for ``urls`` in the mailing, adding the new ones (numbered in first-seen order).

    Safe under concurrent workers: a number or URL taken meanwhile makes the insert fail
    inside a savepoint, and the look-up runs again.
    """
    wanted = {_url_hash(u): u for u in urls}
    if not wanted:
        return {}
    for _ in range(10):
        rows = conn.execute(select(tracking_links.c.id, tracking_links.c.url_sha256).where(
            tracking_links.c.mailing_id == mailing_id,
            tracking_links.c.url_sha256.in_(list(wanted))))
        have = {r.url_sha256: int(r.id) for r in rows}
        missing = [h for h in wanted if h not in have]
        if not missing:
            return {wanted[h]: link_id for h, link_id in have.items()}
        top = conn.execute(select(func.coalesce(func.max(tracking_links.c.number), 0)).where(
            tracking_links.c.mailing_id == mailing_id)).scalar_one()
        try:
            with conn.begin_nested():
                conn.execute(tracking_links.insert(), [
                    {"account_id": account_id, "mailing_id": mailing_id, "number": int(top) + i,
                     "url": wanted[h], "url_sha256": h, "created_at": now}
                    for i, h in enumerate(missing, start=1)])
        except IntegrityError:
            continue
    raise ConflictError(f"could not register the links of mailing {mailing_id}: too much contention")


def prepare_message_links(
    conn: Connection,
    settings: Settings,
    *,
    account_id: int,
    mailing_id: int,
    delivery_id: int,
    html: str | None,
    text: str | None,
    now: datetime,
    keys: TrackingKeys | None = None,
    track_opens: bool = True,
    track_clicks: bool = True,
) -> PreparedMessage:
    """Rewrite one recipient's bodies for tracking and build its unsubscribe headers.

    Called by the renderer once per delivery, inside its transaction (``conn``). Tokens
    carry ids only; destinations stay in the link table.
    """
    keys = keys or tracking_keys(settings)
    expires = 0
    if settings.tracking_link_days:
        expires = int((now + timedelta(days=settings.tracking_link_days)).timestamp())
    base = settings.public_url.rstrip("/")

    def mint(purpose: TokenPurpose, link_id: int = 0) -> str:
        token = TrackingToken(purpose, account_id, mailing_id, delivery_id, link_id, expires)
        return encode_token(token, master_secret=keys.current, key_id=keys.key_id)

    links: tuple[LinkRow, ...] = ()
    if track_clicks:
        found = scan_links(html, text)
        ids = register_links(conn, account_id, mailing_id, [row.url for row in found.links], now)
        by_number = {row.number: ids[row.url] for row in found.links}
        links = found.links
        rewritten = found.rewrite(
            click_url=lambda n: f"{base}/c/{mint(TokenPurpose.CLICK, by_number[n])}",
            open_pixel_url=f"{base}/o/{mint(TokenPurpose.OPEN)}" if track_opens else None)
        html, text = rewritten.html, rewritten.text
    elif track_opens and html is not None:  # the links stay as they are, only the pixel is added
        html = add_open_pixel(html, f"{base}/o/{mint(TokenPurpose.OPEN)}")
    unsubscribe_token = mint(TokenPurpose.UNSUBSCRIBE)
    unsubscribe_url = f"{base}/u/{unsubscribe_token}"
    for placeholder in UNSUBSCRIBE_PLACEHOLDERS:
        if html is not None:
            html = html.replace(placeholder, html_lib.escape(unsubscribe_url, quote=True))
        if text is not None:
            text = text.replace(placeholder, unsubscribe_url)
    mailto = (f"mailto:unsubscribe@{settings.bounce_domain}"
              f"?subject={quote('unsubscribe ' + unsubscribe_token)}")
    headers = (("List-Unsubscribe", f"<{unsubscribe_url}>, <{mailto}>"),
               ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    return PreparedMessage(html, text, headers, unsubscribe_url, links)


class LinkTracker:
    """The delivery engine's ``link_hook``: tracked links and the open pixel for each message.

    Pass it as ``run_worker(..., link_hook=make_link_hook(engine, settings))``. Two steps,
    so that rendering never writes: :meth:`prepare` (called by the worker once per claimed
    batch, in a thread, before sending) renders the batch's bodies, finds the links not yet
    known and registers them in one write transaction (:func:`run_write`: ``BEGIN
    IMMEDIATE`` on SQLite, retried on a lock); calling the tracker then rewrites one
    message's bodies from the ids in memory, without touching the database. Link ids are
    kept per mailing, so once a mailing's links are known a batch costs no write at all.
    The rendered unsubscribe URL is left untouched (it must not become a click: scanners
    would follow it, and the page is safe to GET anyway). A link the batch's preparation
    did not see (a template whose output changes from one render to the next) is sent
    untracked rather than registered while rendering.
    """

    def __init__(self, engine: Engine, settings: Settings, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 keys: TrackingKeys | None = None, track_opens: bool = True) -> None:
        self.engine, self.clock, self.track_opens = engine, clock, track_opens
        self.keys = keys or tracking_keys(settings)
        self.base = settings.public_url.rstrip("/")
        self.link_days = settings.tracking_link_days
        self.known: dict[tuple[int, str], int] = {}
        self._lock = threading.Lock()

    def _protected(self, bodies: RenderedBodies, renderer: MailingRenderer,
                   delivery_id: int) -> tuple[str, str, str]:
        protected = f"{self.base}/u/{renderer.unsubscribe_token(delivery_id)}"
        html = bodies.html.replace(protected, _PROTECTED) if bodies.html else bodies.html
        text = bodies.text.replace(protected, _PROTECTED) if bodies.text else bodies.text
        return protected, html, text

    def prepare(self, renderer: MailingRenderer, recipients: Sequence[RecipientData]) -> None:
        """Register the links these recipients' messages carry and the tracker does not know yet."""
        account_id, mailing_id = renderer.account_id, renderer.mailing_id
        missing: dict[str, None] = {}
        for recipient in recipients:
            try:
                bodies = renderer.bodies(recipient)
            except ValueError:  # this contact's data breaks the template: it fails at send time
                continue
            _protected, html, text = self._protected(bodies, renderer, recipient.delivery_id)
            found = scan_links(html, text)
            with self._lock:
                missing.update((row.url, None) for row in found.links
                               if (mailing_id, row.url) not in self.known)
        if not missing:
            return
        now = self.clock()
        ids = run_write(self.engine, lambda conn: register_links(conn, account_id, mailing_id,
                                                                 list(missing), now),
                        what=f"registering the links of mailing {mailing_id}")
        with self._lock:
            for url, link_id in ids.items():
                self.known[(mailing_id, url)] = link_id

    def __call__(self, bodies: RenderedBodies, renderer: MailingRenderer,
                 recipient: RecipientData) -> RenderedBodies:
        account_id, mailing_id = renderer.account_id, renderer.mailing_id
        delivery_id = recipient.delivery_id
        expires = 0
        if self.link_days:
            expires = int((self.clock() + timedelta(days=self.link_days)).timestamp())
        protected, html, text = self._protected(bodies, renderer, delivery_id)
        found = scan_links(html, text)
        by_number: dict[int, int] = {}
        untracked: dict[int, str] = {}
        for row in found.links:
            link_id = self.known.get((mailing_id, row.url))
            if link_id is None:
                untracked[row.number] = row.url
            else:
                by_number[row.number] = link_id
        if untracked:
            _log.warning("mailing %d, delivery %d: %d link(s) not prepared for this batch, sent untracked",
                         mailing_id, delivery_id, len(untracked), extra={"event": "tracking.untracked_link"})

        def mint(purpose: TokenPurpose, link_id: int = 0) -> str:
            token = TrackingToken(purpose, account_id, mailing_id, delivery_id, link_id, expires)
            return encode_token(token, master_secret=self.keys.current, key_id=self.keys.key_id)

        def click(number: int) -> str:
            if number in untracked:
                return untracked[number]
            return f"{self.base}/c/{mint(TokenPurpose.CLICK, by_number[number])}"

        rewritten = found.rewrite(
            click_url=click,
            open_pixel_url=f"{self.base}/o/{mint(TokenPurpose.OPEN)}" if self.track_opens and html else None)
        # rewrite_links gives back None only for a part it was given as None; bodies has both
        new_html = (rewritten.html or "").replace(_PROTECTED, protected)
        new_text = (rewritten.text or "").replace(_PROTECTED, protected)
        return replace(bodies, html=new_html, text=new_text)


def make_link_hook(engine: Engine, settings: Settings, *,
                   clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                   keys: TrackingKeys | None = None, track_opens: bool = True) -> LinkTracker:
    """The delivery engine's ``link_hook`` (a :class:`LinkTracker`) for these settings."""
    return LinkTracker(engine, settings, clock=clock, keys=keys, track_opens=track_opens)


# --- request time ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawHit:
    """One request to a tracking URL, as received; ``token`` is None when it did not verify."""

    kind: str  # "open" or "click"
    at: datetime
    method: str
    ip: str
    user_agent: str
    headers: Mapping[str, str]
    token: TrackingToken | None


def stored_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The subset of request headers kept as evidence, each value capped in length."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return {name: lowered[name][:_MAX_HEADER] for name in STORED_HEADERS if name in lowered}


@dataclass
class _Entry:
    """A hit under consideration: stored already (``row_id``) or new in this batch (``row``)."""

    hit: Hit
    verdict: Verdict
    row_id: int | None
    row: dict[str, Any] | None
    upgraded: bool = False
    changed: bool = False


def _ts(moment: datetime) -> float:
    return moment.timestamp()


def _verdict_of(row: Any) -> Verdict:
    return Verdict(VerdictKind(row.verdict), tuple(row.reasons or ()))


def record_hits(engine: Engine, hits: Sequence[RawHit], *, limits: Thresholds,
                networks: Sequence[Network] | NetworkIndex, now: datetime,
                spool_positions: Mapping[str, int] | None = None) -> int:
    """Store a batch of hits with their verdicts, revising earlier verdicts; returns rows written.

    ``spool_positions`` (segment name -> byte offset) are stored in the same transaction, so
    the writer resumes exactly after what it stored, whenever it is killed.
    """
    if not hits and not spool_positions:
        return 0
    ordered = sorted(hits, key=lambda h: h.at)

    def unit(conn: Connection) -> int:
        written = _record_in(conn, ordered, limits, networks, now) if ordered else 0
        for segment, position in (spool_positions or {}).items():
            updated = conn.execute(update(tracking_spool_positions).where(
                tracking_spool_positions.c.segment == segment).values(position=position)).rowcount
            if not updated:
                conn.execute(tracking_spool_positions.insert().values(segment=segment,
                                                                      position=position))
        return written

    return run_write(engine, unit, what="recording tracking hits")


class NetworkIndex:
    """The known networks, with each address's matches remembered (bursts repeat addresses).

    Calling it with an address gives the networks that contain it, so the rules see exactly
    what they would see scanning the whole table, at one look-up per address.
    """

    def __init__(self, networks: Sequence[Network], *, max_addresses: int = 100_000) -> None:
        self.networks = tuple(networks)
        self._max = max_addresses
        self._seen: dict[str, tuple[Network, ...]] = {}

    def __call__(self, ip: str) -> tuple[Network, ...]:
        found = self._seen.get(ip)
        if found is None:
            try:
                address = ipaddress.ip_address(ip)
            except ValueError:
                found = ()
            else:
                found = tuple(n for n in self.networks if any(address in c for c in n.networks))
            if len(self._seen) >= self._max:
                self._seen.clear()
            self._seen[ip] = found
        return found


def _lookups(conn: Connection,
             hits: Sequence[RawHit]) -> tuple[dict[int, Any], dict[int, Any], dict[int, int]]:
    """The deliveries and links the batch's tokens name, and each mailing's link count."""
    tokens = [h.token for h in hits if h.token is not None]
    delivery_rows: dict[int, Any] = {}
    if tokens:
        query = select(deliveries.c.id, deliveries.c.account_id, deliveries.c.mailing_id,
                       deliveries.c.contact_id, deliveries.c.delivered_at).where(
            deliveries.c.id.in_({t.delivery_id for t in tokens}))
        delivery_rows = {r.id: r for r in conn.execute(query)}
    link_ids = {t.link_id for t in tokens if t.purpose is TokenPurpose.CLICK}
    link_rows: dict[int, Any] = {}
    if link_ids:
        link_rows = {r.id: r for r in conn.execute(
            select(tracking_links.c.id, tracking_links.c.mailing_id).where(
                tracking_links.c.id.in_(link_ids)))}
    mailing_ids = {r.mailing_id for r in delivery_rows.values()}
    link_counts: dict[int, int] = {}
    if mailing_ids:
        link_counts = {int(m): int(n) for m, n in conn.execute(
            select(tracking_links.c.mailing_id, func.count()).where(
                tracking_links.c.mailing_id.in_(mailing_ids)).group_by(tracking_links.c.mailing_id))}
    return delivery_rows, link_rows, link_counts


def _write_back(conn: Connection, pool: Sequence[_Entry], now: datetime) -> None:
    """Put final verdicts on the new rows and update the stored hits whose verdict changed."""
    for entry in pool:
        if entry.row is not None:
            entry.row["verdict"] = entry.verdict.kind.value
            entry.row["reasons"] = list(entry.verdict.reasons)
            if entry.upgraded:
                entry.row["upgraded_at"] = now
        elif entry.changed:
            values: dict[str, Any] = {"verdict": entry.verdict.kind.value,
                                      "reasons": list(entry.verdict.reasons)}
            if entry.upgraded:
                values["upgraded_at"] = now
            conn.execute(update(tracking_hits).where(tracking_hits.c.id == entry.row_id).values(**values))


def _record_in(conn: Connection, hits: Sequence[RawHit], limits: Thresholds,
               networks: Sequence[Network] | NetworkIndex, now: datetime) -> int:
    networks_of = networks if isinstance(networks, NetworkIndex) else NetworkIndex(networks)
    delivery_rows, link_rows, link_counts = _lookups(conn, hits)
    pool = _load_pool(conn, hits, delivery_rows, limits)
    # Every rule compares a hit with hits from the same address (bursts, shared address) or
    # of the same message (upgrades): index the pool both ways instead of scanning it.
    by_source: dict[tuple[int, str], list[int]] = {}
    by_delivery: dict[int, list[int]] = {}
    for index, entry in enumerate(pool):
        by_source.setdefault((entry.hit.mailing_id, entry.hit.ip), []).append(index)
        by_delivery.setdefault(entry.hit.delivery_id, []).append(index)
    new_rows: list[dict[str, Any]] = []
    human: list[_Entry] = []
    for raw in hits:
        row: dict[str, Any] = {
            "kind": raw.kind, "occurred_at": raw.at, "method": raw.method[:8].upper(),
            "ip": raw.ip[:45], "user_agent": raw.user_agent[:_MAX_USER_AGENT],
            "headers": stored_headers(raw.headers), "token_valid": raw.token is not None,
            "account_id": None, "mailing_id": None, "delivery_id": None, "contact_id": None,
            "link_id": None, "verdict": None, "reasons": None, "upgraded_at": None,
            "settled_at": None,
        }
        new_rows.append(row)
        token = raw.token
        delivery = delivery_rows.get(token.delivery_id) if token is not None else None
        if token is None or delivery is None or delivery.account_id != token.account_id \
                or delivery.mailing_id != token.mailing_id:
            continue  # nothing is attributed on the strength of a token we cannot tie to a message
        is_click = raw.kind == "click"
        link = link_rows.get(token.link_id) if is_click else None
        if is_click and (link is None or link.mailing_id != token.mailing_id):
            continue
        row.update(account_id=token.account_id, mailing_id=token.mailing_id,
                   delivery_id=token.delivery_id, contact_id=delivery.contact_id,
                   link_id=token.link_id if is_click else None)
        hit = Hit(
            is_click=is_click, ip=raw.ip, mailing_id=token.mailing_id, delivery_id=token.delivery_id,
            link_id=token.link_id if is_click else 0, at=_ts(raw.at), method=raw.method,
            prefetch=prefetch_requested(raw.headers),
            delivered_at=_ts(delivery.delivered_at) if delivery.delivered_at is not None else None,
            links_in_message=link_counts.get(token.mailing_id, 0),
        )
        source = by_source.setdefault((hit.mailing_id, hit.ip), [])
        del source[:-RECENT_PER_SOURCE]
        same_source = [pool[i].hit for i in source]
        verdict = classify_request(hit, same_source, networks_of(raw.ip), limits,
                                   user_agent=raw.user_agent)
        for index in burst_partners(hit, verdict, same_source, limits):
            partner = pool[source[index]]
            if partner.verdict.kind is VerdictKind.HUMAN and not partner.upgraded:
                partner.verdict = Verdict(VerdictKind.MACHINE, (PARTNER_REASON, *verdict.reasons))
                partner.changed = True
        same_message = by_delivery.setdefault(hit.delivery_id, [])
        for index in upgrade_targets(hit, verdict, [pool[i].hit for i in same_message]):
            target = pool[same_message[index]]
            revised = upgrade(target.verdict, verdict)
            if revised != target.verdict:
                target.verdict, target.upgraded, target.changed = revised, True, True
        source.append(len(pool))
        same_message.append(len(pool))
        pool.append(_Entry(hit, verdict, None, row))
        if verdict.kind is VerdictKind.HUMAN:
            human.append(pool[-1])
    _upgrade_stored(conn, pool, human)
    _write_back(conn, pool, now)
    conn.execute(tracking_hits.insert(), new_rows)
    return len(new_rows)


_POOL_COLUMNS = (tracking_hits.c.id, tracking_hits.c.kind, tracking_hits.c.ip, tracking_hits.c.mailing_id,
                 tracking_hits.c.delivery_id, tracking_hits.c.link_id, tracking_hits.c.occurred_at,
                 tracking_hits.c.method, tracking_hits.c.verdict, tracking_hits.c.reasons,
                 tracking_hits.c.upgraded_at)


def _entry_of(row: Any) -> _Entry:
    hit = Hit(is_click=row.kind == "click", ip=row.ip, mailing_id=row.mailing_id,
              delivery_id=row.delivery_id or 0, link_id=row.link_id or 0,
              at=_ts(row.occurred_at), method=row.method)
    return _Entry(hit, _verdict_of(row), int(row.id), None, upgraded=row.upgraded_at is not None)


def _load_pool(conn: Connection, hits: Sequence[RawHit], delivery_rows: Mapping[int, Any],
               limits: Thresholds) -> list[_Entry]:
    """Recent stored hits from the batch's addresses within the longest window, oldest first.

    Capped: a single address sending thousands of hits a minute is a machine whatever the
    detail, and the rules never need more than the last few hits of one address.
    """
    if not delivery_rows:
        return []
    window = timedelta(seconds=max(limits.burst_seconds, limits.shared_ip_seconds))
    since = min(h.at for h in hits) - window
    mailing_ids = {r.mailing_id for r in delivery_rows.values()}
    addresses = {h.ip[:45] for h in hits if h.token is not None}
    recent = select(*_POOL_COLUMNS).where(
        tracking_hits.c.verdict.is_not(None), tracking_hits.c.mailing_id.in_(mailing_ids),
        tracking_hits.c.occurred_at >= since, tracking_hits.c.ip.in_(addresses),
    ).order_by(tracking_hits.c.occurred_at.desc()).limit(
        min(POOL_LIMIT, RECENT_PER_SOURCE * len(addresses)))
    rows = conn.execute(recent).all()
    return [_entry_of(row) for row in sorted(rows, key=lambda r: (r.occurred_at, r.id))]


def _upgrade_stored(conn: Connection, pool: list[_Entry], human: Sequence[_Entry]) -> None:
    """Upgrade older stored machine hits of the messages a person just engaged with."""
    deliveries_seen = {entry.hit.delivery_id for entry in human}
    if not deliveries_seen:
        return
    known = {entry.row_id for entry in pool if entry.row_id is not None}
    stored: dict[int, list[_Entry]] = {}
    for row in conn.execute(select(*_POOL_COLUMNS).where(
            tracking_hits.c.delivery_id.in_(deliveries_seen), tracking_hits.c.verdict.is_not(None),
            tracking_hits.c.verdict != VerdictKind.HUMAN.value).limit(POOL_LIMIT)):
        if row.id not in known:
            entry = _entry_of(row)
            stored.setdefault(entry.hit.delivery_id, []).append(entry)
            pool.append(entry)
    for person in human:
        candidates = stored.get(person.hit.delivery_id, [])
        for index in upgrade_targets(person.hit, person.verdict, [c.hit for c in candidates]):
            target = candidates[index]
            revised = upgrade(target.verdict, person.verdict)
            if revised != target.verdict:
                target.verdict, target.upgraded, target.changed = revised, True, True


# --- settling: contact effects and webhooks after the hold ----------------------------


def settle_hits(engine: Engine, policy: StatusPolicy, *, now: datetime, hold: timedelta,
                limit: int = 1000) -> int:
    """Settle hits older than ``hold`` (in id order); human ones count for their contacts.

    Settling takes a prefix of the unsettled ids, so ``settled_events`` can be read with an
    id cursor. When another process is settling the same rows, this call settles nothing.
    """
    cutoff = now - hold
    with engine.connect() as conn:
        rows = conn.execute(select(tracking_hits.c.id, tracking_hits.c.occurred_at,
                                   tracking_hits.c.kind, tracking_hits.c.verdict,
                                   tracking_hits.c.account_id, tracking_hits.c.contact_id,
                                   tracking_hits.c.mailing_id, tracking_hits.c.delivery_id)
                            .where(tracking_hits.c.settled_at.is_(None))
                            .order_by(tracking_hits.c.id).limit(limit)).all()
    due = []
    for row in rows:
        if row.occurred_at > cutoff:
            break
        due.append(row)
    if not due:
        return 0

    def settle(conn: Connection, _transitions: object) -> None:
        # In the contact events' transaction: a crash cannot leave hits settled whose
        # engagement never reached the contact, nor the reverse.
        claimed = conn.execute(update(tracking_hits).where(
            tracking_hits.c.id.in_([r.id for r in due]), tracking_hits.c.settled_at.is_(None))
            .values(settled_at=now)).rowcount
        if claimed != len(due):
            raise _SettledElsewhereError

    records = [
        ContactEventRecord(
            account_id=r.account_id, contact_id=r.contact_id,
            event=ContactEvent(EventKind.CLICK if r.kind == "click" else EventKind.OPEN, r.occurred_at),
            mailing_id=r.mailing_id, delivery_id=r.delivery_id, cause="tracking",
            details={"hit_id": r.id})
        for r in due
        if r.verdict == VerdictKind.HUMAN.value and r.contact_id is not None and r.account_id is not None
    ]
    try:
        apply_events(engine, policy, records, now, finish=settle)
    except _SettledElsewhereError:
        return 0
    return len(due)


class _SettledElsewhereError(Exception):
    """Another settler took some of these hits first: this one rolls back and settles none."""


@dataclass(frozen=True, slots=True)
class EngagementEvent:
    """A settled open or click, for webhooks and automation (``hit_id`` is the cursor)."""

    hit_id: int
    account_id: int
    kind: str
    verdict: str
    reasons: tuple[str, ...]
    occurred_at: datetime
    mailing_id: int
    delivery_id: int | None
    contact_id: int | None
    link_id: int | None
    url: str | None

    @property
    def human(self) -> bool:
        return self.verdict == VerdictKind.HUMAN.value


def settled_events(engine: Engine, *, after_id: int = 0, limit: int = 500,
                   account_id: int | None = None, human_only: bool = False) -> list[EngagementEvent]:
    """Settled opens and clicks with ``hit_id > after_id``, in id order.

    The webhook dispatcher keeps the last ``hit_id`` it handled and passes it back: settled
    ids only grow. The verdict is the one at read time (a later person may still upgrade it).
    """
    query = (select(tracking_hits, tracking_links.c.url)
             .select_from(tracking_hits.outerjoin(tracking_links,
                                                  tracking_links.c.id == tracking_hits.c.link_id))
             .where(tracking_hits.c.id > after_id, tracking_hits.c.settled_at.is_not(None),
                    tracking_hits.c.verdict.is_not(None))
             .order_by(tracking_hits.c.id).limit(limit))
    if account_id is not None:
        query = query.where(tracking_hits.c.account_id == account_id)
    if human_only:
        query = query.where(tracking_hits.c.verdict == VerdictKind.HUMAN.value)
    with engine.connect() as conn:
        return [EngagementEvent(r.id, r.account_id, r.kind, r.verdict, tuple(r.reasons or ()),
                                r.occurred_at, r.mailing_id, r.delivery_id, r.contact_id,
                                r.link_id, r.url) for r in conn.execute(query)]


# --- reports --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counts:
    """Human and machine (scanners, Apple MPP, proxies) hits: unique messages and total hits."""

    human_unique: int = 0
    human_total: int = 0
    machine_unique: int = 0
    machine_total: int = 0


@dataclass(frozen=True, slots=True)
class LinkEngagement:
    link_id: int
    number: int
    url: str
    clicks: Counts


@dataclass(frozen=True, slots=True)
class MailingEngagement:
    mailing_id: int
    opens: Counts
    clicks: Counts
    by_verdict: Mapping[str, int]
    links: tuple[LinkEngagement, ...]


def _counts(rows: Sequence[Any]) -> Counts:
    values = {"human": (0, 0), "machine": (0, 0)}
    for row in rows:
        values["human" if row.human else "machine"] = (int(row.unique), int(row.total))
    return Counts(values["human"][0], values["human"][1], values["machine"][0], values["machine"][1])


def mailing_engagement(engine: Engine, account_id: int, mailing_id: int) -> MailingEngagement:
    """Opens and clicks of a mailing, human and machine apart, overall and per link."""
    is_human = case((tracking_hits.c.verdict == VerdictKind.HUMAN.value, 1), else_=0).label("human")
    scope = (tracking_hits.c.account_id == account_id, tracking_hits.c.mailing_id == mailing_id,
             tracking_hits.c.verdict.is_not(None))
    with engine.connect() as conn:
        overall = conn.execute(
            select(tracking_hits.c.kind, is_human,
                   func.count(func.distinct(tracking_hits.c.delivery_id)).label("unique"),
                   func.count().label("total"))
            .where(*scope).group_by(tracking_hits.c.kind, is_human)).all()
        per_link = conn.execute(
            select(tracking_hits.c.link_id, is_human,
                   func.count(func.distinct(tracking_hits.c.delivery_id)).label("unique"),
                   func.count().label("total"))
            .where(*scope, tracking_hits.c.kind == "click")
            .group_by(tracking_hits.c.link_id, is_human)).all()
        verdicts = conn.execute(select(tracking_hits.c.verdict, func.count())
                                .where(*scope).group_by(tracking_hits.c.verdict)).all()
        links = conn.execute(select(tracking_links.c.id, tracking_links.c.number, tracking_links.c.url)
                             .where(tracking_links.c.account_id == account_id,
                                    tracking_links.c.mailing_id == mailing_id)
                             .order_by(tracking_links.c.number)).all()
    return MailingEngagement(
        mailing_id=mailing_id,
        opens=_counts([r for r in overall if r.kind == "open"]),
        clicks=_counts([r for r in overall if r.kind == "click"]),
        by_verdict={str(v): int(n) for v, n in verdicts},
        links=tuple(LinkEngagement(int(link.id), int(link.number), link.url,
                                   _counts([r for r in per_link if r.link_id == link.id]))
                    for link in links),
    )


# --- in-process plumbing used by the HTTP endpoints -----------------------------------


class LinkDirectory:
    """Destination of a click token, cached in memory: links never change once registered."""

    def __init__(self, engine: Engine, *, max_entries: int = 200_000) -> None:
        self._engine = engine
        self._max = max_entries
        self._cache: dict[int, tuple[int, int, str]] = {}

    def cached(self, token: TrackingToken) -> str | None:
        """The destination if it is in memory and belongs to the token's message."""
        found = self._cache.get(token.link_id)
        return self._check(found, token)

    def lookup(self, token: TrackingToken) -> str | None:
        """The destination (database on a cache miss), or None if the link is not the token's."""
        found = self._cache.get(token.link_id)
        if found is None:
            with self._engine.connect() as conn:
                row = conn.execute(select(tracking_links.c.account_id, tracking_links.c.mailing_id,
                                          tracking_links.c.url)
                                   .where(tracking_links.c.id == token.link_id)).one_or_none()
            if row is None:
                return None
            if len(self._cache) >= self._max:
                self._cache.clear()
            found = (int(row.account_id), int(row.mailing_id), str(row.url))
            self._cache[token.link_id] = found
        return self._check(found, token)

    @staticmethod
    def _check(found: tuple[int, int, str] | None, token: TrackingToken) -> str | None:
        if found is None or found[0] != token.account_id or found[1] != token.mailing_id:
            return None
        return found[2]


def encode_hit(hit: RawHit) -> bytes:
    """One hit as a spool record: a line of ASCII JSON (newlines inside values are escaped)."""
    token = hit.token
    record = {
        "k": hit.kind, "t": hit.at.isoformat(), "m": hit.method, "ip": hit.ip, "ua": hit.user_agent,
        "h": dict(hit.headers),
        "tok": None if token is None else [token.purpose.value, token.account_id, token.mailing_id,
                                           token.delivery_id, token.link_id, token.expires_at],
    }
    return json.dumps(record, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def decode_hit(record: bytes) -> RawHit:
    """The hit a spool record holds; ValueError (or KeyError/TypeError) if it is not one."""
    data = json.loads(record)
    token = None
    if data["tok"] is not None:
        purpose, account_id, mailing_id, delivery_id, link_id, expires_at = data["tok"]
        token = TrackingToken(TokenPurpose(purpose), int(account_id), int(mailing_id),
                              int(delivery_id), int(link_id), int(expires_at))
    at = datetime.fromisoformat(data["t"])
    if at.tzinfo is None:
        raise ValueError(f"spool record without a time zone: {data['t']!r}")
    return RawHit(kind=str(data["k"]), at=at, method=str(data["m"]), ip=str(data["ip"]),
                  user_agent=str(data["ua"]), headers={str(k): str(v) for k, v in data["h"].items()},
                  token=token)


def spool_directory(settings: Settings) -> Path:
    """Where accepted hits wait for the writer (``tracking_spool_dir`` or ``data_dir/tracking-spool``)."""
    return settings.tracking_spool_dir or settings.data_dir / "tracking-spool"


@dataclass
class RecorderStats:
    submitted: int = 0
    written: int = 0
    dropped: int = 0
    failed_batches: int = 0
    settled: int = 0
    last_error: str = ""


class HitWriter:
    """Drains the hit spool into the database: verdicts in batches, then settling.

    It runs wherever the operator wants it: in a thread of the serving process
    (``tracking_writer = "thread"``, embedded use and tests) or in a process of its own
    (``"external"``, what ``mailcarrier serve`` starts), so classifying thousands of hits a
    second never holds the GIL the endpoints need. Only one writer drains a spool at a time
    (the spool's reader lock); a second one waits for the lock.

    A batch's spool position is stored in the database in the batch's own transaction
    (``tracking_spool_positions``), so a writer killed at any moment is resumed by the next
    one exactly after the last stored hit: none lost, none stored twice. A database that
    is slow, locked or down delays hits but loses none: they wait on disk and are retried.
    A hit the database rejects for what it contains is written alone and dropped (logged)
    so it cannot block the ones behind it.
    """

    def __init__(self, engine: Engine, settings: Settings, policy: StatusPolicy, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 networks: Sequence[Network] | None = None, settle_interval: float = 1.0,
                 poll_interval: float = 0.02, stats: RecorderStats | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.policy = policy
        self.clock = clock
        self.stats = stats or RecorderStats()
        self.settle_interval = settle_interval
        self.poll_interval = poll_interval
        self.reader = SpoolReader(spool_directory(settings))
        self._limits = thresholds(settings)
        self._networks = NetworkIndex(load_networks() if networks is None else networks)
        self._hold = timedelta(seconds=settings.tracking_hold_seconds)

    def run(self, stop: threading.Event, *, give_up_after: float = 30.0) -> None:
        """Drain until ``stop`` is set, then drain what is spooled and return.

        ``give_up_after``: once stopping, seconds to keep retrying a failing database before
        leaving the rest in the spool for the next writer (nothing is lost either way).
        """
        if not self.reader.acquire(stop=stop):
            return
        try:
            last_settle = time.monotonic()  # as before: the first settle after one interval
            stopping_since: float | None = None
            failures = 0  # in a row, for the back-off
            adopted = False
            while True:
                if stopping_since is None and stop.is_set():
                    stopping_since = time.monotonic()
                try:
                    if not adopted:
                        self.adopt_stored_positions()
                        adopted = True
                    handled = self.drain_once()
                except (OperationalError, OSError) as exc:  # database or disk unavailable: hits wait
                    self._note_failure(exc)
                    if stopping_since is not None and time.monotonic() - stopping_since > give_up_after:
                        _log.error("stopping with %d bytes of hits left in the spool: %r",
                                   self.reader.backlog_bytes(), exc)
                        return
                    failures += 1
                    time.sleep(min(2.0, 0.05 * 2 ** min(failures, 6)))
                    continue
                failures = 0
                now = time.monotonic()
                if now - last_settle >= self.settle_interval or (handled == 0 and stopping_since):
                    self._settle_quietly()
                    last_settle = now
                if handled == 0:
                    if stopping_since is not None:
                        self._forget(self.reader.retire())
                        return
                    stop.wait(self.poll_interval)
        finally:
            self.reader.release()

    def drain_once(self) -> int:
        """Write one batch from the spool; returns the number of records handled (0: none waiting)."""
        batch = self.reader.read(self.settings.tracking_batch_size)
        if not batch.records:
            self._forget(self.reader.retire())
            return 0
        hits: list[RawHit] = []
        for record in batch.records:
            try:
                hits.append(decode_hit(record))
            except (ValueError, KeyError, TypeError) as exc:
                self.stats.dropped += 1
                _log.error("skipping an unreadable spool record %r: %r", record[:200], exc)
        self._write(hits, batch.ends)
        self._forget(self.reader.commit(batch))
        return len(batch.records)

    def settle(self) -> int:
        """Settle what is due now (also run periodically by ``run``)."""
        count = settle_hits(self.engine, self.policy, now=self.clock(), hold=self._hold)
        self.stats.settled += count
        return count

    def adopt_stored_positions(self) -> None:
        """Resume each segment after the last hit stored from it (the database knows best)."""
        with self.engine.connect() as conn:
            stored = {str(r.segment): int(r.position) for r in conn.execute(
                select(tracking_spool_positions.c.segment, tracking_spool_positions.c.position))}
        self.reader.adopt(stored)
        self._forget(sorted(set(stored) - set(self.reader.segment_names())))

    def _forget(self, removed: Sequence[str]) -> None:
        """Drop the stored positions of segments deleted from the spool."""
        if removed:
            run_write(self.engine, lambda conn: conn.execute(delete(tracking_spool_positions).where(
                tracking_spool_positions.c.segment.in_(list(removed)))), what="forgetting spool positions")

    def _write(self, batch: Sequence[RawHit], positions: Mapping[str, int]) -> None:
        """Write a batch and its spool positions; OperationalError propagates (retry later),
        other failures go hit by hit (the positions then with the last one)."""
        try:
            self.stats.written += record_hits(self.engine, batch, limits=self._limits,
                                              networks=self._networks, now=self.clock(),
                                              spool_positions=positions)
            return
        except OperationalError:
            raise
        except Exception as exc:  # something in the batch itself: find it hit by hit
            self._note_failure(exc)
        for index, hit in enumerate(batch):
            last = index == len(batch) - 1
            try:
                self.stats.written += record_hits(self.engine, [hit], limits=self._limits,
                                                  networks=self._networks, now=self.clock(),
                                                  spool_positions=positions if last else None)
            except OperationalError:
                raise
            except Exception as exc:
                self.stats.dropped += 1
                _log.error("dropping tracking hit %r: %r", replace(hit, headers={}), exc)
                if last:
                    record_hits(self.engine, [], limits=self._limits, networks=self._networks,
                                now=self.clock(), spool_positions=positions)

    def _note_failure(self, exc: Exception) -> None:
        self.stats.failed_batches += 1
        self.stats.last_error = repr(exc)
        _log.warning("writing tracking hits failed: %r", exc)

    def _settle_quietly(self) -> None:
        try:
            self.settle()
        except Exception as exc:  # settling is retried on the next round
            self.stats.last_error = repr(exc)
            _log.warning("settling tracking hits failed: %r", exc)


@dataclass
class HitRecorder:
    """What the endpoints hand hits to: appends each to the on-disk spool, never blocking on the database.

    ``submit`` costs one ``write(2)``; a hit it accepted survives a crash of this process
    and is written by the next writer. With ``tracking_writer = "thread"`` ``start`` runs a
    :class:`HitWriter` in a background thread; with ``"external"`` another process does
    (``mailcarrier serve`` starts it), and this process only appends.
    """

    engine: Engine
    settings: Settings
    policy: StatusPolicy
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    networks: Sequence[Network] = field(default_factory=load_networks)
    settle_interval: float = 1.0
    stats: RecorderStats = field(default_factory=RecorderStats)

    def __post_init__(self) -> None:
        self.spool_dir = spool_directory(self.settings)
        self._producer = SpoolProducer(self.spool_dir)
        self._writer = HitWriter(self.engine, self.settings, self.policy, clock=self.clock,
                                 networks=self.networks, settle_interval=self.settle_interval,
                                 stats=self.stats)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the writer thread, unless an external writer process drains the spool."""
        if self.settings.tracking_writer == "thread" and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._writer.run, args=(self._stop,),
                                            name="mailcarrier-hit-writer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Close this process's spool segment; a writer thread writes what is spooled, then ends."""
        self._producer.close()
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout)
        self._thread = None

    def submit(self, hit: RawHit) -> None:
        """Spool a hit; if the disk refuses it, count and log it rather than fail the request."""
        self.stats.submitted += 1
        try:
            self._producer.append(encode_hit(hit))
        except OSError as exc:
            self.stats.dropped += 1
            self.stats.last_error = repr(exc)
            _log.error("could not spool a tracking hit in %s: %r", self.spool_dir, exc)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every hit spooled so far is in the database (whichever writer drains it)."""
        marks = spool_marks(self.spool_dir)
        deadline = time.monotonic() + timeout
        while not caught_up(self.spool_dir, marks):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def settle(self) -> int:
        """Settle what is due now (a running writer also does it periodically)."""
        return self._writer.settle()
