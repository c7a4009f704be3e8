"""Dashboard pages (Jinja2, server-rendered; links and forms work without JavaScript).

Login per account: a person signs in with one of the account's API keys (scope
``reports:read``); the session cookie is signed and re-checked on every request. Every
figure on a page comes from the same services as the REST API, so the two always agree.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from mailcarrier.api import routes_pools
from mailcarrier.api.auth import has_scope, key_uses
from mailcarrier.api.context import AppContext, app_context
from mailcarrier.api.dashboard import charts
from mailcarrier.api.dashboard.security import csrf_field, require_csrf
from mailcarrier.api.dashboard.session import COOKIE, Session, load_session, sign_session
from mailcarrier.api.pagination import MAX_ID
from mailcarrier.api.problems import ProblemError
from mailcarrier.api.routes_reports import FIRST_REPORT_DAY
from mailcarrier.api.validation import NO_NUL
from mailcarrier.domain.errors import NotFoundError
from mailcarrier.services import evidence, pools, reports
from mailcarrier.services.hygiene import DnsHygiene, failures, resolver_for
from mailcarrier.services.policies import pool_policy, warmup_limits
from mailcarrier.storage.api_keys import authenticate_key

__all__ = ["router"]

#: Every unsafe-method route of this router checks the CSRF token (forms write ``{{ csrf_field() }}``).
router = APIRouter(prefix="/dashboard", include_in_schema=False, dependencies=[Depends(require_csrf)])
_env = Environment(loader=PackageLoader("mailcarrier.api.dashboard", "templates"),
                   autoescape=select_autoescape(["html"]))
_env.globals["csrf_field"] = csrf_field
LISTS = (("in_progress", "In progress"), ("sent", "Sent"), ("automated", "Automated"), ("test", "Test"))
BUCKET_LABELS = {"queued": "Queued", "in_progress": "In progress (deferred)", "delivered": "Delivered",
                 "bounced_hard": "Hard bounced", "bounced_soft": "Soft bounced",
                 "suppressed": "Suppressed", "failed": "Failed"}
FUNNEL_COLOURS = {"delivered": "#188038", "bounced_hard": "#b3261e", "bounced_soft": "#f9ab00",
                  "in_progress": "#1a73e8", "queued": "#9aa0a6", "suppressed": "#5f6368",
                  "failed": "#3c4043"}


def _render(name: str, status: int = 200, **values: Any) -> HTMLResponse:
    return HTMLResponse(_env.get_template(name).render(**values), status_code=status)


def _session(request: Request, ctx: AppContext = Depends(app_context)) -> Session:
    with ctx.engine.connect() as conn:
        session = load_session(conn, ctx.settings.resolved_secret(), request.cookies.get(COOKIE), ctx.clock())
    if session is None:  # an anonymous visitor is sent to the login form
        raise HTTPException(status_code=303, headers={"Location": "/dashboard/login"})
    return session


@router.get("/login", response_class=HTMLResponse)
def login_form() -> HTMLResponse:
    return _render("login.html", error=None)


@router.post("/login")
def login(request: Request, key: Annotated[str, Form(max_length=300)],
          ctx: AppContext = Depends(app_context)) -> Response:
    """Sign in with an API key of the account (it needs the reports:read scope)."""
    now = ctx.clock()
    with ctx.engine.connect() as conn:
        found = authenticate_key(conn, key.strip(), now)
    if found is not None:
        key_uses(request, ctx).note(found, now)
    if found is None or not has_scope(found.scopes, "reports:read"):
        return _render("login.html", status=401,
                       error="That key is unknown, revoked, or lacks the reports:read scope.")
    response = RedirectResponse("/dashboard/", status_code=303)
    response.set_cookie(COOKIE, sign_session(ctx.settings.resolved_secret(), found.account_id, found.id, now),
                        httponly=True, samesite="strict", path="/dashboard",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(COOKIE, path="/dashboard")
    return response


@router.get("/", response_class=HTMLResponse)
def index(session: Session = Depends(_session), ctx: AppContext = Depends(app_context)) -> HTMLResponse:
    """The mailing lists of seed 003."""
    lists = [(key, label, reports.list_mailings(ctx.engine, session.account_id, key, limit=20))
             for key, label in LISTS]
    return _render("index.html", lists=lists)


@router.get("/mailings/{mailing_id}", response_class=HTMLResponse)
def mailing_page(mailing_id: int, session: Session = Depends(_session),
                 ctx: AppContext = Depends(app_context)) -> HTMLResponse:
    """The response page: funnel, bounces by category, engagement, recipients per bucket."""
    if not 1 <= mailing_id <= MAX_ID:
        raise NotFoundError(f"no mailing {mailing_id} in this account")
    page = reports.response_page(ctx.engine, session.account_id, mailing_id,
                                 reports.report_thresholds(ctx.settings))
    bounced = [row for bucket in reports.BOUNCED
               for row in reports.mailing_recipients(ctx.engine, session.account_id, mailing_id,
                                                     bucket=bucket, limit=100)]
    funnel = charts.bar_chart("Delivery funnel", [
        (BUCKET_LABELS[b], n, FUNNEL_COLOURS[b]) for b, n in page.buckets.items()])
    e = page.engagement
    engagement = charts.bar_chart("Engagement: people and machines", [
        ("Opens (people)", e.opens_human, "#188038"), ("Opens (machines)", e.opens_machine, "#9aa0a6"),
        ("Clicks (people)", e.clicks_human, "#1a73e8"), ("Clicks (machines)", e.clicks_machine, "#9aa0a6"),
        ("Unsubscribes", e.unsubscribes, "#e8710a"), ("Complaints", e.complaints, "#b3261e")])
    categories = charts.bar_chart("Bounces by category", [
        (f"Category {c}", n, charts.CATEGORY_COLOURS.get(c, "#80868b"))
        for c, n in page.bounced_by_category.items()])
    return _render("mailing.html", page=page, labels=BUCKET_LABELS, funnel=funnel,
                   engagement=engagement, categories=categories,
                   bounces=bounced)


@router.get("/bounces", response_class=HTMLResponse)
def bounce_page(days: Annotated[int, Query(ge=1, le=3660)] = 30,
                until: Annotated[date | None, Query()] = None,
                session: Session = Depends(_session), ctx: AppContext = Depends(app_context)) -> HTMLResponse:
    """The bounce report ("Bounce House")."""
    last = until or ctx.clock().date()
    if last < FIRST_REPORT_DAY:
        raise ProblemError(422, f"dates before {FIRST_REPORT_DAY.isoformat()} are not reported")
    report = reports.bounce_report(ctx.engine, session.account_id, since=last - timedelta(days=days - 1),
                                   until=last, thresholds=reports.report_thresholds(ctx.settings))
    chart = charts.stacked_by_day("Bounces per day by category", report.by_day)
    return _render("bounces.html", report=report, chart=chart, days=days)


@router.get("/evidence", response_class=HTMLResponse)
def evidence_page(email: Annotated[str, Query(min_length=1, max_length=320, pattern=NO_NUL)],
                  mailing_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
                  session: Session = Depends(_session),
                  ctx: AppContext = Depends(app_context)) -> HTMLResponse:
    """Delivery evidence for a recipient, with text and PDF downloads."""
    report = evidence.collect_evidence(ctx.engine, session.account_id, email, ctx.clock(),
                                       mailing_id=mailing_id)
    return _render("evidence.html", report=report, mailing_id=mailing_id)


@router.get("/evidence.{fmt}")
def evidence_download(fmt: str, email: Annotated[str, Query(min_length=1, max_length=320, pattern=NO_NUL)],
                      mailing_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
                      session: Session = Depends(_session),
                      ctx: AppContext = Depends(app_context)) -> Response:
    if fmt not in ("txt", "pdf"):
        raise NotFoundError("evidence downloads are .txt or .pdf")
    report = evidence.collect_evidence(ctx.engine, session.account_id, email, ctx.clock(),
                                       mailing_id=mailing_id)
    if fmt == "pdf":
        name = "".join(ch if ch.isalnum() or ch in "._-@" else "_" for ch in report.email)
        return Response(evidence.to_pdf(report), media_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="evidence-{name}.pdf"'})
    return Response(evidence.to_text(report), media_type="text/plain; charset=utf-8")


@router.get("/pool", response_class=HTMLResponse)
def pool_page(session: Session = Depends(_session), ctx: AppContext = Depends(app_context)) -> HTMLResponse:
    """The account's pool, IP warm-up, eligibility, throttling actions and reputation events
    (the same service calls and shapes as ``/api/v1/pools``)."""
    now = ctx.clock()
    with ctx.engine.connect() as conn:
        view = pools.account_pool(conn, session.account_id, now, warmup_limits(ctx.settings))
        verdict = pools.evaluate_account(conn, session.account_id, pool_policy(ctx.settings), now)
        applications = list(reversed(pools.list_applications(conn, account_id=session.account_id)))
        throttle = [routes_pools.throttle_out(e, now)
                    for e in pools.account_throttle_log(conn, session.account_id, now, limit=50)]
        events = [routes_pools.event_out(e)
                  for e in pools.account_events(conn, session.account_id, limit=100)]
    return _render("pool.html", pool=view, verdict=verdict, applications=applications, throttle=throttle,
                   events=events)


DOMAIN_PATTERN = r"^[A-Za-z0-9.-]+$"


@router.get("/pool/domain", response_class=HTMLResponse)
def domain_check_page(domain: Annotated[str, Query(min_length=1, max_length=253, pattern=DOMAIN_PATTERN)],
                      session: Session = Depends(_session),
                      ctx: AppContext = Depends(app_context)) -> HTMLResponse:
    """``mailcarrier domains check`` for the account's pool IPs: what sending from DOMAIN needs."""
    settings = ctx.settings
    with ctx.engine.connect() as conn:
        request = pools.domain_check_request(conn, session.account_id, domain,
                                             dkim_selector=settings.dkim_selector,
                                             bounce_domain=settings.bounce_domain,
                                             inbound_host=settings.hostname)
        listings = pools.open_dnsbl_listings(conn, request.sending_ips)
    checks = [*DnsHygiene(resolver_for(settings.hygiene_nameserver), lifetime=5.0).check_domain(request),
              *listings]
    return _render("domain_check.html", domain=request.domain, ips=request.sending_ips, checks=checks,
                   failed=bool(failures(checks)))

