"""Content checks on a rendered message: links, unsubscribe, postal address, images vs text.

Seed 002's pre-send advice as pure functions over the rendered bodies: which domains
the links point to (so an adapter can look them up in domain blocklists), whether the
unsubscribe link and the sender's postal address are present, and how much visible text
there is per image. The SpamAssassin report parser lives here too: spamd's REPORT text
in, the rules hit out. Patterns and thresholds are data (``data/content_checks.toml``).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import cache
from html.parser import HTMLParser
from importlib import resources
from urllib.parse import urlsplit

from mailcarrier.domain.errors import ParseError, RuleFileError

__all__ = [
    "ContentRules",
    "HtmlSummary",
    "SpamReport",
    "SpamRule",
    "find_physical_address",
    "link_domains",
    "load_content_rules",
    "parse_content_rules",
    "parse_spamd_report",
    "summarise_html",
    "too_many_images",
]

_TEXT_URL = re.compile(r"\bhttps?://[^\s<>\"')\]]+", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ContentRules:
    address_patterns: tuple[re.Pattern[str], ...]
    min_text_chars_per_image: int


def parse_content_rules(text: str) -> ContentRules:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleFileError(f"content checks are not valid TOML: {exc}") from exc
    raw = doc.get("physical_address", {}).get("patterns")
    if not isinstance(raw, list) or not raw or not all(isinstance(p, str) and p for p in raw):
        raise RuleFileError("[physical_address] needs a non-empty list of patterns")
    try:
        patterns = tuple(re.compile(p, re.IGNORECASE) for p in raw)
    except re.error as exc:
        raise RuleFileError(f"[physical_address] bad pattern: {exc}") from exc
    minimum = doc.get("images", {}).get("min_text_chars_per_image")
    if not isinstance(minimum, int) or isinstance(minimum, bool) or minimum < 0:
        raise RuleFileError("[images] min_text_chars_per_image must be a non-negative integer")
    return ContentRules(patterns, minimum)


@cache
def load_content_rules() -> ContentRules:
    text = (resources.files("mailcarrier.domain") / "data" / "content_checks.toml").read_text("utf-8")
    return parse_content_rules(text)


@dataclass(frozen=True, slots=True)
class HtmlSummary:
    """What a reader sees in the HTML part: visible text, URLs (link targets and image sources),
    image count. Image hosts count as links: receivers' URI blocklist checks look at both."""

    text: str
    links: tuple[str, ...]
    images: int


class _Extractor(HTMLParser):
    _HIDDEN = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.links: list[str] = []
        self.images = 0
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name.lower(): value or "" for name, value in attrs}
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag == "a" and values.get("href"):
            self.links.append(values["href"].strip())
        elif tag == "img":
            self.images += 1
            if values.get("src"):
                self.links.append(values["src"].strip())
        elif tag in ("br", "p", "div", "tr", "li"):
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN and self._hidden:
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.chunks.append(data)


def summarise_html(html: str) -> HtmlSummary:
    """Visible text (whitespace collapsed per line), ``<a href>`` and ``<img src>`` URLs, ``<img>`` count."""
    parser = _Extractor()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.chunks).splitlines())
    return HtmlSummary("\n".join(line for line in lines if line), tuple(parser.links), parser.images)


def link_domains(html_links: tuple[str, ...], text: str) -> tuple[str, ...]:
    """Distinct host names of the http(s) links in the HTML hrefs and the plain text, sorted."""
    hosts: set[str] = set()
    for url in (*html_links, *_TEXT_URL.findall(text)):
        try:
            parts = urlsplit(url)
        except ValueError:
            continue
        if parts.scheme.lower() in ("http", "https") and parts.hostname:
            hosts.add(parts.hostname.rstrip(".").lower())
    return tuple(sorted(hosts))


def find_physical_address(text: str, rules: ContentRules | None = None) -> str | None:
    """The first text that looks like a postal address, or None."""
    for pattern in (rules or load_content_rules()).address_patterns:
        match = pattern.search(text)
        if match is not None:
            return match.group(0)
    return None


def too_many_images(summary: HtmlSummary, rules: ContentRules | None = None) -> bool:
    minimum = (rules or load_content_rules()).min_text_chars_per_image
    return summary.images > 0 and len(summary.text) < minimum * summary.images


@dataclass(frozen=True, slots=True)
class SpamRule:
    name: str
    points: float
    description: str


@dataclass(frozen=True, slots=True)
class SpamReport:
    score: float
    threshold: float
    is_spam: bool
    rules: tuple[SpamRule, ...]


_SPAM_HEADER = re.compile(r"^Spam:\s*(True|False|Yes|No)\s*;\s*(-?[\d.]+)\s*/\s*(-?[\d.]+)\s*$", re.I | re.M)
_RULE_LINE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s+(.*)$")


def parse_spamd_report(response: str) -> SpamReport:
    """Read a spamd ``REPORT`` response (headers, blank line, report body).

    Raises ParseError when the response lacks the ``Spam:`` header.
    """
    header = _SPAM_HEADER.search(response.split("\r\n\r\n", 1)[0].split("\n\n", 1)[0])
    if header is None:
        raise ParseError("spamd response has no 'Spam: <bool> ; <score> / <threshold>' header",
                         excerpt=response[:120])
    rules: list[SpamRule] = []
    in_table = False
    for line in response.splitlines():
        if line.startswith("---- "):
            in_table = True
            continue
        if not in_table:
            continue
        match = _RULE_LINE.match(line)
        if match:
            rules.append(SpamRule(match.group(2), float(match.group(1)), match.group(3).strip()))
        elif rules and line.startswith(" ") and line.strip():
            last = rules[-1]
            rules[-1] = SpamRule(last.name, last.points, f"{last.description} {line.strip()}")
        elif not line.strip():
            continue
    return SpamReport(
        score=float(header.group(2)),
        threshold=float(header.group(3)),
        is_spam=header.group(1).lower() in ("true", "yes"),
        rules=tuple(rules),
    )
