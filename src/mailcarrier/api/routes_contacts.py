"""Contacts: list and filter, status, activity history, reactivation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, Field, TypeAdapter

from mailcarrier.api.auth import Principal, require_scopes
from mailcarrier.api.context import AppContext, app_context
from mailcarrier.api.pagination import MAX_ID, Cursor, Limit, Page, page_of
from mailcarrier.api.problems import ProblemError
from mailcarrier.api.validation import NO_NUL
from mailcarrier.services import account_views as views
from mailcarrier.services import contacts as contact_service
from mailcarrier.services.policies import status_policy

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/contacts", tags=["contacts"])
ContactId = Annotated[int, Path(ge=1, le=MAX_ID)]
_CONTACT_JSON = TypeAdapter(views.ContactView)


class Reactivation(BaseModel):
    who: str = Field(min_length=1, max_length=255, pattern=NO_NUL)
    why: str = Field(min_length=1, max_length=2000, pattern=NO_NUL)


class StatusChange(BaseModel):
    contact: views.ContactView
    before: str
    after: str


@router.get("", response_model=Page[views.ContactView])
def list_contacts(cursor: Cursor = 0, limit: Limit = 50,
                  status: Annotated[str | None, Query(pattern="^(active|error|opted_out|pending)$")] = None,
                  audience_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
                  email: Annotated[str | None, Query(max_length=320, pattern=NO_NUL)] = None,
                  who: Principal = Depends(require_scopes("contacts:read")),
                  ctx: AppContext = Depends(app_context)) -> Page[views.ContactView]:
    """The account's contacts, optionally by status, audience or exact address."""
    rows = views.list_contacts(ctx.engine, who.account_id, after_id=cursor, limit=limit,
                               status=status, audience_id=audience_id, email=email)
    return page_of(rows, limit, lambda c: c.id)


@router.get("/{contact_id}", response_model=views.ContactView)
def get_contact(contact_id: ContactId, who: Principal = Depends(require_scopes("contacts:read")),
                ctx: AppContext = Depends(app_context)) -> Response:
    """A contact's status, counters and latest bounce (seed 001's fields)."""
    # The hottest read of the API: serialised once by a prepared adapter, not re-validated.
    contact = views.get_contact(ctx.engine, who.account_id, contact_id)
    return Response(_CONTACT_JSON.dump_json(contact), media_type="application/json")


@router.get("/{contact_id}/history", response_model=Page[views.ActivityView])
def contact_history(contact_id: ContactId, cursor: Cursor = 0, limit: Limit = 50,
                    type: Annotated[str | None, Query(max_length=32, pattern=NO_NUL)] = None,
                    category: Annotated[int | None, Query(ge=1, le=9)] = None,
                    who: Principal = Depends(require_scopes("contacts:read")),
                    ctx: AppContext = Depends(app_context)) -> Page[views.ActivityView]:
    """The contact's activity history, newest first; ``cursor`` is the ``next_cursor`` returned."""
    rows = views.contact_history(ctx.engine, who.account_id, contact_id, before_id=cursor or None,
                                 limit=limit, types=(type,) if type else (), category=category)
    return page_of(rows, limit, lambda a: a.id)


@router.post("/{contact_id}/reactivate", response_model=StatusChange)
def reactivate(contact_id: ContactId, body: Reactivation,
               who: Principal = Depends(require_scopes("contacts:write")),
               ctx: AppContext = Depends(app_context)) -> StatusChange:
    """Restore a contact in error to active, recording who and why; 409 for opted-out contacts."""
    views.get_contact(ctx.engine, who.account_id, contact_id)
    try:
        transition = contact_service.reactivate(ctx.engine, status_policy(ctx.settings), who.account_id,
                                                contact_id, who=body.who, why=body.why, now=ctx.clock())
    except ValueError as exc:  # blank who/why
        raise ProblemError(422, str(exc)) from exc
    return StatusChange(contact=views.get_contact(ctx.engine, who.account_id, contact_id),
                        before=transition.before.status.value, after=transition.after.status.value)
