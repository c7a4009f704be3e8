"""Small public HTML pages (unsubscribe, confirmation, subscription form), autoescaped Jinja2."""

from __future__ import annotations

from functools import cache
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

__all__ = ["page"]

#: Public pages must not be cached by proxies, framed by other sites, or indexed.
_HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
            "Referrer-Policy": "no-referrer"}


@cache
def _environment() -> Environment:
    return Environment(loader=PackageLoader("mailcarrier.api", "templates"),
                       autoescape=select_autoescape(default=True))


def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Render ``templates/<template>`` into a response with the public-page headers."""
    body = _environment().get_template(template).render(**context)
    return HTMLResponse(body, status_code=status, headers=_HEADERS)
