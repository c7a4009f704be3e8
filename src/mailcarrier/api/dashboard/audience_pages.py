"""Audiences and contact import: create an audience, upload a CSV into it and watch the
import's progress, then read (and download) the rows it rejected and why."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mailcarrier.api.auth import has_scope
from mailcarrier.api.context import AppContext, app_context
from mailcarrier.api.dashboard.import_jobs import ImportJob, ImportJobs, upload_dir
from mailcarrier.api.dashboard.session import Session
from mailcarrier.api.dashboard.web import csv_download, current_session, render, require_scope
from mailcarrier.domain.errors import ConflictError, NotFoundError
from mailcarrier.services import account_views as views
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.engine import run_write

__all__ = ["router"]

router = APIRouter()
MAX_UPLOAD = 512 * 1024 * 1024


def _jobs(request: Request) -> ImportJobs:
    """The import jobs of this installation (files under the data directory)."""
    context: AppContext = request.app.state.context
    return ImportJobs(context.settings.storage.data_dir / "dashboard-imports")


def _page(ctx: AppContext, session: Session, *, status: int = 200, error: str | None = None,
          flash: str | None = None, chosen: int | None = None) -> HTMLResponse:
    audiences = views.list_audiences(ctx.engine, session.account_id, after_id=0, limit=500)[:500]
    return render("audiences.html", status=status, section="audiences", audiences=audiences, error=error,
                  flash=flash, chosen=chosen, can_write=has_scope(session.scopes, "contacts:write"))


@router.get("/audiences", response_class=HTMLResponse)
def audiences_page(created: int | None = None, session: Session = Depends(current_session),
                   ctx: AppContext = Depends(app_context)) -> HTMLResponse:
    """The account's audiences, a form to create one and a form to import a CSV into one."""
    return _page(ctx, session, chosen=created,
                 flash="Audience created: import contacts into it below." if created else None)


@router.get("/audiences.csv")
def audiences_export(session: Session = Depends(current_session),
                     ctx: AppContext = Depends(app_context)) -> Response:
    rows = views.list_audiences(ctx.engine, session.account_id, after_id=0, limit=10_000)
    return csv_download("audiences.csv", ("id", "name", "description", "members", "created_at"),
                        ([a.id, a.name, a.description, a.members, a.created_at] for a in rows))


@router.post("/audiences", response_model=None)
def create_audience(name: Annotated[str, Form(max_length=255)] = "",
                    description: Annotated[str, Form(max_length=2000)] = "",
                    session: Session = Depends(current_session),
                    ctx: AppContext = Depends(app_context)) -> Response:
    """Create an audience; the page says why when the name is empty or taken."""
    require_scope(session, "audiences:write")
    clean = " ".join(name.replace("\x00", "").split())
    if not clean:
        return _page(ctx, session, status=422, error="Give the audience a name.")
    try:
        made = run_write(ctx.engine, lambda conn: account_repo.create_audience(
            conn, session.account_id, clean, ctx.clock(), description.replace("\x00", "").strip()),
            what="create audience")
    except ConflictError:
        return _page(ctx, session, status=409, error=f"An audience named {clean!r} exists already.")
    return RedirectResponse(f"/dashboard/audiences?created={made.id}", status_code=303)


@router.post("/imports", response_model=None)
def start_import(request: Request, file: Annotated[UploadFile, File()],
                 audience_id: Annotated[int, Form(ge=1, le=2**62)],
                 session: Session = Depends(current_session),
                 ctx: AppContext = Depends(app_context)) -> Response:
    """Store the upload, start the import in the background and show its progress page."""
    require_scope(session, "contacts:write")
    audience = views.get_audience(ctx.engine, session.account_id, audience_id)
    directory, cleanup = upload_dir()
    path = directory / "upload.csv"
    size = 0
    try:
        with path.open("wb") as out:
            while chunk := file.file.read(1 << 20):
                size += len(chunk)
                if size > MAX_UPLOAD:
                    cleanup()
                    return _page(ctx, session, status=413, chosen=audience_id,
                                 error="The file exceeds 512 MiB; split it and import the parts.")
                out.write(chunk)
    except OSError:
        cleanup()
        raise
    if size == 0:
        cleanup()
        return _page(ctx, session, status=422, chosen=audience_id, error="Choose a CSV file to import.")
    job = _jobs(request).start(ctx.engine, session.account_id, audience.name, file.filename or "upload.csv",
                               path, size, ctx.clock(), cleanup=cleanup)
    return RedirectResponse(f"/dashboard/imports/{job.id}", status_code=303)


def _job(request: Request, session: Session, job_id: str) -> ImportJob:
    job = _jobs(request).get(session.account_id, job_id)
    if job is None:
        raise NotFoundError("no such import among this account's imports of the last 7 days; "
                            "the contacts themselves are in the audience")
    return job


@router.get("/imports/{job_id}", response_class=HTMLResponse)
def import_page(request: Request, job_id: str, session: Session = Depends(current_session),
                ctx: AppContext = Depends(app_context)) -> HTMLResponse:
    """The import's progress while it runs (the page updates itself), then its result."""
    job = _job(request, session, job_id)
    audience_id = None
    if job.state == "done":
        with ctx.engine.connect() as conn:
            audience_id = account_repo.audience_by_name(conn, session.account_id, job.audience).id
    return render("import.html", section="audiences", job=job, audience_id=audience_id,
                  shown=job.rejected[:200])


@router.get("/imports/{job_id}/rejected.csv")
def rejected_export(request: Request, job_id: str, session: Session = Depends(current_session)) -> Response:
    """The rejected rows: line number, why, and the row's own values (to fix and import again)."""
    job = _job(request, session, job_id)
    return csv_download(f"rejected-rows-{job.id}.csv", ("line", "reason", *job.header),
                        ([r.line, r.reason, *r.values] for r in job.rejected))
