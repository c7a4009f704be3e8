"""Delivery evidence for one recipient, as JSON, plain text or PDF."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from mailcarrier.api.auth import Principal, require_scopes
from mailcarrier.api.context import AppContext, app_context
from mailcarrier.api.pagination import MAX_ID
from mailcarrier.api.validation import NO_NUL
from mailcarrier.services import evidence

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/evidence", tags=["evidence"])


@router.get("", responses={200: {"content": {"application/json": {}, "text/plain": {},
                                             "application/pdf": {}}}})
def get_evidence(email: Annotated[str, Query(min_length=1, max_length=320, pattern=NO_NUL)],
                 mailing_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
                 format: Annotated[str, Query(pattern="^(json|text|pdf)$")] = "json",
                 who: Principal = Depends(require_scopes("evidence:read")),
                 ctx: AppContext = Depends(app_context)) -> Any:
    """Every attempt for the recipient with the facts its IT department needs (seed 000)."""
    report = evidence.collect_evidence(ctx.engine, who.account_id, email, ctx.clock(),
                                       mailing_id=mailing_id)
    if format == "text":
        return PlainTextResponse(evidence.to_text(report))
    if format == "pdf":
        name = "".join(ch if ch.isalnum() or ch in "._-@" else "_" for ch in report.email)
        return Response(evidence.to_pdf(report), media_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="evidence-{name}.pdf"'})
    return JSONResponse(evidence.to_json(report))
