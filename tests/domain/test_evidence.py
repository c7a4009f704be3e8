"""normalise_text masks exactly what its one defining pattern masks: its faster way of
getting there (collapsed first, word stretches without "@" masked apart, ASCII classes on
ASCII text) is a speed-up and must never change the text the rules see."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mailcarrier.domain.evidence import normalise_text

from .reply_cases import reply_cases

# The definition: addresses (where a run of local-part characters starts), dotted IPv4
# and bracketed literals, each masked as "<*>"; whitespace collapsed afterwards.
_LOCAL = "\\w.+\\-=!#$%&'*/?^`{|}~"
_DEFINITION = re.compile(
    rf"(?<![{_LOCAL}<])<?[{_LOCAL}]*+@[\w\-.]+>?"
    r"|\b\d{1,3}(?:\.\d{1,3}){3}\b|\[[0-9a-fA-F:.]+\]"
)


def _defined(text: str) -> str:
    return " ".join(_DEFINITION.sub("<*>", text).split())


# Characters every alternative and assertion of the pattern turns on, whitespace of
# several kinds, and non-ASCII letters and digits (which \w and \d also match).
_CHARS = [*"ab1234567890.@<>[]:;,()\"'_-+=!#$%&*/?^`{|}~ \t\nFx", "\xa0", "\u2003", "é", "\u0663"]
_PIECES = ["1.2.3.4", "a@b.c", "<x@y.z>", "[10.0.0.1]", "999.1.1.1", "5.1.1", "::1", "u.n+t@h-1.example"]
_TEXTS = st.lists(st.sampled_from(_CHARS) | st.sampled_from(_PIECES), max_size=40).map("".join)


@settings(max_examples=3000, deadline=None)
@given(_TEXTS)
def test_masks_as_the_definition(text: str) -> None:
    assert normalise_text(text) == _defined(text)


@settings(max_examples=1000, deadline=None)
@given(_TEXTS)
def test_masks_ascii_text_as_the_definition(text: str) -> None:
    ascii_text = "".join(c for c in text if c.isascii())
    assert normalise_text(ascii_text) == _defined(ascii_text)


def test_masks_every_reply_case_as_the_definition() -> None:
    for case in reply_cases():
        assert normalise_text(case.reply) == _defined(case.reply), case.reply


def test_masks_addresses_ips_and_literals() -> None:
    text = "550 5.1.1 <a.b@x.example>:  user [2001:db8::1] from 192.0.2.1\tvia b@y.example"
    assert normalise_text(text) == "550 5.1.1 <*>: user <*> from <*> via <*>"
