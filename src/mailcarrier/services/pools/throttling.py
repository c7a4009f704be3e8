"""Throttle automation: replies that signal a provider slowing us down become actions (fewer
connections, a pause) on an IP for that provider, logged with when they end
(``domain.throttle_rules``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, select, update

from mailcarrier.domain.throttle_rules import (
    ActionKind,
    ActiveAction,
    ReplyEvent,
    ThrottleDecision,
    ThrottleRules,
    ThrottleState,
    load_throttle_rules,
    on_reply,
)
from mailcarrier.services.pools.membership import ip_by_address
from mailcarrier.services.pools.values import SendingIp, ThrottleLogEntry
from mailcarrier.services.pools.warmup import lock_pools
from mailcarrier.storage.pool_tables import (
    sending_ips,
    throttle_actions,
    throttle_states,
)

__all__ = [
    "record_reply_for_throttling",
    "throttle_log",
]

def throttle_state(conn: Connection, ip: SendingIp, provider: str, now: datetime) -> ThrottleState:
    """The stored automation state; an action whose time is up is closed in the log here."""
    row = conn.execute(select(throttle_states).where(throttle_states.c.ip_id == ip.id,
                                                     throttle_states.c.provider == provider)).one_or_none()
    if row is None:
        return ThrottleState(ip=ip.address, provider=provider)
    matches = tuple((str(name), datetime.fromisoformat(at)) for name, at in row.matches)
    action = None
    if row.action_id is not None:
        a = conn.execute(select(throttle_actions).where(throttle_actions.c.id == row.action_id)).one()
        if a.ended_at is None and a.until <= now:
            conn.execute(update(throttle_actions).where(throttle_actions.c.id == a.id).values(
                ended_at=a.until, end_reason="expired"))
            conn.execute(update(throttle_states).where(throttle_states.c.ip_id == ip.id,
                                                       throttle_states.c.provider == provider)
                         .values(action_id=None, matches=[]))
            return ThrottleState(ip=ip.address, provider=provider)
        if a.ended_at is None:
            action = ActiveAction(a.rule, ActionKind(a.kind), a.started_at, a.until, a.connections,
                                  a.rate_factor)
    return ThrottleState(ip=ip.address, provider=provider, matches=matches, action=action)


def _save_throttle(conn: Connection, ip: SendingIp, decision: ThrottleDecision, at: datetime,
                   trigger: str) -> None:
    state = decision.state
    current = conn.execute(select(throttle_states.c.action_id).where(
        throttle_states.c.ip_id == ip.id, throttle_states.c.provider == state.provider)).first()
    action_id = current.action_id if current is not None else None
    open_action = throttle_actions.c.ended_at.is_(None)
    if decision.ended is not None and action_id is not None:
        until = _until(conn, action_id)
        conn.execute(update(throttle_actions).where(throttle_actions.c.id == action_id, open_action).values(
            ended_at=min(at, until) if decision.ended == "expired" else at, end_reason=decision.ended))
    if decision.started is not None:
        if action_id is not None:  # a stronger action replaces the one in force
            conn.execute(update(throttle_actions).where(throttle_actions.c.id == action_id, open_action)
                         .values(ended_at=at, end_reason="superseded"))
        started = decision.started
        key = conn.execute(throttle_actions.insert().values(
            ip_id=ip.id, provider=state.provider, rule=started.rule, kind=started.kind.value,
            started_at=started.started, until=started.until, connections=started.connections,
            rate_factor=started.rate_factor, trigger=trigger[:2000])).inserted_primary_key
        assert key is not None
        action_id = int(key[0])
    if state.action is None:
        action_id = None
    matches = [[name, when.isoformat()] for name, when in state.matches]
    values = {"matches": matches, "action_id": action_id}
    if current is None:
        conn.execute(throttle_states.insert().values(ip_id=ip.id, provider=state.provider, **values))
    else:
        conn.execute(update(throttle_states).where(throttle_states.c.ip_id == ip.id,
                                                   throttle_states.c.provider == state.provider
                                                   ).values(**values))


def _until(conn: Connection, action_id: int) -> datetime:
    until: datetime = conn.execute(select(throttle_actions.c.until).where(
        throttle_actions.c.id == action_id)).scalar_one()
    return until


def record_reply_for_throttling(conn: Connection, address: str, destination: str, now: datetime, *,
                                delivered: bool, text: str = "",
                                rules: ThrottleRules | None = None) -> ThrottleDecision:
    """Feed one outcome towards a provider (recipient domain or MX host) into the automation.

    A clean delivery ends a slow-down; a temporary failure matching a rule is counted
    and may start a suspension or slow-down. Starts and ends are logged in
    ``throttle_actions``.
    """
    rules = rules or load_throttle_rules()
    provider = rules.provider_for(destination).provider
    ip = ip_by_address(conn, address)
    if delivered and conn.execute(select(throttle_states.c.ip_id).where(
            throttle_states.c.ip_id == ip.id, throttle_states.c.provider == provider)).first() is None:
        return ThrottleDecision(ThrottleState(ip=ip.address, provider=provider))  # nothing to relax
    lock_pools(conn, [ip.pool_id])
    state = throttle_state(conn, ip, provider, now)
    decision = on_reply(state, ReplyEvent(at=now, delivered=delivered, text=text), rules)
    if decision.started is not None or decision.ended is not None or decision.state != state:
        _save_throttle(conn, ip, decision, now, text)  # most clean deliveries change nothing
    return decision


def throttle_log(conn: Connection, *, active_at: datetime | None = None,
                 as_of: datetime | None = None, addresses: Sequence[str] | None = None,
                 limit: int | None = None) -> list[ThrottleLogEntry]:
    """Every automation action (newest first), or only those in force at ``active_at``.

    An action whose time ran out is closed in the store the next time its (IP, provider)
    pair is used; with ``as_of`` such an action is already shown as expired at its end.
    ``addresses`` keeps the actions of those IPs only (an account's view of its pool).
    """
    t = throttle_actions.c
    query = select(throttle_actions, sending_ips.c.address).join(sending_ips, sending_ips.c.id == t.ip_id)
    if addresses is not None:
        query = query.where(sending_ips.c.address.in_(list(addresses)))
    if limit is not None:
        query = query.limit(limit)
    if active_at is not None:
        query = query.where(t.ended_at.is_(None), t.until > active_at, t.started_at <= active_at)
    rows = conn.execute(query.order_by(t.started_at.desc(), t.id.desc())).all()
    entries = []
    for r in rows:
        ended_at, end_reason = r.ended_at, r.end_reason
        if ended_at is None and as_of is not None and r.until <= as_of:
            ended_at, end_reason = r.until, "expired"
        entries.append(ThrottleLogEntry(r.address, r.provider, r.rule, ActionKind(r.kind), r.started_at,
                                        r.until, ended_at, end_reason, r.trigger))
    return entries
