"""Reports: the response page of a mailing and the bounce report."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from mailcarrier.api.auth import Principal, require_scopes
from mailcarrier.api.context import AppContext, app_context
from mailcarrier.api.pagination import MAX_ID
from mailcarrier.api.problems import ProblemError
from mailcarrier.services import reports

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])
MAX_PERIOD_DAYS = 3660




@router.get("/mailings/{mailing_id}", response_model=reports.ResponsePage)
def response_page(mailing_id: Annotated[int, Path(ge=1, le=MAX_ID)],
                  who: Principal = Depends(require_scopes("reports:read")),
                  ctx: AppContext = Depends(app_context)) -> reports.ResponsePage:
    """Seed 003's response page: every recipient in exactly one bucket, bounces by category."""
    return reports.response_page(ctx.engine, who.account_id, mailing_id, thresholds(ctx))


#: No mail predates this; it also keeps ``until - 30 days`` inside the date range.
FIRST_REPORT_DAY = date(1970, 1, 1)


@router.get("/bounces", response_model=reports.BounceReport)
def bounce_report(since: Annotated[date | None, Query(description="First day (UTC); default -30 d")] = None,
                  until: Annotated[date | None, Query(description="Last day (UTC); default today")] = None,
                  who: Principal = Depends(require_scopes("reports:read")),
                  ctx: AppContext = Depends(app_context)) -> reports.BounceReport:
    """Seed 001's "Bounce House" for the period."""
    last = until or ctx.clock().date()
    if last < FIRST_REPORT_DAY or (since is not None and since < FIRST_REPORT_DAY):
        raise ProblemError(422, f"dates before {FIRST_REPORT_DAY.isoformat()} are not reported")
    first = since or last - timedelta(days=30)
    if last < first or (last - first).days > MAX_PERIOD_DAYS:
        raise ProblemError(422, "the period must start before it ends and span at most ten years")
    return reports.bounce_report(ctx.engine, who.account_id, since=first, until=last,
                                 thresholds=thresholds(ctx))


def thresholds(ctx: AppContext) -> reports.Thresholds:
    """Report thresholds from the operator's settings."""
    return reports.report_thresholds(ctx.settings)
