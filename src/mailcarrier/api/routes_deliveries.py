"""Deliveries with their attempts, and the bounce log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from mailcarrier.api.auth import Principal, require_scopes
from mailcarrier.api.context import AppContext, app_context
from mailcarrier.api.pagination import MAX_ID, Cursor, Limit, Page, page_of
from mailcarrier.services import account_views as views

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["deliveries"])


@router.get("/deliveries/{delivery_id}", response_model=views.DeliveryView)
def get_delivery(delivery_id: Annotated[int, Path(ge=1, le=MAX_ID)],
                 who: Principal = Depends(require_scopes("deliveries:read")),
                 ctx: AppContext = Depends(app_context)) -> views.DeliveryView:
    """One recipient of one mailing with every attempt (timestamps, IPs, MX, TLS, reply, queue id)."""
    return views.get_delivery(ctx.engine, who.account_id, delivery_id)


@router.get("/bounces", response_model=Page[views.BounceView], tags=["bounces"])
def list_bounces(cursor: Cursor = 0, limit: Limit = 100,
                 category: Annotated[int | None, Query(ge=1, le=9)] = None,
                 mailing_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
                 contact_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
                 who: Principal = Depends(require_scopes("bounces:read")),
                 ctx: AppContext = Depends(app_context)) -> Page[views.BounceView]:
    """Hard and soft bounces with reason, category, reply and a one-line explanation."""
    rows = views.list_bounces(ctx.engine, who.account_id, after_id=cursor, limit=limit,
                              category=category, mailing_id=mailing_id, contact_id=contact_id)
    return page_of(rows, limit, lambda b: b.id)
