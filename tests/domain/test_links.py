"""Link rewriting: trackable links replaced in both parts, others untouched."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailcarrier.domain.links import LinkRow, rewrite_links


def url(n: int) -> str:
    return f"https://t.example/c/{n}"


def test_rewrites_html_and_text_and_adds_pixel() -> None:
    body = (
        '<html><body><a href="https://shop.example/a?x=1&amp;y=2">A</a>'
        '<a href="mailto:x@example.com">m</a><a href="#top">t</a>'
        "<a href='{{unsubscribe_url}}'>u</a></body></html>"
    )
    out = rewrite_links(body, "See https://shop.example/a?x=1&y=2 now", click_url=url, open_pixel_url="https://t.example/o")
    assert out.links == (LinkRow(1, "https://shop.example/a?x=1&y=2"),)
    assert out.html is not None and 'href="https://t.example/c/1"' in out.html
    assert "mailto:x@example.com" in out.html and "#top" in out.html and "{{unsubscribe_url}}" in out.html
    assert out.html.endswith('<img src="https://t.example/o" width="1" height="1" alt=""></body></html>')
    assert out.text == "See https://t.example/c/1 now"


@given(st.text(max_size=200), st.text(max_size=200))
def test_any_input_is_handled(html_body: str, text_body: str) -> None:
    out = rewrite_links(html_body, text_body, click_url=url, open_pixel_url=None)
    assert [row.number for row in out.links] == list(range(1, len(out.links) + 1))
