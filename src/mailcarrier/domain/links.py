"""Rewrite links in a message's HTML and text parts to tracked URLs, and add the open pixel.

Links are numbered in order of first appearance; the caller stores the returned rows
(number -> destination) and builds one signed URL per number, so tokens carry ids only.
``mailto:``, in-page anchors and unsubscribe placeholders are left alone: rewriting them
would break them.

The HTML part is read by tokenizing it, not by searching it for a pattern: the scan walks
the markup construct by construct (comments, raw-text elements such as ``<script>`` and
``<style>``, start and end tags with their quoted or unquoted attributes) as an HTML
tokenizer does, so only the ``href`` attribute itself of the elements that navigate is
rewritten, quoted or not, whatever the case and spacing, and never a look-alike such as
``data-href``, nor a link inside ``<script>``, ``<style>``, an attribute value or an
ordinary comment. The elements are ``<a>``, ``<area>`` (image maps) and the VML shapes
Outlook draws buttons with (``<v:roundrect href=...>``); those sit inside
``<!--[if mso]> ... <![endif]-->`` conditional comments, whose content is tokenized in turn.

Everything else is copied byte for byte: a newsletter's markup is tuned for clients that
do not parse HTML the way browsers do (Outlook renders with Word), so the document is
never re-serialised from a tree, which would normalise, re-nest and foster-parent it (and
drop the XHTML doctype most templates carry). Tree-building parsers (selectolax, lxml)
give no source positions to edit in place, and the standard library's
:class:`html.parser.HTMLParser`, which does, costs ~10x the whole rest of composing a
message (7 ms for a 30 KB newsletter, ``bench/link_rewriting.py``); so the tokenizer is a
handful of regular expressions run by ``re`` in C, one step per construct, and
``tests/domain/test_links.py`` checks that it finds exactly the links ``HTMLParser``
finds, on the sample newsletter and on generated documents.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "LINK_ELEMENTS",
    "LinkRow",
    "LinkScan",
    "RewrittenBodies",
    "add_open_pixel",
    "is_trackable",
    "rewrite_links",
    "scan_links",
]

#: Elements whose ``href`` a reader follows: anchors, image-map areas, Outlook VML shapes.
LINK_ELEMENTS = frozenset({"a", "area", "v:roundrect", "v:rect", "v:oval", "v:shape", "v:image"})
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


def is_trackable(url: str) -> bool:
    """An http(s) destination that is no unsubscribe placeholder, in-page anchor or mailto/tel."""
    lowered = url.strip().lower()
    return lowered.startswith(("http://", "https://")) and not any(s in lowered for s in _SKIP)


@dataclass(frozen=True, slots=True)
class _Edit:
    start: int
    end: int
    url: str


# Inside a tag, as the HTML tokenizer reads it: separators (white space, "/"), "=" and a
# value (quoted, or unquoted up to white space or ">"), and attribute-name characters.
# Every character but ">" belongs to one of them, and the quantifiers are possessive, so a
# tag is read once, left to right, with no backtracking: it ends at the first ">" outside a
# quoted value, or runs to the end of the document (then it is no tag, as in HTML).
_IN_TAG = r"""(?:[\s/]++|=\s*+(?:"[^"]*+"|'[^']*+'|[^\s>]*+)|[^\s/>=]++)*+"""
# One construct per match, in document order: a comment (to "-->"), a raw-text element
# (<script>, <style>, ... to its end tag), a start tag, an end tag, a declaration or a
# processing instruction; each runs to the end of the document when unterminated (a start
# tag too, as in HTML). Text between constructs, and a "<" that starts none, are skipped.
_CONSTRUCT = re.compile(
    r"""<(?:!--(.*?)(?:--!?>|\Z)"""  # 1: a comment's text
    r"""|(script|style|textarea|title|xmp|iframe|noembed|noframes|plaintext)(?=[\s/>])"""  # 2
    + _IN_TAG + r""">.*?(?:</\2(?=[\s/>])|\Z)"""
    r"""|([a-zA-Z][^\s/>]*+)""" + _IN_TAG + r""">"""  # 3: a start tag's name
    r"""|[a-zA-Z].*\Z|/[a-zA-Z][^>]*+(?:>|\Z)|[!?][^>]*+(?:>|\Z))""",
    re.DOTALL | re.IGNORECASE)
# The same tokens, one at a time, to find the attributes of one start tag.
_TAG_TOKEN = re.compile(r"""([\s/]+)|=\s*("[^"]*"|'[^']*'|[^\s>]*)|([^\s/>=]+)""")


def _href_span(tag_text: str) -> tuple[int, int, str] | None:
    """Where the first ``href`` value sits in a start tag's text (quotes included), and its
    unescaped value; None when that attribute has no value (or the tag has no ``href``)."""
    name_end = 1
    while name_end < len(tag_text) and tag_text[name_end] not in " \t\n\r\f/>":
        name_end += 1
    last_name: str | None = None
    for token in _TAG_TOKEN.finditer(tag_text, name_end, len(tag_text) - 1):
        separator, value, name = token.groups()
        if name is not None:
            if last_name == "href":  # "href" without a value, then another attribute
                return None
            last_name = name.lower()
        elif value is not None:
            if last_name == "href":
                quoted = value[:1] in ("'", '"')
                text = value[1:-1] if quoted else value
                return token.start(2), token.end(2), html.unescape(text)
            last_name = None
        elif "/" in separator and last_name == "href":
            return None
    return None


def _find_links(source: str, base: int, edits: list[_Edit], *, nested: bool = False) -> None:
    """Append the ``href`` value span of every link element in ``source`` (offsets + ``base``)."""
    for match in _CONSTRUCT.finditer(source):
        tag = match.group(3)
        if tag is not None:
            if tag.lower() in LINK_ELEMENTS:
                span = _href_span(match.group(0))
                if span is not None:
                    at = base + match.start()
                    edits.append(_Edit(at + span[0], at + span[1], span[2]))
            continue
        comment = match.group(1)
        # <!--[if mso]> ... <![endif]--> holds Outlook's markup (VML buttons): read inside it
        # (once: a comment's text cannot hold another comment).
        if comment is not None and not nested and comment.lstrip()[:3].lower() == "[if":
            _find_links(comment, base + match.start(1), edits, nested=True)


@dataclass(frozen=True, slots=True)
class _Span:
    start: int
    end: int
    number: int


@dataclass(frozen=True, slots=True)
class LinkScan:
    """Where the trackable links of both bodies are: scanned once, rewritten as often as needed.

    The tracker scans a message to learn its links (and their ids), then rewrites it; the
    scan, which is the costly part, is not repeated for the rewrite.
    """

    html: str | None
    text: str | None
    links: tuple[LinkRow, ...]
    html_spans: tuple[_Span, ...]
    text_spans: tuple[_Span, ...]

    def rewrite(self, *, click_url: Callable[[int], str], open_pixel_url: str | None) -> RewrittenBodies:
        """Both bodies with link ``n`` replaced by ``click_url(n)``, and the open pixel added."""
        new_html = None
        if self.html is not None:
            new_html = _splice(self.html, self.html_spans,
                               lambda n: '"' + html.escape(click_url(n), quote=True) + '"')
            if open_pixel_url is not None:
                new_html = add_open_pixel(new_html, open_pixel_url)
        new_text = _splice(self.text, self.text_spans, click_url) if self.text is not None else None
        return RewrittenBodies(new_html, new_text, self.links)


def add_open_pixel(html_body: str, pixel_url: str) -> str:
    """The HTML with a 1x1 image from ``pixel_url`` just before ``</body>`` (or at the end)."""
    pixel = f'<img src="{html.escape(pixel_url, quote=True)}" width="1" height="1" alt="">'
    at = html_body.lower().rfind("</body>")
    return html_body + pixel if at < 0 else html_body[:at] + pixel + html_body[at:]


def _splice(body: str, spans: tuple[_Span, ...], replacement: Callable[[int], str]) -> str:
    pieces: list[str] = []
    done = 0
    for span in spans:
        pieces.append(body[done:span.start])
        pieces.append(replacement(span.number))
        done = span.end
    pieces.append(body[done:])
    return "".join(pieces)


def scan_links(html_body: str | None, text_body: str | None) -> LinkScan:
    """Find the trackable links of both bodies, numbered in order of first appearance."""
    numbers: dict[str, int] = {}

    def number_of(url: str) -> int:
        return numbers.setdefault(url, len(numbers) + 1)

    html_spans: list[_Span] = []
    if html_body is not None:
        edits: list[_Edit] = []
        _find_links(html_body, 0, edits)
        done = 0
        for edit in sorted(edits, key=lambda e: e.start):
            url = edit.url.strip()
            if edit.start >= done and is_trackable(url):  # spans never overlap; never corrupt if they did
                html_spans.append(_Span(edit.start, edit.end, number_of(url)))
                done = edit.end
    text_spans: list[_Span] = []
    if text_body is not None:
        for match in _TEXT_URL.finditer(text_body):
            if is_trackable(match.group(0)):
                text_spans.append(_Span(match.start(), match.end(), number_of(match.group(0))))
    rows = tuple(LinkRow(n, u) for u, n in numbers.items())
    return LinkScan(html_body, text_body, rows, tuple(html_spans), tuple(text_spans))


def rewrite_links(
    html_body: str | None,
    text_body: str | None,
    *,
    click_url: Callable[[int], str],
    open_pixel_url: str | None,
) -> RewrittenBodies:
    """Return both bodies with trackable links replaced, plus the link table rows."""
    return scan_links(html_body, text_body).rewrite(click_url=click_url, open_pixel_url=open_pixel_url)
