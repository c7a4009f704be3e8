"""Public tracking endpoints: open pixel, click redirect, unsubscribe page and one-click POST.

The pixel and redirect answer from memory (token check, cached link) and hand the hit to
the background writer; only a link not yet cached costs one indexed read. Forged, altered
and expired tokens get a 404 and their hit is stored unattributed. ``GET /u/...`` only
shows a page (scanners fetch every GET); the opt-out happens on ``POST`` (RFC 8058).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from mailcarrier.api.context import AppContext, app_context
from mailcarrier.api.pages import page
from mailcarrier.api.problems import problem_response
from mailcarrier.api.tracking_state import TrackingState, tracking_state
from mailcarrier.domain.tracking import TokenPurpose, TrackingToken, decode_token
from mailcarrier.services import consent
from mailcarrier.services.tracking.hits import RawHit, stored_headers

__all__ = ["router"]

router = APIRouter(tags=["tracking"])

#: A transparent 1x1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate, private", "Pragma": "no-cache"}
_REDIRECT_HEADERS = {**_NO_CACHE, "Referrer-Policy": "no-referrer"}


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "0.0.0.0"


def _decode(state: TrackingState, context: AppContext, text: str,
            purpose: TokenPurpose) -> TrackingToken | None:
    return decode_token(text, secrets=state.keys.secrets, purpose=purpose,
                        now=int(context.clock().timestamp()))


def _hit(kind: str, request: Request, context: AppContext,
         token: TrackingToken | None) -> RawHit:
    headers: Mapping[str, str] = request.headers
    return RawHit(kind=kind, at=context.clock(), method=request.method, ip=client_ip(request),
                  user_agent=headers.get("user-agent", ""), headers=stored_headers(headers),
                  token=token)


async def open_pixel(request: Request) -> Response:
    """The open pixel (a plain Starlette endpoint: no dependency injection on the hot path)."""
    context: AppContext = request.app.state.context
    state: TrackingState = request.app.state.tracking
    decoded = _decode(state, context, request.path_params["token"], TokenPurpose.OPEN)
    state.recorder.submit(_hit("open", request, context, decoded))
    if decoded is None:
        return problem_response(404, "unknown tracking link", headers=_NO_CACHE)
    return Response(PIXEL, media_type="image/gif", headers=_NO_CACHE)


async def click(request: Request) -> Response:
    """302 to the link's stored destination (a plain Starlette endpoint, like the pixel)."""
    context: AppContext = request.app.state.context
    state: TrackingState = request.app.state.tracking
    decoded = _decode(state, context, request.path_params["token"], TokenPurpose.CLICK)
    destination = None
    if decoded is not None:
        destination = state.links.cached(decoded)
        if destination is None:
            destination = await run_in_threadpool(state.links.lookup, decoded)
    if decoded is None or destination is None:
        state.recorder.submit(_hit("click", request, context, None))
        return problem_response(404, "unknown tracking link", headers=_NO_CACHE)
    state.recorder.submit(_hit("click", request, context, decoded))
    return Response(status_code=302, headers={"Location": destination, **_REDIRECT_HEADERS})


router.add_route("/o/{token}", open_pixel, methods=["GET"], include_in_schema=False)
router.add_route("/c/{token}", click, methods=["GET", "HEAD"], include_in_schema=False)


@router.get("/u/{token}", include_in_schema=False)
def unsubscribe_page(token: str, request: Request, context: AppContext = Depends(app_context),
                     state: TrackingState = Depends(tracking_state)) -> Response:
    """Shows what a POST would do; changes nothing."""
    target = consent.unsubscribe_target(context.engine, state.keys, token, context.clock())
    if target is None:
        return page("message.html", 404, title="Link not valid",
                    message="This unsubscribe link is not valid or has expired.")
    return page("unsubscribe.html", title="Unsubscribe", email=target.masked_email,
                already=target.already_opted_out, action=request.url.path)


_ONE_CLICK_MAX = 64 * 1024  #: larger bodies are not a one-click request


async def _is_one_click(request: Request) -> bool:
    """Whether the POST body carries ``List-Unsubscribe=One-Click`` (RFC 8058 section 3.1),
    form-urlencoded or multipart/form-data."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=0, max_fields=32)
        except Exception:  # malformed multipart: not a one-click request
            return False
        return form.get("List-Unsubscribe") == "One-Click"
    body = await request.body()
    if len(body) > _ONE_CLICK_MAX:
        return False
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return fields.get("List-Unsubscribe") == ["One-Click"]


@router.post("/u/{token}", include_in_schema=False)
async def unsubscribe(token: str, request: Request, context: AppContext = Depends(app_context),
                      state: TrackingState = Depends(tracking_state)) -> Response:
    """RFC 8058 one-click (and the page's button, which posts the same field): opt out now,
    idempotently, 200, no redirect. A POST without ``List-Unsubscribe=One-Click`` changes nothing."""
    if not await _is_one_click(request):
        target = await run_in_threadpool(consent.unsubscribe_target, context.engine, state.keys, token,
                                         context.clock())
        if target is None:
            return page("message.html", 404, title="Link not valid",
                        message="This unsubscribe link is not valid or has expired.")
        return page("message.html", 400, title="Not unsubscribed",
                    message="An unsubscribe request must carry List-Unsubscribe=One-Click (RFC 8058). "
                            "Open this link in a browser and use the Unsubscribe button.")
    outcome = await run_in_threadpool(
        consent.opt_out_by_token, context.engine, state.policy, state.keys, token, context.clock(),
        ip=client_ip(request), user_agent=request.headers.get("user-agent"), via="one-click")
    if outcome is None:
        return page("message.html", 404, title="Link not valid",
                    message="This unsubscribe link is not valid or has expired.")
    return page("message.html", title="Unsubscribed",
                message="You are unsubscribed and will not receive further messages.")
