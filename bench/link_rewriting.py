"""Tracked-link rewriting per message: the cost of reading the HTML on a realistic newsletter.

Scans and rewrites ``tests/domain/data/newsletter.html`` (Outlook VML button, image map,
unquoted hrefs), padded with ``--blocks`` article blocks of three paragraphs and a link
each to a typical campaign size, as the worker's link hook does once per message.

Peer: the regular expression used before (``<a ... href="...">`` only; it rewrote
``data-href`` and missed unquoted hrefs, ``<area>`` and VML), on the same document: the
ratio is what the correct reading costs per message.

Usage: python bench/link_rewriting.py [--blocks 60] [--seconds 3]
"""

from __future__ import annotations

import argparse
import html
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mailcarrier.domain.links import scan_links

NEWSLETTER = Path(__file__).resolve().parents[1] / "tests" / "domain" / "data" / "newsletter.html"
BLOCK = ('<tr><td class="col" style="padding:12px;font-family:Arial,sans-serif;font-size:15px;">'
         '<h2 style="margin:0 0 8px;">Article {n}</h2><p style="margin:0 0 8px;">Lorem ipsum dolor sit '
         'amet, <b>consectetur</b> adipiscing elit, sed do eiusmod tempor.</p><p>Ut enim ad minim '
         'veniam, quis nostrud exercitation.</p><a href="https://shop.example/articles/{n}?utm_source='
         'news&amp;utm_medium=email" style="color:#1e3650;">Read more</a></td></tr>\n')
_OLD_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)


def _old_rewrite(body: str) -> str:
    numbers: dict[str, int] = {}

    def replace(match: re.Match[str]) -> str:
        url = html.unescape(match.group(3)).strip()
        number = numbers.setdefault(url, len(numbers) + 1)
        return f"{match.group(1)}{match.group(2)}https://t.example/c/{number}{match.group(2)}"

    return _OLD_HREF.sub(replace, body)


def _rate(work: object, seconds: float) -> float:
    assert callable(work)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        work()
        done += 1
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    source = NEWSLETTER.read_text(encoding="utf-8")
    body = source.replace("</table>", "".join(BLOCK.format(n=n) for n in range(args.blocks)) + "</table>", 1)
    links = len(scan_links(body, None).links)

    def ours() -> None:
        scan_links(body, None).rewrite(click_url=lambda n: f"https://t.example/c/{n}", open_pixel_url=None)

    def peer() -> None:
        _old_rewrite(body)

    mine, theirs = _rate(ours, args.seconds), _rate(peer, args.seconds)
    print(f"document: {len(body):,} characters, {links} distinct tracked links")
    print(f"tokenizer: {1000 / mine:.2f} ms per message; old regex: {1000 / theirs:.3f} ms per message")
    print(f"RESULT rewrites_per_s={mine:.0f} messages/s old_regex={theirs:.0f} ratio={mine / theirs:.3f}")


if __name__ == "__main__":
    main()
