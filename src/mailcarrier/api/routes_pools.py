"""The account's sending pool: IPs and warm-up, eligibility, throttling actions, reputation events.

Everything is scoped to the caller's account (there is no operator scope in the API; the
operator-wide views are the ``mailcarrier pools`` commands). An account sees its own pool
and the IPs in it, the deferral automation's actions on those IPs, and the trap hits and
listings that touched it — as the cause or as a neighbour on a shared IP. Other tenants
stay anonymous: a neighbour is a count, and the evidence of an event another account
caused (a bounce text quoting its recipients) is not shown; provider replies have email
addresses redacted.

``POST /api/v1/pools/events`` is the API entry of trap hits and listings (the issue's
"manual entry, API, and from bounce texts"); ``POST /api/v1/pools/applications`` applies
for the trusted or a dedicated pool, which an operator approves with the CLI.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime, BaseModel, Field

from mailcarrier.api.auth import Principal, require_scopes
from mailcarrier.api.context import AppContext, app_context
from mailcarrier.api.problems import ProblemError
from mailcarrier.api.validation import NO_NUL
from mailcarrier.services.policies import pool_policy, warmup_limits
from mailcarrier.services.pools import account_view, values
from mailcarrier.services.pools import eligibility as pool_eligibility
from mailcarrier.storage.engine import write_transaction

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/pools", tags=["pools"])
FIRST_DAY = datetime(1970, 1, 1, tzinfo=UTC)


class IpOut(BaseModel):
    address: str
    hostname: str
    enabled: bool
    warmup_schedule: str
    warmup_day: int = Field(description="Day of the ramp today; past the schedule's end the IP is warm.")
    warmup_held: bool = Field(description="The ramp held today: yesterday's bounces or complaints were high.")
    daily_cap: int | None = Field(description="Warm-up cap for today; null when warm.")
    sent_today: int
    listed_on: list[str] = Field(description="Blocklists with an open listing (scheduled DNSBL look-ups).")


class PoolOut(BaseModel):
    name: str | None = Field(description="Null when the account is on no pool (it sends from the default "
                                         "source).")
    kind: Literal["shared", "trusted", "dedicated"] | None
    assigned_at: datetime | None
    reason: str = Field(description="Why the account is on this pool (operator, application, demotion).")
    other_accounts: int = Field(description="Other accounts sending from the same pool now.")
    ips: list[IpOut]


class EligibilityOut(BaseModel):
    belongs_in: Literal["shared", "trusted", "dedicated"]
    trusted_eligible: bool
    demoted: bool = Field(description="The account is on trusted/dedicated but must go back to shared.")
    recommend_dedicated: bool
    reasons: list[str]


class ApplicationOut(BaseModel):
    id: int
    kind: Literal["trusted", "dedicated"]
    state: Literal["pending", "approved", "refused"]
    eligible: bool
    reasons: list[str]
    requested_at: datetime
    decided_at: datetime | None
    decided_by: str | None


class EligibilityPage(BaseModel):
    eligibility: EligibilityOut
    applications: list[ApplicationOut]


class ThrottleActionOut(BaseModel):
    ip_address: str
    provider: str
    action: Literal["suspend", "slow_down"]
    rule: str
    started_at: datetime
    until: datetime
    ended_at: datetime | None
    end_reason: str | None = Field(description="expired, clean delivery or superseded; null while in force.")
    in_force: bool
    trigger: str = Field(description="The provider's reply that started it (email addresses redacted).")


class EventOut(BaseModel):
    id: int
    kind: Literal["trap", "listing"]
    ip_address: str | None
    blocklist: str
    source: Literal["manual", "api", "bounce", "dnsbl"]
    occurred_at: datetime
    resolved_at: datetime | None
    caused_by_this_account: bool
    accounts_on_ip: int = Field(description="Accounts on the IP when it happened (this one included).")
    evidence: str = Field(description="Only for events this account caused.")


class EventIn(BaseModel):
    kind: Literal["trap", "listing"]
    ip_address: str | None = Field(None, max_length=45, pattern=NO_NUL,
                                   description="An IP of this account's pool; required for a listing.")
    blocklist: str = Field("", max_length=255, pattern=NO_NUL)
    evidence: str = Field("", max_length=2000, pattern=NO_NUL)
    occurred_at: AwareDatetime | None = Field(None, description="Default: now.")


class ApplicationIn(BaseModel):
    kind: Literal["trusted", "dedicated"]


def event_out(e: account_view.AccountEvent) -> EventOut:
    return EventOut.model_validate({
        "id": e.id, "kind": e.kind.value, "ip_address": e.ip_address, "blocklist": e.blocklist,
        "source": e.source, "occurred_at": e.occurred_at, "resolved_at": e.resolved_at,
        "caused_by_this_account": e.caused_here, "accounts_on_ip": e.accounts_on_ip, "evidence": e.evidence})


def _application(a: values.Application) -> ApplicationOut:
    return ApplicationOut.model_validate({
        "id": a.id, "kind": a.kind.value, "state": a.state, "eligible": a.eligible,
        "reasons": list(a.reasons), "requested_at": a.requested_at, "decided_at": a.decided_at,
        "decided_by": a.decided_by})


def pool_out(view: account_view.AccountPool) -> PoolOut:
    """The API shape of the account's pool (the dashboard renders the same service value)."""
    return PoolOut.model_validate({
        "name": view.pool.name if view.pool else None, "kind": view.pool.kind.value if view.pool else None,
        "assigned_at": view.assigned_at, "reason": view.reason, "other_accounts": view.other_accounts,
        "ips": [{"address": ip.address, "hostname": ip.hostname, "enabled": ip.enabled,
                 "warmup_schedule": ip.schedule, "warmup_day": ip.warmup_day, "warmup_held": ip.held,
                 "daily_cap": ip.daily_cap, "sent_today": ip.sent_today, "listed_on": list(ip.listed_on)}
                for ip in view.ips]})


@router.get("", response_model=PoolOut)
def get_pool(who: Principal = Depends(require_scopes("pools:read")),
             ctx: AppContext = Depends(app_context)) -> PoolOut:
    """The account's pool and its IPs today: warm-up day and cap, volume sent, open listings."""
    with ctx.engine.connect() as conn:
        view = account_view.account_pool(conn, who.account_id, ctx.clock(), warmup_limits(ctx.settings))
    return pool_out(view)


@router.get("/eligibility", response_model=EligibilityPage)
def get_eligibility(who: Principal = Depends(require_scopes("pools:read")),
                    ctx: AppContext = Depends(app_context)) -> EligibilityPage:
    """Where the eligibility engine puts the account now, why, and its pool applications."""
    with ctx.engine.connect() as conn:
        verdict = pool_eligibility.evaluate_account(conn, who.account_id, pool_policy(ctx.settings),
                                                    ctx.clock())
        applications = pool_eligibility.list_applications(conn, account_id=who.account_id)
    eligibility = EligibilityOut.model_validate({
        "belongs_in": verdict.pool.value, "trusted_eligible": verdict.trusted_eligible,
        "demoted": verdict.demoted, "recommend_dedicated": verdict.recommend_dedicated,
        "reasons": list(verdict.reasons)})
    newest_first = [_application(a) for a in reversed(applications)]
    return EligibilityPage(eligibility=eligibility, applications=newest_first)


@router.post("/applications", response_model=ApplicationOut, status_code=201)
def apply(body: ApplicationIn, who: Principal = Depends(require_scopes("pools:write")),
          ctx: AppContext = Depends(app_context)) -> ApplicationOut:
    """Apply for the trusted or a dedicated pool: the engine's verdict is recorded now (an
    ineligible application is refused at once, with the reasons); an operator approves later."""
    with write_transaction(ctx.engine) as conn:
        application = pool_eligibility.apply_for_pool(conn, who.account_id, body.kind,
                                                      pool_policy(ctx.settings), ctx.clock())
    return _application(application)


def throttle_out(entry: values.ThrottleLogEntry, now: datetime) -> ThrottleActionOut:
    in_force = entry.ended_at is None and entry.started_at <= now < entry.until
    return ThrottleActionOut.model_validate({
        "ip_address": entry.ip_address, "provider": entry.provider, "action": entry.kind.value,
        "rule": entry.rule, "started_at": entry.started_at, "until": entry.until, "ended_at": entry.ended_at,
        "end_reason": entry.end_reason, "in_force": in_force, "trigger": entry.trigger})


@router.get("/throttle", response_model=list[ThrottleActionOut])
def get_throttle(active: Annotated[bool, Query(description="Only actions in force now.")] = False,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 200,
                 who: Principal = Depends(require_scopes("pools:read")),
                 ctx: AppContext = Depends(app_context)) -> list[ThrottleActionOut]:
    """The deferral automation's suspensions and slow-downs on the pool's IPs, newest first."""
    now = ctx.clock()
    with ctx.engine.connect() as conn:
        entries = account_view.account_throttle_log(conn, who.account_id, now, active=active, limit=limit)
    return [throttle_out(e, now) for e in entries]


@router.get("/events", response_model=list[EventOut])
def get_events(limit: Annotated[int, Query(ge=1, le=1000)] = 200,
               who: Principal = Depends(require_scopes("pools:read")),
               ctx: AppContext = Depends(app_context)) -> list[EventOut]:
    """Trap hits and blocklist listings that touched the account, newest first: its own, and
    those of IPs it shared when they happened (the neighbours effect)."""
    with ctx.engine.connect() as conn:
        return [event_out(e) for e in account_view.account_events(conn, who.account_id, limit=limit)]


@router.post("/events", response_model=EventOut, status_code=201)
def report_event(body: EventIn, who: Principal = Depends(require_scopes("pools:write")),
                 ctx: AppContext = Depends(app_context)) -> EventOut:
    """Report a spam-trap hit of the account's mail, or a listing of one of its pool's IPs."""
    now = ctx.clock()
    if body.occurred_at is not None and body.occurred_at < FIRST_DAY:
        raise ProblemError(422, "occurred_at before 1970 is not accepted")
    try:
        with write_transaction(ctx.engine) as conn:
            event = account_view.report_event(conn, who.account_id, body.kind, now,
                                              ip_address=body.ip_address, blocklist=body.blocklist,
                                              evidence=body.evidence, occurred_at=body.occurred_at)
    except ValueError as exc:  # a listing without IP or list, a time outside the assignment
        raise ProblemError(422, str(exc)) from exc
    return event_out(event)
