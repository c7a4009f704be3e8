"""Audiences: list, create, read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from mailcarrier.api.auth import Principal, require_scopes
from mailcarrier.api.context import AppContext, app_context
from mailcarrier.api.pagination import MAX_ID, Cursor, Limit, Page, page_of
from mailcarrier.api.validation import NO_NUL
from mailcarrier.services import account_views as views
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.engine import write_transaction

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/audiences", tags=["audiences"])
AudienceId = Annotated[int, Path(ge=1, le=MAX_ID)]


class NewAudience(BaseModel):
    name: str = Field(min_length=1, max_length=255, pattern=NO_NUL)
    description: str = Field("", max_length=2000, pattern=NO_NUL)


@router.get("", response_model=Page[views.AudienceView])
def list_audiences(cursor: Cursor = 0, limit: Limit = 50,
                   who: Principal = Depends(require_scopes("audiences:read")),
                   ctx: AppContext = Depends(app_context)) -> Page[views.AudienceView]:
    """The account's audiences with their member counts."""
    rows = views.list_audiences(ctx.engine, who.account_id, after_id=cursor, limit=limit)
    return page_of(rows, limit, lambda a: a.id)


@router.post("", response_model=views.AudienceView, status_code=201)
def create_audience(body: NewAudience, who: Principal = Depends(require_scopes("audiences:write")),
                    ctx: AppContext = Depends(app_context)) -> views.AudienceView:
    """Create an audience; 409 if the name is taken in this account, 422 if it is blank (both
    domain errors, answered with their kind's problem type)."""
    with write_transaction(ctx.engine) as conn:
        made = account_repo.create_audience(conn, who.account_id, body.name.strip(), ctx.clock(),
                                            body.description)
    return views.get_audience(ctx.engine, who.account_id, made.id)


@router.get("/{audience_id}", response_model=views.AudienceView)
def get_audience(audience_id: AudienceId, who: Principal = Depends(require_scopes("audiences:read")),
                 ctx: AppContext = Depends(app_context)) -> views.AudienceView:
    return views.get_audience(ctx.engine, who.account_id, audience_id)
