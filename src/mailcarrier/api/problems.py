"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error the API returns has the same shape, so clients handle one format: ``type``,
``title``, ``status``, ``detail`` and, for validation errors, ``errors``. Domain exceptions
map here, once, instead of in every route: each :class:`~mailcarrier.domain.errors.ErrorKind`
to its problem type and status (:data:`PROBLEM_TYPES`, from the kind table the CLI's exit
statuses come from too); an unexpected exception becomes a
500 whose body reveals nothing about the internals.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from types import MappingProxyType
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mailcarrier.domain.errors import ErrorKind, MailcarrierError

__all__ = ["PROBLEM_JSON", "PROBLEM_TYPES", "ProblemError", "install_problem_handlers", "problem_response"]

PROBLEM_JSON = "application/problem+json"
_log = logging.getLogger("mailcarrier.api")

#: Each kind of domain error has one problem type and one status, from the kind table of
#: domain/errors.py (which gives the CLI its exit statuses too).
PROBLEM_TYPES: Mapping[ErrorKind, tuple[str, int]] = MappingProxyType(
    {kind: (kind.problem_type, kind.http_status) for kind in ErrorKind})


class ProblemError(MailcarrierError):
    """Raised by routes to answer with a specific problem document."""

    def __init__(self, status: int, detail: str, *, type_: str = "about:blank",
                 title: str | None = None, headers: dict[str, str] | None = None,
                 **extensions: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type_
        self.title = title
        self.headers = headers or {}
        self.extensions = extensions


def problem_response(status: int, detail: str | None = None, *, type_: str = "about:blank",
                     title: str | None = None, instance: str | None = None,
                     headers: dict[str, str] | None = None, **extensions: Any) -> JSONResponse:
    """A problem+json response; ``title`` defaults to the status phrase (as RFC 9457 asks for about:blank)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body: dict[str, Any] = {"type": type_, "title": title or phrase, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(extensions)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(exc.status, exc.detail, type_=exc.type, title=exc.title,
                            instance=request.url.path, headers=exc.headers, **exc.extensions)


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem_response(exc.status_code, detail, instance=request.url.path,
                            headers=dict(exc.headers or {}))


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
               "type": str(e.get("type", ""))} for e in exc.errors()]
    return problem_response(422, "the request is not valid", instance=request.url.path,
                            errors=errors)


async def _on_domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MailcarrierError)
    type_, status = PROBLEM_TYPES[exc.kind]
    if exc.kind is ErrorKind.UNAVAILABLE:  # the detail may name internals: log it, say less
        _log.warning("unavailable on %s %s: %s", request.method, request.url.path, exc)
        return problem_response(status, "a service this request needs is unavailable; try again later",
                                type_=type_, instance=request.url.path, headers={"Retry-After": "30"})
    return problem_response(status, str(exc), type_=type_, instance=request.url.path)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    _log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, "internal error; the server log has the details",
                            instance=request.url.path)


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error response of ``app`` a problem document."""
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(MailcarrierError, _on_domain)
    app.add_exception_handler(Exception, _on_unexpected)
