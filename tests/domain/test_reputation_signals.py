"""Listing and trap signals in reply texts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailcarrier.domain.errors import RuleFileError
from mailcarrier.domain.reputation_signals import SignalKind, find_signal, parse_signal_rules


@pytest.mark.parametrize(
    ("text", "kind", "blocklist", "ip"),
    [
        ("554 5.7.1 Service unavailable; Client host [203.0.113.7] blocked using zen.spamhaus.org; "
         "https://www.spamhaus.org/query/ip/203.0.113.7", SignalKind.LISTING, "Spamhaus", "203.0.113.7"),
        ("550 5.7.1 Blocked - see https://www.spamcop.net/bl.shtml?198.51.100.4", SignalKind.LISTING,
         "SpamCop", "198.51.100.4"),
        ("550 5.7.1 Unfortunately, messages from [198.51.100.9] weren't sent. ... (S3150)",
         SignalKind.LISTING, "Microsoft", "198.51.100.9"),
        ("554 rejected: message hit a spam trap", SignalKind.TRAP, "", None),
        ("550 Your IP 192.0.2.44 is blacklisted (answer 127.0.0.2)", SignalKind.LISTING, "", "192.0.2.44"),
    ],
)
def test_signals(text: str, kind: SignalKind, blocklist: str, ip: str | None) -> None:
    signal = find_signal(text)
    assert signal is not None
    assert (signal.kind, signal.blocklist, signal.ip) == (kind, blocklist, ip)


@pytest.mark.parametrize("text", ["550 5.1.1 User unknown", "452 4.2.2 Mailbox full", ""])
def test_ordinary_bounces_are_not_signals(text: str) -> None:
    assert find_signal(text) is None


@given(st.text(max_size=300))
def test_find_signal_never_crashes(text: str) -> None:
    signal = find_signal(text)
    assert signal is None or signal.evidence.lower() in text.lower()


@pytest.mark.parametrize("text", ["[", "x = 1", "[[signals]]\nkind='spam'\npattern='a'", "[[signals]]\nkind='trap'\npattern='('"])
def test_bad_rule_files(text: str) -> None:
    with pytest.raises(RuleFileError):
        parse_signal_rules(text)
