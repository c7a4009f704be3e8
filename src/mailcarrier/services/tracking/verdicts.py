"""Hit ingestion with verdicts: each batch of hits judged human or machine, and stored.

:func:`record_hits` gives each hit a verdict from the pure rules
(:mod:`mailcarrier.domain.engagement`, :mod:`mailcarrier.domain.machine_activity`) against
the recent hits of the same address and message, which it reads back from the store; the
rules may revise earlier hits too: a burst recognised late turns its first hits into
machines, and a person's later hit upgrades the earlier machine verdicts on the same
message. The batch and the revisions are written in one transaction.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from mailcarrier.domain.engagement import (
    PARTNER_REASON,
    burst_partners,
    classify_request,
    prefetch_requested,
    upgrade_targets,
)
from mailcarrier.domain.machine_activity import (
    Hit,
    Network,
    Thresholds,
    Verdict,
    VerdictKind,
    upgrade,
)
from mailcarrier.domain.tracking import TokenPurpose
from mailcarrier.services.tracking.hits import RawHit, stored_headers
from mailcarrier.storage.engine import run_write
from mailcarrier.storage.tables import deliveries
from mailcarrier.storage.tracking_spool_tables import tracking_spool_positions
from mailcarrier.storage.tracking_tables import tracking_hits, tracking_links

__all__ = ["POOL_LIMIT", "RECENT_PER_SOURCE", "NetworkIndex", "record_hits"]

_MAX_USER_AGENT = 1024
#: Hits of one address kept for the burst rules; "more than 2 links / recipients" never needs more.
RECENT_PER_SOURCE = 32
#: Stored hits read per batch for each of the two look-backs.
POOL_LIMIT = 2000


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
