"""Webhook endpoints: register (the secret is shown once), list, read, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, Field, StringConstraints

from mailcarrier.api.auth import Principal, require_scopes
from mailcarrier.api.context import AppContext, app_context
from mailcarrier.api.pagination import MAX_ID, Cursor, Limit, Page, page_of
from mailcarrier.api.problems import ProblemError
from mailcarrier.api.validation import NO_NUL
from mailcarrier.services import webhooks
from mailcarrier.services.policies import webhook_target_policy

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])
EndpointId = Annotated[int, Path(ge=1, le=MAX_ID)]
EventName = Annotated[str, StringConstraints(max_length=32, pattern=NO_NUL)]


class NewEndpoint(BaseModel):
    url: str = Field(min_length=8, max_length=2048, pattern=NO_NUL)
    events: list[EventName] = Field(min_length=1, max_length=len(webhooks.EVENT_TYPES) + 1,
                              description="Event types, or ['*'] for all: " + ", ".join(webhooks.EVENT_TYPES))
    description: str = Field("", max_length=2000, pattern=NO_NUL)


@router.post("", response_model=webhooks.Endpoint, status_code=201)
def create(body: NewEndpoint, who: Principal = Depends(require_scopes("webhooks:write")),
           ctx: AppContext = Depends(app_context)) -> webhooks.Endpoint:
    """Register an endpoint; keep the returned ``secret`` to verify signatures."""
    try:
        return webhooks.create_endpoint(ctx.engine, who.account_id, body.url, body.events,
                                        ctx.clock(), policy=webhook_target_policy(ctx.settings),
                                        description=body.description)
    except ValueError as exc:
        raise ProblemError(422, str(exc)) from exc


@router.get("", response_model=Page[webhooks.Endpoint])
def list_endpoints(cursor: Cursor = 0, limit: Limit = 50,
                   who: Principal = Depends(require_scopes("webhooks:read")),
                   ctx: AppContext = Depends(app_context)) -> Page[webhooks.Endpoint]:
    rows = webhooks.list_endpoints(ctx.engine, who.account_id, after_id=cursor, limit=limit + 1)
    return page_of(rows, limit, lambda e: e.id)


@router.get("/{endpoint_id}", response_model=webhooks.Endpoint)
def get_endpoint(endpoint_id: EndpointId, who: Principal = Depends(require_scopes("webhooks:read")),
                 ctx: AppContext = Depends(app_context)) -> webhooks.Endpoint:
    return webhooks.get_endpoint(ctx.engine, who.account_id, endpoint_id)


@router.delete("/{endpoint_id}", status_code=204)
def delete(endpoint_id: EndpointId, who: Principal = Depends(require_scopes("webhooks:write")),
           ctx: AppContext = Depends(app_context)) -> Response:
    webhooks.delete_endpoint(ctx.engine, who.account_id, endpoint_id)
    return Response(status_code=204)
