"""Contact imports: upload a CSV into an audience."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile
from pydantic import BaseModel

from mailcarrier.api.auth import Principal, require_scopes
from mailcarrier.api.context import AppContext, app_context
from mailcarrier.api.problems import ProblemError
from mailcarrier.api.validation import NO_NUL
from mailcarrier.services.contact_import import import_csv

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/imports", tags=["imports"])
MAX_UPLOAD = 512 * 1024 * 1024


class BadRowOut(BaseModel):
    line: int
    reason: str


class ImportResult(BaseModel):
    rows_read: int
    rows_imported: int
    duplicates_merged: int
    bad_count: int
    bad_rows: list[BadRowOut]


@router.post("", response_model=ImportResult, status_code=201)
def create_import(file: Annotated[UploadFile, File(description="CSV with an 'email' column")],
                  audience: Annotated[str, Form(min_length=1, max_length=255, pattern=NO_NUL)],
                  who: Principal = Depends(require_scopes("contacts:write")),
                  ctx: AppContext = Depends(app_context)) -> ImportResult:
    """Import contacts into the audience (created if missing); bad rows are listed, not fatal."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload.csv"
        size = 0
        with path.open("wb") as out:
            while chunk := file.file.read(1 << 20):
                size += len(chunk)
                if size > MAX_UPLOAD:
                    raise ProblemError(413, "the upload exceeds 512 MiB; split the file")
                out.write(chunk)
        try:
            report = import_csv(ctx.engine, who.account_id, audience.strip() or audience, path,
                                ctx.clock())
        except UnicodeDecodeError as exc:
            raise ProblemError(422, "the file is not UTF-8 text; export it as CSV UTF-8") from exc
        except ValueError as exc:
            raise ProblemError(422, str(exc)) from exc
    return ImportResult(rows_read=report.rows_read, rows_imported=report.rows_imported,
                        duplicates_merged=report.duplicates_merged, bad_count=report.bad_count,
                        bad_rows=[BadRowOut(line=b.line, reason=b.reason) for b in report.bad_rows])
