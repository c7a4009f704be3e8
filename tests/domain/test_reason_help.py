"""Reason help: every reason explained, providers recognised, bad files refused."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailcarrier.domain.errors import RuleFileError
from mailcarrier.domain.reason_help import (
    GUIDANCE_OUTCOMES,
    explain,
    guidance,
    load_help,
    parse_help,
    provider_for,
)
from mailcarrier.domain.vocabulary import Reason


def test_every_reason_has_one_line() -> None:
    table = load_help()
    for reason in Reason:
        line = explain(reason, table)
        assert line and "\n" not in line


def test_explain_unknown_or_missing_reason_does_not_fail() -> None:
    assert "Unrecognised" in explain("nonsense")
    assert explain(None) == explain(Reason.UNDEFINED)


@pytest.mark.parametrize(("mx", "domain", "expected"), [
    ("gmail-smtp-in.l.google.com", "example.org", "Google"),
    (None, "hotmail.com", "Microsoft"),
    ("example-com.mail.protection.outlook.com", "example.com", "Microsoft"),
    ("mx0a-001.pphosted.com", "corp.example", "Proofpoint"),
    ("mta5.am0.yahoodns.net", None, "Yahoo"),
])
def test_provider_matches_mx_or_domain(mx: str | None, domain: str | None, expected: str) -> None:
    provider = provider_for(mx, domain)
    assert provider is not None and provider.name.startswith(expected)
    assert provider.postmaster.startswith("https://")


def test_provider_unknown_is_none() -> None:
    assert provider_for("mx.smallcompany.example", "smallcompany.example") is None
    assert provider_for("evilgoogle.com", "notgmail.com") is None


def test_parse_help_refuses_missing_reason() -> None:
    with pytest.raises(RuleFileError, match="no explanation"):
        parse_help('[reasons]\nuserunknown = "x"\n')


def test_parse_help_refuses_unknown_reason_and_bad_provider() -> None:
    full = "\n".join(f'{r.value} = "x"' for r in Reason)
    with pytest.raises(RuleFileError, match="unknown reason"):
        parse_help(f"[reasons]\n{full}\nbogus = \"y\"\n")
    # providers and their postmaster links live in the provider registry (an http link is
    # refused there: tests/domain/test_provider_registry.py), never in the help table
    with pytest.raises(RuleFileError, match="provider registry"):
        parse_help(f'[reasons]\n{full}\n[[providers]]\nname = "A"\nmx = ["a.example"]\n'
                   'postmaster = "https://a.example"\n')


@given(st.text(max_size=200))
def test_parse_help_raises_only_rule_file_error(text: str) -> None:
    with contextlib.suppress(RuleFileError):
        parse_help(text)


@given(st.one_of(st.none(), st.text(max_size=80)), st.one_of(st.none(), st.text(max_size=80)))
def test_provider_for_never_fails(mx: str | None, domain: str | None) -> None:
    provider_for(mx, domain)


def test_guidance_fills_facts_and_marks_missing_ones() -> None:
    lines = guidance("delivered", {"email": "ann@corp.example", "mx_host": "mx.corp.example",
                                   "queue_id": "4AbC", "local_ip": "192.0.2.10"})
    text = " ".join(lines)
    assert "ann@corp.example" in text and "4AbC" in text and "192.0.2.10" in text
    assert "(not recorded)" in text  # remote_ip was not given
    assert "{" not in text


def test_every_outcome_has_guidance() -> None:
    for outcome in GUIDANCE_OUTCOMES:
        assert guidance(outcome, {}), outcome
