"""public_url_problem: links recipients cannot open are caught from the URL alone."""

from __future__ import annotations

import pytest

from mailcarrier.domain.public_url import public_url_problem


@pytest.mark.parametrize(("url", "why"), [
    ("http://127.0.0.1:8025", "loopback"),            # the default setting
    ("https://127.0.0.1", "loopback"),
    ("https://2130706433/", "loopback"),              # 127.0.0.1 spelled as one number
    ("https://[::1]:8443", "loopback"),
    ("https://10.1.2.3", "private"),
    ("https://192.168.0.10", "private"),
    ("https://100.64.0.1", "shared"),
    ("https://169.254.1.1", "link-local"),
    ("https://0.0.0.0", "unspecified"),
    ("https://localhost:8025", "single-label"),
    ("https://mailserver", "single-label"),
    ("https://mc.localhost", ".localhost"),
    ("https://links.corp.internal", ".internal"),
    ("https://mc.home.arpa", ".home.arpa"),
    ("https://printer.local", ".local"),
    ("https://t.shop.example", ".example"),
    ("http://links.shop-example.com", "plain http"),
    ("ftp://links.shop-example.com", "absolute http(s)"),
    ("links.shop-example.com", "absolute http(s)"),
    ("https://links.shop-example.com:99999", "not a valid URL"),
    ("", "absolute http(s)"),
])
def test_unreachable_public_urls_are_named(url: str, why: str) -> None:
    problem = public_url_problem(url)
    assert problem is not None and why in problem, problem


@pytest.mark.parametrize("url", ["https://links.shop-example.com", "https://t.shop-example.com:8443/mc/",
                                 "https://8.8.8.8", "https://Links.Shop-Example.COM."])
def test_public_https_urls_pass(url: str) -> None:
    assert public_url_problem(url) is None
