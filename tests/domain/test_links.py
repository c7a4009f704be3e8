"""Link rewriting: trackable links replaced in both parts, others untouched, the rest of the
markup byte for byte; on a realistic newsletter (Outlook VML buttons, image maps, unquoted
attributes, look-alike attributes, links in comments, styles and scripts)."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mailcarrier.domain.links import LINK_ELEMENTS, LinkRow, is_trackable, rewrite_links

NEWSLETTER = (Path(__file__).parent / "data" / "newsletter.html").read_text(encoding="utf-8")


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


def test_newsletter_links_are_found_in_order_and_deduplicated() -> None:
    out = rewrite_links(NEWSLETTER, None, click_url=url, open_pixel_url=None)
    assert [row.url for row in out.links] == [
        "https://shop.example/view/8f3a",
        "https://shop.example/?utm_source=news&utm_medium=email",  # unquoted, upper-case A HREF
        "https://shop.example/sale?cat=shoes&size=42",  # single quotes, spaces around =, over lines
        "https://shop.example/sale?cat=all",  # the Outlook VML button and its HTML twin: one link
        "https://shop.example/stores/paris",  # <area>
        "https://shop.example/stores/lyon",  # <area ... />
    ]


def test_newsletter_changes_only_the_href_values() -> None:
    """The output is the input with exactly these attribute values replaced, nothing else."""
    out = rewrite_links(NEWSLETTER, None, click_url=url, open_pixel_url=None)
    expected = NEWSLETTER
    for old, new in (
        ('href="https://shop.example/view/8f3a"', f'href="{url(1)}"'),
        ("HREF=https://shop.example/?utm_source=news&amp;utm_medium=email", f'HREF="{url(2)}"'),
        ("href = 'https://shop.example/sale?cat=shoes&amp;size=42'", f'href = "{url(3)}"'),
        ('href="https://shop.example/sale?cat=shoes&amp;size=42"', f'href="{url(3)}"'),
        ('href="https://shop.example/sale?cat=all"', f'href="{url(4)}"'),
        ('href="https://shop.example/stores/paris"', f'href="{url(5)}"'),
        ('href="https://shop.example/stores/lyon"', f'href="{url(6)}"'),
    ):
        assert old in expected
        expected = expected.replace(old, new)
    assert out.html == expected


def test_newsletter_leaves_other_urls_alone() -> None:
    out = rewrite_links(NEWSLETTER, None, click_url=url, open_pixel_url=None)
    assert out.html is not None
    for untouched in (
        'data-href="https://shop.example/hero-analytics"',  # a look-alike attribute
        '<a href="https://shop.example/old-sale">old</a>',  # inside an ordinary comment
        '"url":"https://shop.example/orders/42"',  # inside <script>
        "url(https://cdn.shop.example/hero-bg.png)",  # inside <style>
        'a[href^="https://shop.example"]',  # a CSS selector
        '<link href="https://fonts.shop.example/css?family=Inter"',  # not a link a reader follows
        "SRC=https://cdn.shop.example/logo.png",
        'href="mailto:help@shop.example"', 'href="tel:+33123456789"', 'href="#top"',
        'href="{{ unsubscribe_url }}"', "<area shape=\"default\" nohref alt=\"\">",
    ):
        assert untouched in out.html, untouched


def test_vml_button_inside_the_conditional_comment_is_rewritten() -> None:
    out = rewrite_links(NEWSLETTER, None, click_url=url, open_pixel_url=None)
    assert out.html is not None
    start = out.html.index("<v:roundrect")
    assert f'href="{url(4)}"' in out.html[start:out.html.index(">", start)]
    assert "<!--[if mso]>" in out.html and "<![endif]-->" in out.html


def test_the_open_pixel_goes_before_the_closing_body_tag() -> None:
    out = rewrite_links(NEWSLETTER, None, click_url=url, open_pixel_url="https://t.example/o/x")
    assert out.html is not None
    assert out.html.endswith('<img src="https://t.example/o/x" width="1" height="1" alt=""></body>\n</html>\n')


def test_data_href_before_href_in_the_same_tag() -> None:
    out = rewrite_links('<a data-href="https://a.example/no" href="https://a.example/yes">x</a>', None,
                        click_url=url, open_pixel_url=None)
    assert out.html == f'<a data-href="https://a.example/no" href="{url(1)}">x</a>'
    assert out.links == (LinkRow(1, "https://a.example/yes"),)


def test_only_data_href_is_not_a_link() -> None:
    body = '<div data-href="https://a.example/x"><span data-href=https://a.example/y>z</span></div>'
    out = rewrite_links(body, None, click_url=url, open_pixel_url=None)
    assert out.html == body and out.links == ()


def test_first_of_two_href_attributes_counts() -> None:
    out = rewrite_links('<a href="https://a.example/1" href="https://a.example/2">x</a>', None,
                        click_url=url, open_pixel_url=None)
    assert out.links == (LinkRow(1, "https://a.example/1"),)
    assert out.html == f'<a href="{url(1)}" href="https://a.example/2">x</a>'


def test_tracked_url_is_escaped_in_the_attribute() -> None:
    out = rewrite_links("<a href=https://a.example/x>x</a>", None,
                        click_url=lambda n: f'https://t.example/c/{n}?a=1&b="2"', open_pixel_url=None)
    assert out.html == '<a href="https://t.example/c/1?a=1&amp;b=&quot;2&quot;">x</a>'


def test_unclosed_markup_is_left_as_it_is() -> None:
    body = '<p>Sale <a href="https://a.example/x" and then the message ends'
    out = rewrite_links(body, None, click_url=url, open_pixel_url=None)
    assert out.html == body and out.links == ()


@given(st.text(max_size=200), st.text(max_size=200))
def test_any_input_is_handled(html_body: str, text_body: str) -> None:
    out = rewrite_links(html_body, text_body, click_url=url, open_pixel_url=None)
    assert [row.number for row in out.links] == list(range(1, len(out.links) + 1))


_PIECES = st.sampled_from([
    "<a href=", "<A HREF=", "<area href='", "<v:roundrect href=\"", "data-href=", "https://s.example/",
    "x?y=1&amp;z", '"', "'", ">", "</a>", "<!--", "-->", "<!--[if mso]>", "<![endif]-->", "<script>",
    "</script>", " ", "\n", "<", "=", "/>",
])


@given(st.lists(_PIECES, max_size=30).map("".join))
def test_tag_soup_never_changes_anything_but_href_values(body: str) -> None:
    """Whatever the markup, replacing each link by its own URL gives back equivalent markup,
    and every URL reported is one the input carries."""
    out = rewrite_links(body, None, click_url=url, open_pixel_url=None)
    assert out.html is not None
    for row in out.links:
        assert row.url in body or row.url.replace("&", "&amp;") in body
    if not out.links:
        assert out.html == body


# ---- the same links as the standard library's HTML parser ----------------------------

class _Reference(HTMLParser):
    """The links html.parser reports (href of the link elements, conditional comments read)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in LINK_ELEMENTS:
            href = next((value for name, value in attrs if name == "href"), None)
            if href is not None and is_trackable(href.strip()):
                self.urls.append(href.strip())

    def handle_comment(self, data: str) -> None:
        if data.lstrip()[:3].lower() == "[if":
            inner = _Reference()
            inner.feed(data)
            inner.close()
            self.urls.extend(inner.urls)


def _reference_links(body: str) -> list[str]:
    parser = _Reference()
    parser.feed(body)
    parser.close()
    seen: dict[str, None] = {}
    for found in parser.urls:
        seen.setdefault(found)
    return list(seen)


def test_the_newsletter_has_the_links_html_parser_finds() -> None:
    out = rewrite_links(NEWSLETTER, None, click_url=url, open_pixel_url=None)
    assert [row.url for row in out.links] == _reference_links(NEWSLETTER)


_TAGS = st.sampled_from(["a", "A", "area", "v:roundrect", "p", "td", "div", "img", "span", "b"])
_NAMES = st.sampled_from(["href", "HREF", "data-href", "class", "style", "title", "alt"])
_VALUES = st.sampled_from(["https://s.example/1", "https://s.example/2?a=1&amp;b=2", "x > y",
                           "<a href='https://s.example/in-attr'>", "mailto:x@s.example", "", "#top"])


@st.composite
def _attribute(draw: st.DrawFn) -> str:
    name, value = draw(_NAMES), draw(_VALUES)
    quote = draw(st.sampled_from(['"', "'", ""]))
    if quote == "" and (not value or any(c in value for c in " >'\"<")):
        quote = '"'
    if quote and quote in value:
        quote = '"' if quote == "'" else "'"
    return f" {name}{draw(st.sampled_from(['=', ' = ']))}{quote}{value}{quote}"


@st.composite
def _document(draw: st.DrawFn) -> str:
    parts: list[str] = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["tag", "tag", "end", "text", "comment", "cond", "script"]))
        if kind == "tag":
            parts.append(f"<{draw(_TAGS)}{''.join(draw(st.lists(_attribute(), max_size=3)))}"
                         f"{draw(st.sampled_from(['>', ' />', '>']))}")
        elif kind == "end":
            parts.append(f"</{draw(_TAGS)}>")
        elif kind == "text":
            parts.append(draw(st.sampled_from(["Hello ", "https://s.example/text ", "a > b ", "&amp; "])))
        elif kind == "comment":
            parts.append('<!-- <a href="https://s.example/commented">x</a> -->')
        elif kind == "cond":
            parts.append('<!--[if mso]><v:roundrect href="https://s.example/vml"></v:roundrect><![endif]-->')
        else:
            parts.append('<script>var a = "<a href=\'https://s.example/js\'>";</script>')
    return "".join(parts)


@given(_document())
def test_generated_documents_have_the_links_html_parser_finds(body: str) -> None:
    out = rewrite_links(body, None, click_url=url, open_pixel_url=None)
    assert [row.url for row in out.links] == _reference_links(body)
