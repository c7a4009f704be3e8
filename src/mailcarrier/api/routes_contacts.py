"""Contacts: list and filter (seed 001's bounce segments, CSV export), status, activity
history, reactivation, and decisions on contacts held as suspected B2B filtering."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import StreamingResponse
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


def segment(status: Annotated[str | None, Query(pattern="^(active|error|opted_out|pending)$")] = None,
            audience_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
            email: Annotated[str | None, Query(max_length=320, pattern=NO_NUL)] = None,
            bounce_category: Annotated[int | None, Query(description="Latest bounce category.",
                                                         ge=1, le=9)] = None,
            bounce_reason: Annotated[str | None, Query(description="Latest bounce reason, e.g. userunknown.",
                                                       max_length=64, pattern="^[a-z_]+$")] = None,
            bounced_since: Annotated[datetime | None, Query(description="Latest bounce at or after.")] = None,
            bounced_until: Annotated[datetime | None, Query(description="Latest bounce before.")] = None,
            email_invalid: bool | None = None,
            suspected_filtering: Annotated[bool | None, Query(
                description="Held as suspected B2B filtering.")] = None) -> views.ContactSegment:
    """Seed 001's filters on bounce data, shared by the list and the export."""
    since, until = (_utc(name, when) for name, when in (("bounced_since", bounced_since),
                                                        ("bounced_until", bounced_until)))
    return views.ContactSegment(status, audience_id, email, bounce_category, bounce_reason,
                                since, until, email_invalid, suspected_filtering)


def _utc(name: str, when: datetime | None) -> datetime | None:
    """``when`` in UTC, as times are stored; a time without a zone, or one that leaves the
    calendar once in UTC (0001-01-01T00:20+01:02), is refused rather than sent to the database."""
    if when is None:
        return None
    if when.tzinfo is None:
        raise ProblemError(422, f"{name} needs a time zone (e.g. ...Z)")
    try:
        return when.astimezone(UTC)
    except OverflowError:
        raise ProblemError(422, f"{name} is out of range once in UTC") from None


@router.get("", response_model=Page[views.ContactView])
def list_contacts(cursor: Cursor = 0, limit: Limit = 50,
                  seg: views.ContactSegment = Depends(segment),
                  who: Principal = Depends(require_scopes("contacts:read")),
                  ctx: AppContext = Depends(app_context)) -> Page[views.ContactView]:
    """The account's contacts, by status, audience, address and latest-bounce data."""
    rows = views.list_contacts(ctx.engine, who.account_id, after_id=cursor, limit=limit, segment=seg)
    return page_of(rows, limit, lambda c: c.id)


@router.get("/export.csv", response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}}}})
def export_contacts(seg: views.ContactSegment = Depends(segment),
                    who: Principal = Depends(require_scopes("contacts:read")),
                    ctx: AppContext = Depends(app_context)) -> StreamingResponse:
    """The whole segment as CSV (address, status, flags and latest-bounce fields), streamed."""
    if seg.audience_id is not None:
        views.get_audience(ctx.engine, who.account_id, seg.audience_id)  # 404 before streaming

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in views.export_rows(views.iter_contacts(ctx.engine, who.account_id, seg)):
            writer.writerow(row)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()

    return StreamingResponse(lines(), media_type="text/csv",
                             headers={"Content-Disposition": 'attachment; filename="contacts.csv"'})


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


class FilteringDecision(BaseModel):
    who: str = Field(min_length=1, max_length=255, pattern=NO_NUL)
    why: str = Field(min_length=1, max_length=2000, pattern=NO_NUL)


@router.post("/{contact_id}/filtering/confirm", response_model=StatusChange)
def confirm_filtering(contact_id: ContactId, body: FilteringDecision,
                      who: Principal = Depends(require_scopes("contacts:write")),
                      ctx: AppContext = Depends(app_context)) -> StatusChange:
    """A contact held as suspected filtering really is invalid: error + email_invalid;
    409 when the contact is not held."""
    return _decide(contact_id, body, who, ctx, confirm=True)


@router.post("/{contact_id}/filtering/release", response_model=StatusChange)
def release_filtering(contact_id: ContactId, body: FilteringDecision,
                      who: Principal = Depends(require_scopes("contacts:write")),
                      ctx: AppContext = Depends(app_context)) -> StatusChange:
    """A contact held as suspected filtering is a real address: active, counters reset;
    409 when the contact is not held."""
    return _decide(contact_id, body, who, ctx, confirm=False)


def _decide(contact_id: int, body: FilteringDecision, who: Principal, ctx: AppContext, *,
            confirm: bool) -> StatusChange:
    views.get_contact(ctx.engine, who.account_id, contact_id)
    act = contact_service.confirm_filtering if confirm else contact_service.release_filtering
    try:
        transition = act(ctx.engine, status_policy(ctx.settings), who.account_id, contact_id,
                         who=body.who, why=body.why, now=ctx.clock())
    except ValueError as exc:
        raise ProblemError(422, str(exc)) from exc
    return StatusChange(contact=views.get_contact(ctx.engine, who.account_id, contact_id),
                        before=transition.before.status.value, after=transition.after.status.value)
