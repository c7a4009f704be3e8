"""Public double opt-in: subscription form (HTML form or JSON) and confirmation link.

Bots are turned away by a honeypot field (``website``, hidden from people) and a per-address
rate limit. The confirmation link opens a page whose button confirms (a POST), so a
security scanner fetching the link cannot subscribe anyone.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from mailcarrier.api.context import AppContext, app_context
from mailcarrier.api.pages import page
from mailcarrier.api.problems import ProblemError
from mailcarrier.api.routes_tracking import client_ip
from mailcarrier.api.tracking_state import TrackingState, tracking_state
from mailcarrier.services import consent

__all__ = ["router"]

router = APIRouter(tags=["consent"])
HONEYPOT = "website"
_FIELDS = ("email", "first_name", "last_name", "audience", HONEYPOT)
_MAX_FIELD = 320


async def _submitted(request: Request) -> tuple[dict[str, str], bool]:
    """The submitted fields as strings, and whether the client speaks JSON."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw: Any
    if content_type == "application/json":
        try:
            raw = await request.json()
        except ValueError as exc:
            raise ProblemError(400, "the body is not valid JSON") from exc
        if not isinstance(raw, dict):
            raise ProblemError(422, "expected a JSON object")
        is_json = True
    elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raw = dict(await request.form())
        is_json = False
    else:
        raise ProblemError(415, "send a form (application/x-www-form-urlencoded) or JSON")
    fields: dict[str, str] = {}
    for name in _FIELDS:
        value = raw.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ProblemError(422, f"field {name!r} must be a string")
        fields[name] = value.strip()[:_MAX_FIELD]
    return fields, is_json


@router.get("/subscribe/{account}", include_in_schema=False)
def subscribe_form(account: str, request: Request, audience: str | None = None) -> Response:
    return page("subscribe.html", title="Subscribe", action=request.url.path, audience=audience)


@router.post("/subscribe/{account}", status_code=202, tags=["consent"])
async def subscribe(account: str, request: Request, context: AppContext = Depends(app_context),
                    state: TrackingState = Depends(tracking_state)) -> Response:
    """Subscribe an address: it stays pending until the emailed link is confirmed."""
    ip = client_ip(request)
    now = context.clock()
    if not state.subscribe_limiter.allow(ip, now.timestamp()):
        wait = state.subscribe_limiter.retry_after(ip, now.timestamp())
        raise ProblemError(429, "too many subscription requests from this address; try later",
                           headers={"Retry-After": str(wait)})
    fields, is_json = await _submitted(request)
    if fields.get(HONEYPOT):
        raise ProblemError(400, "submission refused")
    if not fields.get("email"):
        raise ProblemError(422, "an email address is required")
    wanted = consent.SubscriptionRequest(
        email=fields["email"], ip=ip, user_agent=request.headers.get("user-agent", ""),
        first_name=fields.get("first_name", ""), last_name=fields.get("last_name", ""),
        audience=fields.get("audience") or None)
    try:
        await run_in_threadpool(consent.request_subscription, context.engine, context.settings,
                                state.keys, account, wanted, now)
    except consent.InvalidSubscriptionError as exc:
        raise ProblemError(422, str(exc)) from exc
    # The same answer whether or not the address was already subscribed: no enumeration.
    message = "Check your inbox: we sent you a link to confirm the subscription."
    if is_json:
        return JSONResponse({"status": "pending", "detail": message}, status_code=202)
    return page("message.html", 202, title="Almost done", message=message)


@router.get("/confirm/{token}", include_in_schema=False)
def confirm_page(token: str, request: Request, context: AppContext = Depends(app_context),
                 state: TrackingState = Depends(tracking_state)) -> Response:
    """Shows the confirmation button; changes nothing."""
    found = consent.subscription_for_token(context.engine, state.keys, token, context.clock())
    if found is None:
        return page("message.html", 404, title="Link not valid",
                    message="This confirmation link is not valid or has expired.")
    email, already = found
    return page("confirm.html", title="Confirm your subscription", email=email, already=already,
                action=request.url.path)


@router.post("/confirm/{token}", include_in_schema=False)
def confirm(token: str, request: Request, context: AppContext = Depends(app_context),
            state: TrackingState = Depends(tracking_state)) -> Response:
    outcome = consent.confirm_subscription(context.engine, state.keys, token, context.clock(),
                                           ip=client_ip(request),
                                           user_agent=request.headers.get("user-agent", ""))
    if outcome is None:
        return page("message.html", 404, title="Link not valid",
                    message="This confirmation link is not valid or has expired.")
    return page("message.html", title="Subscribed", message="Thank you: your subscription is confirmed.")
