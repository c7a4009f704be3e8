"""Dashboard pages (Jinja2, server-rendered; links and forms work without JavaScript).

Login per account: a person signs in with one of the account's API keys (scope
``reports:read``); the session cookie is signed and re-checked on every request. Every
figure on a page comes from the same services as the REST API, so the two always agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mailcarrier.api import routes_pools
from mailcarrier.api.auth import has_scope, key_uses
from mailcarrier.api.context import AppContext, app_context
from mailcarrier.api.dashboard import audience_pages, charts, contact_pages, mailing_pages
from mailcarrier.api.dashboard.security import require_csrf
from mailcarrier.api.dashboard.session import COOKIE, Session, sign_session
from mailcarrier.api.dashboard.web import csv_download, current_session, render, static_asset
from mailcarrier.api.pagination import MAX_ID
from mailcarrier.api.problems import ProblemError
from mailcarrier.api.routes_reports import FIRST_REPORT_DAY
from mailcarrier.api.validation import NO_NUL
from mailcarrier.domain.errors import NotFoundError
from mailcarrier.services import evidence, reports
from mailcarrier.services.hygiene import DnsHygiene, failures, resolver_for
from mailcarrier.services.policies import pool_policy, warmup_limits
from mailcarrier.services.pools import account_view, sender_checks
from mailcarrier.services.pools import eligibility as pool_eligibility
from mailcarrier.storage.api_keys import authenticate_key

__all__ = ["router"]

#: Every unsafe-method route of this router checks the CSRF token (forms write ``{{ csrf_field() }}``).
router = APIRouter(prefix="/dashboard", include_in_schema=False, dependencies=[Depends(require_csrf)])
LISTS = (("in_progress", "In progress"), ("sent", "Sent"), ("automated", "Automated"), ("test", "Test"))


@router.get("/static/{name}")
def static(name: str) -> Response:
    """The dashboard's stylesheet and script, from the package (nothing from a CDN)."""
    return static_asset(name)


@router.get("/login", response_class=HTMLResponse)
def login_form() -> HTMLResponse:
    return render("login.html", error=None)


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
        return render("login.html", status=401,
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
def index(session: Session = Depends(current_session),
          ctx: AppContext = Depends(app_context)) -> HTMLResponse:
    """The mailing lists of seed 003."""
    lists = [(key, label, reports.list_mailings(ctx.engine, session.account_id, key, limit=20))
             for key, label in LISTS]
    return render("index.html", section="mailings", lists=lists,
                  can_write=has_scope(session.scopes, "mailings:write"))


@router.get("/mailings.csv")
def mailings_export(which: Annotated[str, Query(pattern="^(test|in_progress|automated|sent)$")] = "sent",
                    session: Session = Depends(current_session),
          ctx: AppContext = Depends(app_context)) -> Response:
    """One of the mailing lists as CSV, every mailing in it."""
    def rows() -> Iterator[list[object]]:
        before: int | None = None
        while True:
            page = reports.list_mailings(ctx.engine, session.account_id, which, before_id=before, limit=500)
            for m in page:
                yield [m.id, m.name, m.kind, m.state, m.subject, m.created_at, m.recipients, m.delivered,
                       m.bounced, m.in_progress]
            if len(page) < 500:
                return
            before = page[-1].id

    header = ("id", "name", "kind", "state", "subject", "created_at", "recipients", "delivered", "bounced",
              "in_progress")
    return csv_download(f"mailings-{which}.csv", header, rows())


def _period(days: int, until: date | None, ctx: AppContext) -> tuple[date, date]:
    last = until or ctx.clock().date()
    if last < FIRST_REPORT_DAY:
        raise ProblemError(422, f"dates before {FIRST_REPORT_DAY.isoformat()} are not reported")
    return last - timedelta(days=days - 1), last


@router.get("/bounces", response_class=HTMLResponse)
def bounce_page(days: Annotated[int, Query(ge=1, le=3660)] = 30,
                until: Annotated[date | None, Query()] = None,
                session: Session = Depends(current_session),
          ctx: AppContext = Depends(app_context)) -> HTMLResponse:
    """The bounce report ("Bounce House"): per day over the whole period, per category, reason,
    domain (with each top domain's trend) and provider, and hard-bounce rates per mailing."""
    since, last = _period(days, until, ctx)
    report = reports.bounce_report(ctx.engine, session.account_id, since=since,
                                   until=last, thresholds=reports.report_thresholds(ctx.settings))
    trend = reports.domain_trend(ctx.engine, session.account_id, since=since, until=last)
    chart = charts.stacked_by_day("Bounces per day by category", report.by_day, since, last)
    trend_chart = charts.line_chart("Bounces per day at the top receiving domains", trend, since, last)
    categories = charts.bar_chart("Bounces by category", [
        (charts.category_label(c), n, charts.CATEGORY_COLOURS.get(c, "#5f6368"))
        for c, n in report.by_category.items()], axis_label="bounces")
    query = f"days={days}" + (f"&until={until.isoformat()}" if until else "")
    return render("bounces.html", section="bounces", report=report, chart=chart, trend_chart=trend_chart,
                   categories=categories, days=days, query=query)


@router.get("/bounces.csv")
def bounce_export(days: Annotated[int, Query(ge=1, le=3660)] = 30,
                  until: Annotated[date | None, Query()] = None,
                  by: Annotated[str, Query(pattern="^(day|domain|reason)$")] = "day",
                  session: Session = Depends(current_session),
          ctx: AppContext = Depends(app_context)) -> Response:
    """The bounce report's tables as CSV: per day, category and reason; per domain; per reason."""
    since, last = _period(days, until, ctx)
    report = reports.bounce_report(ctx.engine, session.account_id, since=since, until=last,
                                   thresholds=reports.report_thresholds(ctx.settings), top=1000)
    name = f"bounces-by-{by}-{since.isoformat()}-{last.isoformat()}.csv"
    if by == "domain":
        return csv_download(name, ("domain", "bounces", "hard", "suspected_filtering"),
                            ([d.domain, d.bounced, d.hard, d.suspected_filtering] for d in report.by_domain))
    if by == "reason":
        return csv_download(name, ("reason", "category", "category_name", "bounces", "share", "meaning"),
                            ([r.reason, r.category, charts.category_label(r.category), r.count,
                              charts.percent(r.count, report.total), r.explanation]
                             for r in report.by_reason))
    return csv_download(name, ("day", "category", "category_name", "reason", "bounces"),
                        ([p["day"], p["category"], charts.category_label(int(p["category"])), p["reason"],
                          p["count"]] for p in report.by_day_reason))


@router.get("/evidence", response_class=HTMLResponse)
def evidence_page(email: Annotated[str, Query(min_length=1, max_length=320, pattern=NO_NUL)],
                  mailing_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
                  session: Session = Depends(current_session),
                  ctx: AppContext = Depends(app_context)) -> HTMLResponse:
    """Delivery evidence for a recipient, with text and PDF downloads."""
    report = evidence.collect_evidence(ctx.engine, session.account_id, email, ctx.clock(),
                                       mailing_id=mailing_id)
    return render("evidence.html", section="", report=report, mailing_id=mailing_id)


@router.get("/evidence.{fmt}")
def evidence_download(fmt: str, email: Annotated[str, Query(min_length=1, max_length=320, pattern=NO_NUL)],
                      mailing_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
                      session: Session = Depends(current_session),
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
def pool_page(session: Session = Depends(current_session),
          ctx: AppContext = Depends(app_context)) -> HTMLResponse:
    """The account's pool, IP warm-up, eligibility, throttling actions and reputation events
    (the same service calls and shapes as ``/api/v1/pools``)."""
    now = ctx.clock()
    with ctx.engine.connect() as conn:
        view = account_view.account_pool(conn, session.account_id, now, warmup_limits(ctx.settings))
        verdict = pool_eligibility.evaluate_account(conn, session.account_id, pool_policy(ctx.settings), now)
        applications = list(reversed(pool_eligibility.list_applications(conn, account_id=session.account_id)))
        throttle = [routes_pools.throttle_out(e, now)
                    for e in account_view.account_throttle_log(conn, session.account_id, now, limit=50)]
        events = [routes_pools.event_out(e)
                  for e in account_view.account_events(conn, session.account_id, limit=100)]
    return render("pool.html", section="pool", pool=view, verdict=verdict, applications=applications,
                  throttle=throttle, events=events)


DOMAIN_PATTERN = r"^[A-Za-z0-9.-]+$"


@router.get("/pool/domain", response_class=HTMLResponse)
def domain_check_page(domain: Annotated[str, Query(min_length=1, max_length=253, pattern=DOMAIN_PATTERN)],
                      session: Session = Depends(current_session),
                      ctx: AppContext = Depends(app_context)) -> HTMLResponse:
    """``mailcarrier domains check`` for the account's pool IPs: what sending from DOMAIN needs."""
    settings = ctx.settings
    with ctx.engine.connect() as conn:
        request = sender_checks.domain_check_request(conn, session.account_id, domain,
                                             dkim_selector=settings.delivery.dkim_selector,
                                             bounce_domain=settings.inbound.bounce_domain,
                                             inbound_host=settings.delivery.hostname)
        listings = sender_checks.open_dnsbl_listings(conn, request.sending_ips)
    checks = [*DnsHygiene(resolver_for(settings.dns.nameserver), lifetime=5.0).check_domain(request),
              *listings]
    return render("domain_check.html", section="pool", domain=request.domain, ips=request.sending_ips,
                  checks=checks, failed=bool(failures(checks)))



router.include_router(contact_pages.router)
router.include_router(audience_pages.router)
router.include_router(mailing_pages.router)
