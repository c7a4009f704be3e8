"""Rewrite links in a message's HTML and text parts to tracked URLs, and add the open pixel.

Links are numbered in order of first appearance; the caller stores the
returned rows (number -> destination) and builds one signed URL per number,
so tokens carry ids only.  mailto:, in-page anchors and unsubscribe
placeholders are left alone: rewriting them would break them.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LinkRow", "RewrittenBodies", "rewrite_links"]

_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_TEXT_URL = re.compile(r"""https?://[^\s<>"')\]]+""", re.IGNORECASE)
_SKIP = ("mailto:", "#", "tel:", "{{", "[unsubscribe", "%unsubscribe")


@dataclass(frozen=True, slots=True)
class LinkRow:
    number: int
    url: str


@dataclass(frozen=True, slots=True)
class RewrittenBodies:
    html: str | None
    text: str | None
    links: tuple[LinkRow, ...]


def _trackable(url: str) -> bool:
    lowered = url.strip().lower()
    return lowered.startswith(("http://", "https://")) and not any(s in lowered for s in _SKIP)


def rewrite_links(
    html_body: str | None,
    text_body: str | None,
    *,
    click_url: Callable[[int], str],
    open_pixel_url: str | None,
) -> RewrittenBodies:
    """Return both bodies with trackable links replaced, plus the link table rows."""
    numbers: dict[str, int] = {}

    def number_of(url: str) -> int:
        return numbers.setdefault(url, len(numbers) + 1)

    def replace_href(match: re.Match[str]) -> str:
        url = html.unescape(match.group(3)).strip()
        if not _trackable(url):
            return match.group(0)
        target = html.escape(click_url(number_of(url)), quote=True)
        return f"{match.group(1)}{match.group(2)}{target}{match.group(2)}"

    new_html = _HREF.sub(replace_href, html_body) if html_body is not None else None
    if new_html is not None and open_pixel_url is not None:
        pixel = f'<img src="{html.escape(open_pixel_url, quote=True)}" width="1" height="1" alt="">'
        at = new_html.lower().rfind("</body>")
        new_html = new_html + pixel if at < 0 else new_html[:at] + pixel + new_html[at:]

    def replace_text(match: re.Match[str]) -> str:
        found = match.group(0)
        return click_url(number_of(found)) if _trackable(found) else found

    new_text = _TEXT_URL.sub(replace_text, text_body) if text_body is not None else None
    rows = tuple(LinkRow(n, u) for u, n in numbers.items())
    return RewrittenBodies(new_html, new_text, rows)
