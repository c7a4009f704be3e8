"""Mailings in the dashboard: create one (HTML and text templates), preview it for a chosen
contact, run the content check, send a test to named addresses, then send, pause, resume or
cancel it; the response page keeps itself current while the mailing is in progress.

The work is done by the same services as the REST API and the CLI: ``services.mailings``,
``services.content_check``, ``services.test_sends`` and ``services.reports``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

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
from mailcarrier.services import account_views as views
from mailcarrier.services import figures, reports
from mailcarrier.services import mailings as mailing_service
from mailcarrier.services.content_check import DEFAULT_URI_ZONES, ContentReport, check_mailing, render_sample
from mailcarrier.services.hygiene import resolver_for
from mailcarrier.services.pools import sender_checks
from mailcarrier.services.test_sends import MAX_TEST_ADDRESSES, send_test

__all__ = ["router"]

router = APIRouter()
BUCKET_LABELS = {"queued": "Queued", "in_progress": "In progress (deferred)", "delivered": "Delivered",
                 "bounced_hard": "Hard bounced", "bounced_soft": "Soft bounced",
                 "suppressed": "Suppressed", "failed": "Failed"}
FUNNEL_COLOURS = {"delivered": "#137333", "bounced_hard": "#b3261e", "bounced_soft": "#8a6d00",
                  "in_progress": "#1a5fb4", "queued": "#5f6368", "suppressed": "#3c4043",
                  "failed": "#202124"}
#: Seconds between refreshes of a response page while its mailing is in progress.
LIVE_EVERY = 3
EXPORT_BUCKETS = "^(all|bounced|" + "|".join(figures.BUCKETS) + ")$"
RECIPIENT_COLUMNS = ("delivery_id", "contact_id", "email", "state", "attempts", "reason", "category",
                     "category_name", "reply_code", "next_attempt_at", "suspected_filtering")
EXAMPLE_HTML = ("<html><body>\n<p>Hello {{ first_name }},</p>\n<p>Our news of the month.</p>\n"
                "<p>Shop Ltd, 1 Market Street, Springfield</p>\n"
                "<p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p>\n</body></html>\n")
EXAMPLE_TEXT = ("Hello {{ first_name }},\n\nOur news of the month.\n\n"
                "Shop Ltd, 1 Market Street, Springfield\nUnsubscribe: {{ unsubscribe_url }}\n")


def _mailing_id(mailing_id: int) -> int:
    if not 1 <= mailing_id <= MAX_ID:
        raise NotFoundError(f"no mailing {mailing_id} in this account")
    return mailing_id


def _can(session: Session, scope: str) -> bool:
    return has_scope(session.scopes, scope)


@router.get("/mailings/new", response_class=HTMLResponse)
def new_mailing_form(session: Session = Depends(current_session),
                     ctx: AppContext = Depends(app_context)) -> HTMLResponse:
    """The form to create a mailing (a draft: nothing is sent until "Send")."""
    require_scope(session, "mailings:write")
    return render("mailing_new.html", section="mailings", error=None,
                  audiences=views.list_audiences(ctx.engine, session.account_id, after_id=0, limit=500),
                  form={"html": EXAMPLE_HTML, "text": EXAMPLE_TEXT})


@router.post("/mailings", response_model=None)
def create_mailing(name: Annotated[str, Form(max_length=255)] = "",
                   audience_id: Annotated[int | None, Form(ge=1, le=MAX_ID)] = None,
                   from_address: Annotated[str, Form(max_length=320)] = "",
                   from_name: Annotated[str, Form(max_length=255)] = "",
                   subject: Annotated[str, Form(max_length=998)] = "",
                   html: Annotated[str, Form(max_length=2_000_000)] = "",
                   text: Annotated[str, Form(max_length=2_000_000)] = "",
                   session: Session = Depends(current_session),
                   ctx: AppContext = Depends(app_context)) -> Response:
    """Create the draft; its templates are rendered for a sample contact first (errors shown)."""
    require_scope(session, "mailings:write")
    form = {"name": name, "audience_id": audience_id, "from_address": from_address, "from_name": from_name,
            "subject": subject, "html": html, "text": text}
    error = None
    if any("\x00" in str(v) for v in form.values() if v is not None):
        error = "The form contains a NUL character."
    elif audience_id is None:
        error = "Choose the audience to send to."
    elif not subject.strip():
        error = "The mailing needs a subject."
    if error is None:
        draft = mailing_service.MailingDraft(
            account_id=session.account_id, from_address=from_address, subject=subject.strip(), html=html,
            text=text, name=name.strip(), from_name=from_name.strip(), audience_id=audience_id)
        try:
            new_id = mailing_service.create_mailing(ctx.engine, draft, ctx.clock())
        except (ValueError, MailcarrierError) as exc:
            error = str(exc)
        else:
            return RedirectResponse(f"/dashboard/mailings/{new_id}", status_code=303)
    return render("mailing_new.html", status=422, section="mailings", error=error, form=form,
                  audiences=views.list_audiences(ctx.engine, session.account_id, after_id=0, limit=500))


def _draft_page(ctx: AppContext, session: Session, mailing_id: int, *, preview_contact: int | None = None,
                check: ContentReport | None = None, status: int = 200, error: str | None = None,
                flash: str | None = None, flash_link: str | None = None,
                addresses: str = "") -> HTMLResponse:
    summary = mailing_service.get_mailing(ctx.engine, session.account_id, mailing_id)
    members = [] if summary.audience_id is None else views.list_contacts(
        ctx.engine, session.account_id, after_id=0, limit=100, audience_id=summary.audience_id)[:100]
    preview: Any = None
    preview_error = None
    try:
        with ctx.engine.connect() as conn:
            preview = render_sample(conn, session.account_id, mailing_id, ctx.clock(),
                                    public_url=ctx.settings.api.public_url,
                                    bounce_domain=ctx.settings.inbound.bounce_domain,
                                    contact_id=preview_contact)
    except (ValueError, MailcarrierError) as exc:
        preview_error = str(exc)
    chosen = next((c for c in members if c.id == preview_contact), None) if preview_contact else None
    if preview_contact and chosen is None:
        chosen = views.get_contact(ctx.engine, session.account_id, preview_contact)
    return render("mailing_draft.html", status=status, section="mailings", mailing=summary, members=members,
                  preview=preview, preview_error=preview_error, chosen=chosen, check=check, error=error,
                  flash=flash, flash_link=flash_link, addresses=addresses, max_test=MAX_TEST_ADDRESSES,
                  can_write=_can(session, "mailings:write"))


def _response_page(ctx: AppContext, session: Session, mailing_id: int, *, status: int = 200,
                   error: str | None = None) -> HTMLResponse:
    page = reports.response_page(ctx.engine, session.account_id, mailing_id,
                                 reports.report_thresholds(ctx.settings))
    bounced = [row for bucket in figures.BOUNCED
               for row in reports.mailing_recipients(ctx.engine, session.account_id, mailing_id,
                                                     bucket=bucket, limit=100)]
    funnel = charts.bar_chart("Delivery funnel (share of recipients)", [
        (BUCKET_LABELS[b], n, FUNNEL_COLOURS[b]) for b, n in page.buckets.items()], total=page.recipients)
    e = page.engagement
    delivered = page.buckets["delivered"]
    engagement = charts.bar_chart("Engagement: people and machines (share of delivered)", [
        ("Opens (people)", e.opens_human, "#137333"), ("Opens (machines)", e.opens_machine, "#5f6368"),
        ("Clicks (people)", e.clicks_human, "#1a5fb4"), ("Clicks (machines)", e.clicks_machine, "#5f6368"),
        ("Unsubscribes", e.unsubscribes, "#a04000"), ("Complaints", e.complaints, "#b3261e")],
        total=delivered, axis_label="contacts")
    bounced_total = page.buckets["bounced_hard"] + page.buckets["bounced_soft"]
    categories = charts.bar_chart("Bounces by category (share of bounces)", [
        (charts.category_label(c), n, charts.CATEGORY_COLOURS.get(c, "#5f6368"))
        for c, n in page.bounced_by_category.items()], total=bounced_total, axis_label="bounced recipients")
    live = page.state == "sending"
    return render("mailing.html", status=status, section="mailings", page=page, labels=BUCKET_LABELS,
                  funnel=funnel, engagement=engagement, categories=categories, bounces=bounced,
                  bounced_total=bounced_total, live=LIVE_EVERY if live else None, error=error,
                  can_write=_can(session, "mailings:write"))


@router.get("/mailings/{mailing_id}", response_class=HTMLResponse)
def mailing_page(mailing_id: int, preview_contact: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
                 preview_email: Annotated[str, Query(max_length=320, pattern=NO_NUL)] = "",
                 session: Session = Depends(current_session),
                 ctx: AppContext = Depends(app_context)) -> HTMLResponse:
    """A draft's preview (for a contact chosen in the list or by address) and checks, or a sent
    mailing's response page (live while it sends)."""
    summary = mailing_service.get_mailing(ctx.engine, session.account_id, _mailing_id(mailing_id))
    if summary.state == "draft":
        if preview_email.strip():
            found = views.list_contacts(ctx.engine, session.account_id, after_id=0, limit=1,
                                        email=preview_email)
            if not found:
                missing = f"No contact {preview_email.strip()!r} in this account to preview for."
                return _draft_page(ctx, session, mailing_id, status=404, error=missing)
            preview_contact = found[0].id
        return _draft_page(ctx, session, mailing_id, preview_contact=preview_contact)
    return _response_page(ctx, session, mailing_id)


@router.post("/mailings/{mailing_id}/check", response_class=HTMLResponse)
def content_check(mailing_id: int, preview_contact: Annotated[int | None, Form(ge=1, le=MAX_ID)] = None,
                  session: Session = Depends(current_session),
                  ctx: AppContext = Depends(app_context)) -> HTMLResponse:
    """The content and consent checks of ``mailcarrier mailings check``, on the draft's sample."""
    require_scope(session, "mailings:read")
    resolver = resolver_for(ctx.settings.dns.nameserver)
    resolver.lifetime = 3.0
    try:
        with ctx.engine.connect() as conn:
            report = check_mailing(conn, session.account_id, _mailing_id(mailing_id), ctx.clock(), spamd=None,
                                   public_url=ctx.settings.api.public_url,
                                   bounce_domain=ctx.settings.inbound.bounce_domain, resolver=resolver,
                                   uri_zones=DEFAULT_URI_ZONES)
    except ValueError as exc:
        return _draft_page(ctx, session, mailing_id, status=422, error=str(exc),
                           preview_contact=preview_contact)
    return _draft_page(ctx, session, mailing_id, check=report, preview_contact=preview_contact)


@router.post("/mailings/{mailing_id}/test-send", response_model=None)
def test_send(mailing_id: int, addresses: Annotated[str, Form(max_length=10_000)] = "",
              preview_contact: Annotated[int | None, Form(ge=1, le=MAX_ID)] = None,
              session: Session = Depends(current_session),
              ctx: AppContext = Depends(app_context)) -> Response:
    """Send the draft's content as a separate test mailing to the named addresses."""
    require_scope(session, "mailings:write")
    named = [a for a in addresses.replace(",", "\n").replace(";", "\n").split() if a]
    try:
        test = send_test(ctx.engine, session.account_id, _mailing_id(mailing_id), named, ctx.clock())
    except (ValueError, MailcarrierError) as exc:
        return _draft_page(ctx, session, mailing_id, status=422, error=str(exc), addresses=addresses,
                           preview_contact=preview_contact)
    return _draft_page(ctx, session, mailing_id, addresses=addresses, preview_contact=preview_contact,
                       flash=f"Test sent to {', '.join(named)} as test mailing {test.id}.",
                       flash_link=f"/dashboard/mailings/{test.id}")


_ACTIONS = {"send": "Send", "pause": "Pause", "resume": "Resume", "cancel": "Cancel"}


@router.post("/mailings/{mailing_id}/{action}", response_model=None)
def mailing_action(mailing_id: int, action: str, session: Session = Depends(current_session),
                   ctx: AppContext = Depends(app_context)) -> Response:
    """Send (queue for the audience's active contacts), pause, resume or cancel."""
    if action not in _ACTIONS:
        raise NotFoundError(f"no action {action!r}; choose send, pause, resume or cancel")
    require_scope(session, "mailings:write")
    account, now = session.account_id, ctx.clock()
    mailing_id = _mailing_id(mailing_id)
    try:
        if action == "send":
            mailing_service.send_mailing(ctx.engine, account, mailing_id, now,
                                         sender_check=sender_checks.sender_hygiene_gate(ctx.settings))
        elif action == "pause":
            mailing_service.pause_mailing(ctx.engine, account, mailing_id, now)
        elif action == "resume":
            mailing_service.resume_mailing(ctx.engine, account, mailing_id, now)
        else:
            mailing_service.cancel_mailing(ctx.engine, account, mailing_id, now)
    except MailcarrierError as exc:
        if isinstance(exc, NotFoundError):
            raise
        summary = mailing_service.get_mailing(ctx.engine, account, mailing_id)
        if summary.state == "draft":
            return _draft_page(ctx, session, mailing_id, status=409, error=str(exc))
        return _response_page(ctx, session, mailing_id, status=409, error=str(exc))
    return RedirectResponse(f"/dashboard/mailings/{mailing_id}", status_code=303)


@router.get("/mailings/{mailing_id}/recipients.csv")
def recipients_export(mailing_id: int,
                      bucket: Annotated[str, Query(pattern=EXPORT_BUCKETS)] = "bounced",
                      session: Session = Depends(current_session),
                      ctx: AppContext = Depends(app_context)) -> Response:
    """The mailing's recipients as CSV: ``bounced`` (hard and soft, the default), one bucket, or all."""
    mailing_id = _mailing_id(mailing_id)
    mailing_service.get_mailing(ctx.engine, session.account_id, mailing_id)
    buckets: tuple[str | None, ...] = figures.BOUNCED if bucket == "bounced" else (
        (None,) if bucket == "all" else (bucket,))

    def rows() -> Iterator[list[object]]:
        for one in buckets:
            after = 0
            while True:
                page = reports.mailing_recipients(ctx.engine, session.account_id, mailing_id, bucket=one,
                                                  after_id=after, limit=1000)
                for r in page:
                    yield [r.delivery_id, r.contact_id, r.email, r.state, r.attempt_count, r.reason,
                           r.category, charts.category_label(r.category) if r.category else "", r.reply_code,
                           r.next_attempt_at, r.suspected_filtering]
                if len(page) < 1000:
                    break
                after = page[-1].delivery_id

    return csv_download(f"mailing-{mailing_id}-{bucket}.csv", RECIPIENT_COLUMNS, rows())
