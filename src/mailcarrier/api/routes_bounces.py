"""Inbound bounces that need a person: those matched by recipient address alone (issue 17).

A bounce without our signed VERP address or one of our Message-IDs could have been written by
anyone; it changes nothing and is listed here, with the reporting host's address and HELO
name, so the account can see who claims its subscribers bounce.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from mailcarrier.api.auth import Principal, require_scopes
from mailcarrier.api.context import AppContext, app_context
from mailcarrier.api.pagination import Cursor, Limit, Page, page_of
from mailcarrier.services import inbound

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/bounces", tags=["reports"])


@router.get("/unverified", response_model=Page[inbound.UnverifiedBounce])
def unverified(cursor: Cursor = 0, limit: Limit = 50,
               who: Principal = Depends(require_scopes("reports:read")),
               ctx: AppContext = Depends(app_context)) -> Page[inbound.UnverifiedBounce]:
    """Bounces matched by recipient address alone, newest first: shown for review, never applied."""
    rows = inbound.unverified_bounces(ctx.engine, who.account_id, before_id=cursor or None,
                                      limit=limit + 1)
    return page_of(rows, limit, lambda b: b.id)
