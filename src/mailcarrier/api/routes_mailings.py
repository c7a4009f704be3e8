"""Mailings: create, list, read, test-send, send, pause, resume, cancel; their recipients."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from mailcarrier.api.auth import Principal, require_scopes
from mailcarrier.api.context import AppContext, app_context
from mailcarrier.api.pagination import MAX_ID, Cursor, Limit, Page, page_of
from mailcarrier.api.problems import ProblemError
from mailcarrier.api.validation import NO_NUL, Address
from mailcarrier.services import automation, figures, reports
from mailcarrier.services import mailings as mailing_service
from mailcarrier.services.pools import sender_checks
from mailcarrier.services.test_sends import send_test

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/mailings", tags=["mailings"])
MailingId = Annotated[int, Path(ge=1, le=MAX_ID)]
BUCKET_PATTERN = "^(" + "|".join(figures.BUCKETS) + ")$"


class NewMailing(BaseModel):
    from_address: str = Field(min_length=3, max_length=320, pattern=NO_NUL)
    subject: str = Field(min_length=1, max_length=998, pattern=NO_NUL)
    html: str = Field("", max_length=2_000_000, pattern=NO_NUL)
    text: str = Field("", max_length=2_000_000, pattern=NO_NUL)
    name: str = Field("", max_length=255, pattern=NO_NUL)
    from_name: str = Field("", max_length=255, pattern=NO_NUL)
    reply_to: str | None = Field(None, max_length=320, pattern=NO_NUL)
    kind: str = Field("regular", pattern="^(regular|automated|test)$")
    audience_id: int | None = Field(None, ge=1, le=MAX_ID)


class Mailing(BaseModel):
    id: int
    name: str
    kind: str
    state: str
    subject: str
    from_address: str
    sending_domain: str
    audience_id: int | None
    recipients_total: int
    suppressed_total: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    trigger: str | None = None


class TestSend(BaseModel):
    addresses: list[Address] = Field(min_length=1, max_length=20)


def _out(summary: mailing_service.MailingSummary) -> Mailing:
    return Mailing(**{k: getattr(summary, k) for k in Mailing.model_fields})


@router.post("", response_model=Mailing, status_code=201)
def create_mailing(body: NewMailing, who: Principal = Depends(require_scopes("mailings:write")),
                   ctx: AppContext = Depends(app_context)) -> Mailing:
    """Create a draft; the templates are checked against a sample contact (422 if they fail)."""
    draft = mailing_service.MailingDraft(
        account_id=who.account_id, from_address=body.from_address, subject=body.subject,
        html=body.html, text=body.text, name=body.name, from_name=body.from_name,
        reply_to=body.reply_to, kind=body.kind, audience_id=body.audience_id)
    try:
        new_id = mailing_service.create_mailing(ctx.engine, draft, ctx.clock())
    except ValueError as exc:
        raise ProblemError(422, str(exc)) from exc
    return _out(mailing_service.get_mailing(ctx.engine, who.account_id, new_id))


@router.get("", response_model=Page[reports.MailingSummary])
def list_mailings(which: Annotated[str, Query(pattern="^(test|in_progress|automated|sent)$")] = "sent",
                  cursor: Cursor = 0, limit: Limit = 50,
                  who: Principal = Depends(require_scopes("mailings:read")),
                  ctx: AppContext = Depends(app_context)) -> Page[reports.MailingSummary]:
    """Seed 003's lists (test, in progress, automated, sent), newest first."""
    rows = reports.list_mailings(ctx.engine, who.account_id, which, before_id=cursor or None,
                                 limit=limit + 1)
    return page_of(rows, limit, lambda m: m.id)


@router.get("/{mailing_id}", response_model=Mailing)
def get_mailing(mailing_id: MailingId, who: Principal = Depends(require_scopes("mailings:read")),
                ctx: AppContext = Depends(app_context)) -> Mailing:
    return _out(mailing_service.get_mailing(ctx.engine, who.account_id, mailing_id))


@router.post("/{mailing_id}/send", response_model=Mailing)
def send(mailing_id: MailingId, who: Principal = Depends(require_scopes("mailings:write")),
         ctx: AppContext = Depends(app_context)) -> Mailing:
    """Queue the mailing for its audience's active contacts; 409 unless it is a draft, 403
    (refused by policy) when the account's pool fails sender hygiene for the From domain (the
    detail says what to fix)."""
    return _out(mailing_service.send_mailing(ctx.engine, who.account_id, mailing_id, ctx.clock(),
                                             sender_check=sender_checks.sender_hygiene_gate(ctx.settings)))


@router.post("/{mailing_id}/pause", response_model=Mailing)
def pause(mailing_id: MailingId, who: Principal = Depends(require_scopes("mailings:write")),
          ctx: AppContext = Depends(app_context)) -> Mailing:
    return _out(mailing_service.pause_mailing(ctx.engine, who.account_id, mailing_id, ctx.clock()))


@router.post("/{mailing_id}/resume", response_model=Mailing)
def resume(mailing_id: MailingId, who: Principal = Depends(require_scopes("mailings:write")),
           ctx: AppContext = Depends(app_context)) -> Mailing:
    return _out(mailing_service.resume_mailing(ctx.engine, who.account_id, mailing_id, ctx.clock()))


@router.post("/{mailing_id}/cancel", response_model=Mailing)
def cancel(mailing_id: MailingId, who: Principal = Depends(require_scopes("mailings:write")),
           ctx: AppContext = Depends(app_context)) -> Mailing:
    return _out(mailing_service.cancel_mailing(ctx.engine, who.account_id, mailing_id, ctx.clock()))


@router.post("/{mailing_id}/test-send", response_model=Mailing, status_code=201)
def test_send(mailing_id: MailingId, body: TestSend,
              who: Principal = Depends(require_scopes("mailings:write")),
              ctx: AppContext = Depends(app_context)) -> Mailing:
    """Send the mailing's content as a separate *test* mailing to up to 20 addresses.

    The addresses become the members of the account's "Test recipients" audience (existing
    contacts are left as they are), so the test mailing has a response page and evidence like
    any other, and goes only to the addresses named.
    """
    try:
        summary = send_test(ctx.engine, who.account_id, mailing_id, body.addresses, ctx.clock())
    except ValueError as exc:
        raise ProblemError(422, str(exc)) from exc
    return _out(summary)


class Activation(BaseModel):
    trigger: str = Field(pattern="^(audience_join|api)$", description=(
        "audience_join: a welcome to each contact that joins the mailing's audience from now on; "
        "api: sent only through POST /api/v1/mailings/{id}/trigger"))


class Trigger(BaseModel):
    contact_id: int = Field(ge=1, le=MAX_ID)


class Triggered(BaseModel):
    mailing_id: int
    contact_id: int
    delivery_id: int


@router.post("/{mailing_id}/activate", response_model=Mailing)
def activate(mailing_id: MailingId, body: Activation,
             who: Principal = Depends(require_scopes("mailings:write")),
             ctx: AppContext = Depends(app_context)) -> Mailing:
    """Start an automated draft with its trigger (409 for other kinds or states)."""
    try:
        summary = automation.activate(ctx.engine, who.account_id, mailing_id, body.trigger, ctx.clock(),
                                      sender_check=sender_checks.sender_hygiene_gate(ctx.settings))
    except ValueError as exc:
        raise ProblemError(422, str(exc)) from exc
    return _out(summary)


@router.post("/{mailing_id}/trigger", response_model=Triggered, status_code=201)
def trigger(mailing_id: MailingId, body: Trigger,
            who: Principal = Depends(require_scopes("mailings:write")),
            ctx: AppContext = Depends(app_context)) -> Triggered:
    """Send an active automated mailing to one contact now; 409 when the contact is not
    active or already had it, or the mailing is not an active automation."""
    delivery_id = automation.trigger_for_contact(ctx.engine, who.account_id, mailing_id,
                                                 body.contact_id, ctx.clock())
    return Triggered(mailing_id=mailing_id, contact_id=body.contact_id, delivery_id=delivery_id)


@router.get("/{mailing_id}/recipients", response_model=Page[reports.RecipientRow])
def recipients(mailing_id: MailingId, cursor: Cursor = 0, limit: Limit = 100,
               bucket: Annotated[str | None, Query(pattern=BUCKET_PATTERN)] = None,
               who: Principal = Depends(require_scopes("mailings:read")),
               ctx: AppContext = Depends(app_context)) -> Page[reports.RecipientRow]:
    """The mailing's recipients, optionally one response-page bucket, by delivery id."""
    rows = reports.mailing_recipients(ctx.engine, who.account_id, mailing_id, bucket=bucket,
                                      after_id=cursor, limit=limit + 1)
    return page_of(rows, limit, lambda r: r.delivery_id)
