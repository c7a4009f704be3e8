"""Contacts: the searchable, filterable list (with CSV export), a contact's whole history,
and the audited reactivation.

Every figure comes from :mod:`mailcarrier.services.account_views`, the delivery evidence
service and :mod:`mailcarrier.services.contacts`, as the REST API's do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mailcarrier.api.auth import has_scope
from mailcarrier.api.context import AppContext, app_context
from mailcarrier.api.dashboard import charts
from mailcarrier.api.dashboard.session import Session
from mailcarrier.api.dashboard.web import csv_download, current_session, render, require_scope
from mailcarrier.api.pagination import MAX_ID
from mailcarrier.api.validation import NO_NUL
from mailcarrier.domain.errors import MailcarrierError, NotFoundError
from mailcarrier.domain.reason_help import explain
from mailcarrier.domain.vocabulary import Reason
from mailcarrier.services import account_views as views
from mailcarrier.services import contacts as contact_service
from mailcarrier.services import evidence
from mailcarrier.services.policies import status_policy

__all__ = ["router"]

router = APIRouter()
PAGE_SIZE = 50
#: Reasons a bounce can carry (the others mark non-bounces), for the reason filter.
BOUNCE_REASONS = tuple(r.value for r in Reason if r.value not in ("delivered", "vacation", "feedback"))
CATEGORIES = (1, 2, 3, 4, 9)



@dataclass(frozen=True, slots=True)
class ListQuery:
    """The list's filters as they travel in the URL (so a filtered list can be bookmarked)."""

    q: str = ""
    audience: int | None = None
    status: str = ""
    category: int | None = None
    reason: str = ""
    since: date | None = None
    until: date | None = None
    filtering: bool = False

    def to_segment(self) -> views.ContactSegment:
        return views.ContactSegment(
            status=self.status or None, audience_id=self.audience, search=self.q or None,
            bounce_category=self.category, bounce_reason=self.reason or None,
            bounced_since=datetime.combine(self.since, time(), tzinfo=UTC) if self.since else None,
            # The end of the day given; the calendar's last day has no next one: no bound.
            bounced_until=datetime.combine(self.until + timedelta(days=1), time(), tzinfo=UTC)
            if self.until and self.until < date.max else None,
            suspected_filtering=True if self.filtering else None)

    def params(self, **extra: object) -> str:
        values: dict[str, object] = {"q": self.q, "audience": self.audience, "status": self.status,
                                     "category": self.category, "reason": self.reason,
                                     "since": self.since, "until": self.until,
                                     "filtering": "1" if self.filtering else None, **extra}
        return urlencode({k: v for k, v in values.items() if v not in (None, "")})


def list_query(q: Annotated[str, Query(max_length=320, pattern=NO_NUL)] = "",
               audience: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
               status: Annotated[str, Query(pattern="^(" + "|".join(views.CONTACT_STATUSES) + ")?$")] = "",
               category: Annotated[int | None, Query(ge=1, le=9)] = None,
               reason: Annotated[str, Query(pattern="^(" + "|".join(BOUNCE_REASONS) + ")?$")] = "",
               since: Annotated[date | None, Query()] = None,
               until: Annotated[date | None, Query()] = None,
               filtering: Annotated[bool, Query()] = False) -> ListQuery:
    """FastAPI dependency: the filters of the contact list, validated."""
    return ListQuery(q.strip(), audience, status, category, reason, since, until, filtering)


def _audiences(ctx: AppContext, account_id: int) -> list[views.AudienceView]:
    return views.list_audiences(ctx.engine, account_id, after_id=0, limit=500)[:500]


@router.get("/contacts", response_class=HTMLResponse)
def contact_list(query: ListQuery = Depends(list_query),
                 after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
                 session: Session = Depends(current_session),
                 ctx: AppContext = Depends(app_context)) -> HTMLResponse:
    """The account's contacts, searchable and filterable, 50 a page (keyset by id)."""
    wanted = query.to_segment()
    rows = views.list_contacts(ctx.engine, session.account_id, after_id=after, limit=PAGE_SIZE,
                               segment=wanted)
    total = views.count_contacts(ctx.engine, session.account_id, wanted)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    next_url = f"/dashboard/contacts?{query.params(after=rows[-1].id)}" if more and rows else None
    return render("contacts.html", section="contacts", query=query, rows=rows, total=total, next_url=next_url,
                  first_url=f"/dashboard/contacts?{query.params()}" if after else None,
                  export_url=f"/dashboard/contacts.csv?{query.params()}",
                  audiences=_audiences(ctx, session.account_id), statuses=views.CONTACT_STATUSES,
                  reasons=BOUNCE_REASONS, categories=CATEGORIES)


@router.get("/contacts.csv")
def contact_export(query: ListQuery = Depends(list_query), session: Session = Depends(current_session),
                   ctx: AppContext = Depends(app_context)) -> Response:
    """Every contact matching the filters as CSV (streamed page by page, however many), with the
    seed-001 bounce fields of the REST and CLI exports."""
    wanted = query.to_segment()
    views.count_contacts(ctx.engine, session.account_id, wanted)  # NotFoundError for a foreign audience

    rows = views.export_rows(views.iter_contacts(ctx.engine, session.account_id, wanted))
    return csv_download("contacts.csv", next(rows), rows)


def _contact_page(ctx: AppContext, session: Session, contact_id: int, *, before: int | None = None,
                  status: int = 200, error: str | None = None, flash: str | None = None) -> HTMLResponse:
    contact = views.get_contact(ctx.engine, session.account_id, contact_id)
    history = views.contact_history(ctx.engine, session.account_id, contact_id, before_id=before, limit=100)
    more = len(history) > 100
    history = history[:100]
    report = evidence.collect_evidence(ctx.engine, session.account_id, contact.email, ctx.clock(), limit=50)
    hits = views.contact_hits(ctx.engine, session.account_id, [d.delivery_id for d in report.deliveries])
    return render("contact.html", status=status, section="contacts", contact=contact, history=history,
                  older_url=f"/dashboard/contacts/{contact_id}?before={history[-1].id}" if more else None,
                  deliveries=report.deliveries, hits=hits, error=error, flash=flash,
                  reason_help=explain(contact.last_bounce_reason) if contact.last_bounce_reason else None,
                  can_write=has_scope(session.scopes, "contacts:write"))


@router.get("/contacts/{contact_id}", response_class=HTMLResponse)
def contact_page(contact_id: int, before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
                 reactivated: Annotated[bool, Query()] = False,
                 session: Session = Depends(current_session),
                 ctx: AppContext = Depends(app_context)) -> HTMLResponse:
    """One contact: status, latest bounce, each delivery with its attempts and replies, opens and
    clicks (person or machine), and the activity history with who changed the status and why."""
    if not 1 <= contact_id <= MAX_ID:
        raise NotFoundError(f"no contact {contact_id} in this account")
    return _contact_page(ctx, session, contact_id, before=before,
                         flash="The contact is active again; the reactivation is in its history."
                         if reactivated else None)


HISTORY_COLUMNS = ("id", "occurred_at", "type", "mailing_id", "delivery_id", "category", "category_name",
                   "reason", "reply_code", "enhanced_status", "diagnostic", "remote_mta", "cause", "details")


@router.get("/contacts/{contact_id}/history.csv")
def history_export(contact_id: int, session: Session = Depends(current_session),
                   ctx: AppContext = Depends(app_context)) -> Response:
    """The contact's whole activity history as CSV, newest first."""
    if not 1 <= contact_id <= MAX_ID:
        raise NotFoundError(f"no contact {contact_id} in this account")
    views.get_contact(ctx.engine, session.account_id, contact_id)

    def rows() -> Iterator[list[object]]:
        before: int | None = None
        while True:
            page = views.contact_history(ctx.engine, session.account_id, contact_id, before_id=before,
                                         limit=500)
            for a in page[:500]:
                yield [a.id, a.occurred_at, a.type, a.mailing_id, a.delivery_id, a.category,
                       charts.category_label(a.category) if a.category else "", a.reason, a.reply_code,
                       a.enhanced_status, a.diagnostic, a.remote_mta, a.cause,
                       json.dumps(a.details, sort_keys=True) if a.details else ""]
            if len(page) <= 500:
                return
            before = page[499].id

    return csv_download(f"contact-{contact_id}-history.csv", HISTORY_COLUMNS, rows())


@router.post("/contacts/{contact_id}/reactivate", response_model=None)
def reactivate(contact_id: int, why: Annotated[str, Form(max_length=2000)] = "",
               session: Session = Depends(current_session),
               ctx: AppContext = Depends(app_context)) -> Response:
    """Restore a contact in error to active, recording who (the signed-in key) and why."""
    require_scope(session, "contacts:write")
    if not 1 <= contact_id <= MAX_ID:
        raise NotFoundError(f"no contact {contact_id} in this account")
    views.get_contact(ctx.engine, session.account_id, contact_id)
    reason = " ".join(why.replace("\x00", "").split())
    if not reason:
        return _contact_page(ctx, session, contact_id, status=422,
                             error="Say why the contact may be mailed again (e.g. 'confirmed by phone').")
    who = f"{session.key_name or f'key {session.key_id}'} (dashboard)"
    try:
        contact_service.reactivate(ctx.engine, status_policy(ctx.settings), session.account_id, contact_id,
                                   who=who, why=reason, now=ctx.clock())
    except MailcarrierError as exc:
        return _contact_page(ctx, session, contact_id, status=409, error=str(exc))
    return RedirectResponse(f"/dashboard/contacts/{contact_id}?reactivated=1", status_code=303)

