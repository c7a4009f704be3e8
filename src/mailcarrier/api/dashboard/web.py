"""What every dashboard page shares: templates, the signed-in session, scope checks,
CSV downloads and the static assets (one stylesheet, one script) shipped in the package.

Pages are server-rendered and work without JavaScript; the one script only keeps a page
current while a mailing sends or an import runs. Nothing is loaded from another origin.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from importlib import resources
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from mailcarrier.api.auth import has_scope
from mailcarrier.api.context import AppContext, app_context
from mailcarrier.api.dashboard import charts
from mailcarrier.api.dashboard.security import csrf_field
from mailcarrier.api.dashboard.session import COOKIE, Session, load_session
from mailcarrier.api.problems import ProblemError

__all__ = ["csv_download", "current_session", "render", "require_scope", "static_asset"]

_env = Environment(loader=PackageLoader("mailcarrier.api.dashboard", "templates"),
                   autoescape=select_autoescape(["html"]))
STATUS_LABELS = {"active": "Active", "error": "Error", "opted_out": "Opt-out", "pending": "Pending",
                 "suspected_filtering": "Suspected filtering"}
VERDICT_LABELS = {"human": "person", "machine": "machine (scanner)", "apple_mpp": "machine (Apple MPP)",
                  "privacy_proxy": "machine (privacy proxy)", None: "not judged yet"}


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "–"


_env.globals.update(csrf_field=csrf_field, category_label=charts.category_label, percent=charts.percent,
                    status_labels=STATUS_LABELS, verdict_labels=VERDICT_LABELS)
_env.filters["when"] = _when


def render(name: str, status: int = 200, **values: Any) -> HTMLResponse:
    """A page from ``templates/``; pages that must not be cached say so themselves."""
    return HTMLResponse(_env.get_template(name).render(**values), status_code=status)


def current_session(request: Request, ctx: AppContext = Depends(app_context)) -> Session:
    """FastAPI dependency: the signed-in session, or a redirect to the login form."""
    with ctx.engine.connect() as conn:
        session = load_session(conn, ctx.settings.resolved_secret(), request.cookies.get(COOKIE), ctx.clock())
    if session is None:  # an anonymous visitor is sent to the login form
        raise HTTPException(status_code=303, headers={"Location": "/dashboard/login"})
    return session


def require_scope(session: Session, scope: str) -> None:
    """403 unless the key that signed in holds ``scope`` (write pages need the write scope)."""
    if not has_scope(session.scopes, scope):
        raise ProblemError(403, f"the API key you signed in with lacks the {scope} scope; "
                                f"sign in with a key that has it")


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    """A CSV cell that a spreadsheet shows as text: a leading =, +, -, @ would start a formula."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    if text.startswith(_FORMULA_START) and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_download(filename: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Response:
    """Stream ``rows`` as a CSV attachment (UTF-8 with a BOM, as spreadsheets expect)."""
    def lines() -> Iterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        buffer.write("\ufeff")
        writer.writerow(header)
        for count, row in enumerate(rows, 1):
            writer.writerow([_cell(v) for v in row])
            if count % 500 == 0:
                yield buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue().encode()

    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                      "Cache-Control": "no-store"})


_ASSETS = {"app.css": "text/css; charset=utf-8", "live.js": "text/javascript; charset=utf-8"}


def static_asset(name: str) -> Response:
    """One of the dashboard's own assets, read from the installed package."""
    if name not in _ASSETS:
        raise HTTPException(status_code=404)
    body = resources.files("mailcarrier.api.dashboard").joinpath("static", name).read_bytes()
    return Response(body, media_type=_ASSETS[name], headers={"Cache-Control": "max-age=3600"})
