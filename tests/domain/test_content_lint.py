"""Pure content checks: HTML summary, link domains, postal address, image ratio, spamd report parsing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailcarrier.domain.consent import ConsentKind, classify_source, parse_consent_table, unconsented
from mailcarrier.domain.content_lint import (
    HtmlSummary,
    find_physical_address,
    link_domains,
    parse_content_rules,
    parse_spamd_report,
    summarise_html,
    too_many_images,
)
from mailcarrier.domain.errors import ParseError, RuleFileError

REPORT = """Spam: True ; 7.3 / 5.0

Spam detection software, running on the system "vm", has identified this incoming email as possible spam.

Content analysis details:   (7.3 points, 5.0 required)

 pts rule name              description
---- ---------------------- --------------------------------------------------
 1.8 DRUGS_ERECTILE         Refers to an erectile drug
 2.7 MISSING_DATE           Missing Date: header
-0.0 NO_RELAYS              Informational: message was not relayed via SMTP
 2.8 URIBL_SBL              Contains an URL's NS IP listed in the Spamhaus SBL
                            blocklist
                            [URIs: spammy.test]
"""


def test_spamd_report_rules_scores_and_wrapped_descriptions() -> None:
    report = parse_spamd_report(REPORT)
    assert (report.score, report.threshold, report.is_spam) == (7.3, 5.0, True)
    assert [r.name for r in report.rules] == ["DRUGS_ERECTILE", "MISSING_DATE", "NO_RELAYS", "URIBL_SBL"]
    assert report.rules[2].points == 0.0
    assert report.rules[3].description.endswith("SBL blocklist [URIs: spammy.test]")


def test_spamd_report_without_header_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        parse_spamd_report("hello\r\n\r\nworld")


@given(st.text(max_size=400))
def test_spamd_report_parser_never_crashes_otherwise(text: str) -> None:
    with contextlib.suppress(ParseError):
        parse_spamd_report(text)


@given(st.text(max_size=600))
def test_html_summary_never_crashes_and_counts_are_sane(html: str) -> None:
    summary = summarise_html(html)
    assert summary.images >= 0 and summary.images <= html.lower().count("<img")
    assert "<script" not in summary.text.lower() or "<script" in html.lower()


def test_html_summary_hides_scripts_and_styles_and_collects_urls() -> None:
    html = ("<html><head><title>T</title><style>p{color:red}</style></head><body>"
            "<script>var x = 1;</script><p>Hello&nbsp;<b>you</b></p><img src='https://cdn.test/i.png'>"
            "<a href='https://Shop.Test/x'>go</a><a href='mailto:a@b.test'>mail</a><a href='#top'>top</a>"
            "</body></html>")
    summary = summarise_html(html)
    assert "color" not in summary.text and "var x" not in summary.text and "T" not in summary.text.split()
    assert "Hello you" in summary.text and summary.images == 1
    assert link_domains(summary.links, "see http://plain.test/path. and https://shop.test/y") == (
        "cdn.test", "plain.test", "shop.test")


@given(st.lists(st.text(max_size=40), max_size=5), st.text(max_size=200))
def test_link_domains_never_crash_and_are_sorted_lowercase(links: list[str], text: str) -> None:
    domains = link_domains(tuple(links), text)
    assert list(domains) == sorted(set(domains))
    assert all(d == d.lower() for d in domains)


@pytest.mark.parametrize("text", [
    "Acme Ltd, 12 Harbour Street, Portsmouth", "1600 Amphitheatre Parkway, Mountain View",
    "Acme SARL, 12 rue de la Paix, 75002 Paris", "Acme GmbH, Hauptstraße 5, 10115 Berlin",
    "Write to P.O. Box 1234, Springfield", "Postfach 1020, 80331 München",
])
def test_postal_addresses_are_found(text: str) -> None:
    assert find_physical_address(text) is not None


@pytest.mark.parametrize("text", [
    "Buy now! 50% off everything", "Call us at 555 1234", "Offer valid until 12 March", "",
])
def test_text_without_an_address_is_not_taken_for_one(text: str) -> None:
    assert find_physical_address(text) is None


def test_image_ratio_threshold() -> None:
    assert too_many_images(HtmlSummary("x" * 199, (), 1))
    assert not too_many_images(HtmlSummary("x" * 200, (), 1))
    assert too_many_images(HtmlSummary("x" * 300, (), 2))
    assert not too_many_images(HtmlSummary("", (), 0))


def test_content_rule_file_errors_are_named() -> None:
    with pytest.raises(RuleFileError, match="physical_address"):
        parse_content_rules("[images]\nmin_text_chars_per_image = 5\n")
    with pytest.raises(RuleFileError, match="bad pattern"):
        parse_content_rules('[physical_address]\npatterns = ["("]\n[images]\nmin_text_chars_per_image = 5\n')
    with pytest.raises(RuleFileError, match="min_text_chars_per_image"):
        parse_content_rules('[physical_address]\npatterns = ["x"]\n[images]\nmin_text_chars_per_image = -1\n')
    with pytest.raises(RuleFileError):
        parse_content_rules("not toml [")


def test_consent_sources() -> None:
    assert classify_source(" Double_Opt_In ") is ConsentKind.OPTED_IN
    assert classify_source("purchased") is ConsentKind.NO_CONSENT
    assert classify_source("found-it-somewhere") is ConsentKind.UNKNOWN
    assert unconsented(["opt_in", "purchased", "import", "purchased", "mystery"]) == (
        "import", "mystery", "purchased")
    with pytest.raises(RuleFileError, match="both"):
        parse_consent_table('opted_in = ["a"]\nno_consent = ["A"]\n')
    with pytest.raises(RuleFileError):
        parse_consent_table('opted_in = "a"\nno_consent = []\n')
