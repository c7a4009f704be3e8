"""Decide the reason of one bounced recipient from what a bounce email quotes.

A bounce quotes a server's reply out of its dialogue: often without a reply code, with a
vague or missing RFC 3463 status, sometimes with the SMTP command it answered ("in reply
to end of DATA command"). :func:`bounce_reason` weighs these the way Sisimai does, so our
reasons compare with its vocabulary:

1. a reason an MTA detector read from its own fixed wording wins (Exim's "retry timeout
   exceeded" is ``expired`` whatever the status says);
2. a ``2.x.x`` status is a delivery report;
3. a provider's documented error code or fixed template (``codes.toml``: Yahoo's [TSS04]
   and "dd" template, Orange's OFR_506) names the reason more exactly than the status;
4. first pass: each reason in ``first_pass`` order tests its own evidence: the status
   names it, or its wording occurs where the command allows it. "User unknown" answered
   to RCPT is a missing mailbox; the same words after DATA come from a content filter
   (``filtered``); a refusal after MAIL FROM is the sender being ``rejected``;
5. a refusal at connect or EHLO is ``blocked`` (the sending host was refused);
6. second pass: wording of ``second_pass`` reasons; a permanent refusal after DATA that
   no wording explains and no specific status names is ``filtered`` (Sisimai: rejected
   for the content's header); then the status alone, then the provider rules the reply
   classifier uses (``providers.toml``);
7. a delayed action is ``expired``; any other text left unexplained is ``onhold``.

The wording and the status table are data (``rules/reasons.toml``), loaded once.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from mailcarrier.domain.classify import normalise_text
from mailcarrier.domain.detectors.base import lowercase_pattern
from mailcarrier.domain.errors import RuleFileError
from mailcarrier.domain.remote_hosts import remote_host_rules
from mailcarrier.domain.rules_engine import Rule, RuleSet, default_rules
from mailcarrier.domain.smtp_reply import SMTPStage
from mailcarrier.domain.vocabulary import Reason

__all__ = ["BounceEvidence", "ReasonTable", "bounce_reason", "clear_cache", "reason_table"]


@dataclass(frozen=True, slots=True)
class BounceEvidence:
    """What a bounce says about one recipient, as far as the reason is concerned."""

    diagnostic: str
    status: str | None = None
    command: SMTPStage = SMTPStage.UNKNOWN
    #: "smtp" when the text is a remote server's reply; "x-unix" for a local delivery
    #: program's words, "x-postfix" and the like for the MTA's own; "" when not said.
    diagnostic_type: str = ""
    action: str = "failed"
    #: A reason the MTA detector read from its own fixed wording.
    hint: Reason | None = None
    #: The notification's human-readable explanation (one recipient's DSN): its wording of
    #: the ``notice`` reasons of ``reasons.toml`` decides before the status.
    context: str = ""
    #: The host that answered (from ``Remote-MTA``), lowercased: a few providers' replies
    #: read differently from theirs (``rules/remote_hosts.toml``).
    remote_host: str = ""


@dataclass(frozen=True, slots=True, eq=False)
class ReasonTable:
    """The compiled contents of ``reasons.toml``."""

    first_pass: tuple[Reason, ...]
    second_pass: tuple[Reason, ...]
    vague: frozenset[Reason]
    #: Reasons whose wording in the notification's prose decides (see BounceEvidence.context).
    notice: tuple[Reason, ...]
    status: dict[str, Reason]
    patterns: dict[Reason, re.Pattern[str]]

    def match(self, reason: Reason, text: str) -> bool:
        pattern = self.patterns.get(reason)
        return pattern is not None and pattern.search(text) is not None

    def status_reason(self, status: str | None) -> Reason | None:
        """The reason a status names: exact, then the same code in the other class."""
        if not status:
            return None
        found = self.status.get(status)
        if found is None and status[:1] in "45":
            found = self.status.get(("5" if status[0] == "4" else "4") + status[1:])
        return found


def _reasons(values: object, key: str) -> tuple[Reason, ...]:
    if not isinstance(values, list):
        raise RuleFileError(f"reasons.toml: {key!r} must be a list of reasons")
    try:
        return tuple(Reason(str(v)) for v in values)
    except ValueError as exc:
        raise RuleFileError(f"reasons.toml: {key}: {exc}") from None


def _compile(data: str) -> ReasonTable:
    try:
        doc = tomllib.loads(data)
    except tomllib.TOMLDecodeError as exc:
        raise RuleFileError(f"reasons.toml: not valid TOML: {exc}") from None
    statuses = doc.get("status", {})
    patterns = doc.get("patterns", {})
    if not isinstance(statuses, dict) or not isinstance(patterns, dict):
        raise RuleFileError("reasons.toml: [status] and [patterns] must be tables")
    try:
        status = {str(k): Reason(str(v)) for k, v in statuses.items()}
        compiled = {
            Reason(name): lowercase_pattern("|".join(f"(?:{p})" for p in pats))
            for name, pats in patterns.items()
        }
    except (ValueError, re.error) as exc:
        raise RuleFileError(f"reasons.toml: {exc}") from None
    return ReasonTable(
        first_pass=_reasons(doc.get("first_pass"), "first_pass"),
        second_pass=_reasons(doc.get("second_pass"), "second_pass"),
        vague=frozenset(_reasons(doc.get("vague_reasons"), "vague_reasons")),
        notice=_reasons(doc.get("notice_reasons", []), "notice_reasons"),
        status=status,
        patterns=compiled,
    )


@lru_cache(maxsize=1)
def reason_table() -> ReasonTable:
    """The shipped table, compiled on first use."""
    data = (resources.files("mailcarrier.domain") / "rules" / "reasons.toml").read_text(encoding="utf-8")
    return _compile(data)


# Reasons whose wording, when a 5.1.1-style status says "user unknown", shows the server
# meant something else (a relay refusal, a block, a full mailbox ...).
_NOT_REALLY_UNKNOWN = (Reason.NORELAYING, Reason.BLOCKED, Reason.MAILBOXFULL, Reason.HASMOVED,
                       Reason.REJECTED, Reason.NOTACCEPT, Reason.FILTERED)
_EARLY_COMMANDS = frozenset({SMTPStage.CONNECT, SMTPStage.EHLO, SMTPStage.MAIL, SMTPStage.RCPT})
_DATA_COMMANDS = frozenset({SMTPStage.DATA, SMTPStage.EOD})

# Detector wording that says only that delivery gave up, not why.
_WEAK_HINTS = frozenset({Reason.EXPIRED, Reason.NETWORKERROR})

_Test = Callable[[ReasonTable, Reason | None, str, SMTPStage], bool]


def _by_status_or_words(reason: Reason) -> _Test:
    def test(table: ReasonTable, named: Reason | None, text: str, command: SMTPStage) -> bool:
        return named is reason or table.match(reason, text)
    return test


def _userunknown(table: ReasonTable, named: Reason | None, text: str, command: SMTPStage) -> bool:
    if named is Reason.USERUNKNOWN:
        return not any(table.match(other, text) for other in _NOT_REALLY_UNKNOWN)
    if named is Reason.SUSPEND:
        return False
    return command is SMTPStage.RCPT and table.match(Reason.USERUNKNOWN, text)


# Reasons whose wording, when a 5.2.x status says "filtered" (mailbox refuses), shows the
# server meant something else: Gmail's 5.2.1 "receiving mail at a rate that prevents
# additional messages" is a per-recipient rate limit.
_NOT_REALLY_FILTERED = (Reason.SPEEDING,)


def _filtered(table: ReasonTable, named: Reason | None, text: str, command: SMTPStage) -> bool:
    if named is Reason.FILTERED:
        return not any(table.match(other, text) for other in _NOT_REALLY_FILTERED)
    if named is Reason.SUSPEND or command is SMTPStage.RCPT:
        return False
    return table.match(Reason.FILTERED, text) or table.match(Reason.USERUNKNOWN, text)


def _rejected(table: ReasonTable, named: Reason | None, text: str, command: SMTPStage) -> bool:
    if named is Reason.REJECTED:
        return True
    if command is SMTPStage.MAIL:
        return table.match(Reason.REJECTED, text)
    if command in _DATA_COMMANDS:
        return named is not Reason.USERUNKNOWN and table.match(Reason.REJECTED, text)
    if named in (None, Reason.ONHOLD, Reason.UNDEFINED, Reason.SECURITYERROR, Reason.SYSTEMERROR):
        return table.match(Reason.REJECTED, text)
    return False


def _hostunknown(table: ReasonTable, named: Reason | None, text: str, command: SMTPStage) -> bool:
    if named is Reason.HOSTUNKNOWN:
        # A DNS failure is a network error, not proof that the domain is missing.
        return not table.match(Reason.NETWORKERROR, text)
    return table.match(Reason.HOSTUNKNOWN, text)


def _mesgtoobig(table: ReasonTable, named: Reason | None, text: str, command: SMTPStage) -> bool:
    if named is Reason.MESGTOOBIG:
        return True
    return named is not Reason.EXCEEDLIMIT and table.match(Reason.MESGTOOBIG, text)


def _spamdetected(table: ReasonTable, named: Reason | None, text: str, command: SMTPStage) -> bool:
    if named is Reason.SPAMDETECTED:
        return True
    # Before the content was sent the server cannot have judged it.
    return command not in _EARLY_COMMANDS and table.match(Reason.SPAMDETECTED, text)


def _norelaying(table: ReasonTable, named: Reason | None, text: str, command: SMTPStage) -> bool:
    # "Not permitted to relay without authentication" asks for credentials: securityerror.
    return table.match(Reason.NORELAYING, text) and "authenticat" not in text


_FIRST_TESTS: dict[Reason, _Test] = {
    Reason.USERUNKNOWN: _userunknown,
    Reason.FILTERED: _filtered,
    Reason.REJECTED: _rejected,
    Reason.HOSTUNKNOWN: _hostunknown,
    Reason.MESGTOOBIG: _mesgtoobig,
    Reason.SPAMDETECTED: _spamdetected,
    Reason.NORELAYING: _norelaying,
}


def _second_pass(table: ReasonTable, evidence: BounceEvidence, named: Reason | None,
                 text: str) -> tuple[Reason, str] | None:
    smtp = evidence.diagnostic_type in ("smtp", "")
    if named is not None and named not in table.vague and smtp and evidence.diagnostic_type:
        return named, f"bounce:status:{evidence.status}"
    for reason in table.second_pass:
        if reason is Reason.NORELAYING and not _norelaying(table, named, text, evidence.command):
            continue
        if table.match(reason, text):
            return reason, f"bounce:words:{reason.value}"
    if (evidence.command in _DATA_COMMANDS and (named is None or named in table.vague)
            and evidence.action != "delayed" and not (evidence.status or "").startswith("4.")):
        # Refused for good once the content was seen, and neither wording nor status says
        # why: the content (its header) was filtered, Sisimai's definition of "filtered".
        return Reason.FILTERED, "bounce:refused-after-data"
    if named is not None:
        return named, f"bounce:status:{evidence.status}"
    return None


@lru_cache(maxsize=1)
def _code_rules() -> RuleSet:
    """Provider error codes and fixed templates (``codes.toml``), shared with replies."""
    return RuleSet(tuple(r for r in default_rules().rules if r.origin.startswith("codes.toml")))


@lru_cache(maxsize=1)
def _code_gate() -> re.Pattern[str]:
    """Any code rule's text, in one pattern: most replies carry no provider code at all."""
    texts = [r.text.pattern for r in _code_rules().rules if r.text is not None]
    if len(texts) < len(_code_rules().rules):
        return re.compile("")  # a rule without text: every reply must be tried
    return lowercase_pattern("|".join(f"(?:{t})" for t in texts))  # searched in lowercased text


@lru_cache(maxsize=1)
def _provider_rules() -> RuleSet:
    """The provider rules shared with reply classification (``providers.toml``)."""
    return RuleSet(tuple(r for r in default_rules().rules if r.origin.startswith("providers.toml")))


def _provider_rule(text: str, status: str | None, command: SMTPStage) -> Rule | None:
    # When nothing else explains a bounce, a provider's own wording (Gmail's, Microsoft's
    # S3150, Yahoo's TSS04 ...) may: the reply classifier's provider rules are asked.
    return _provider_rules().first_match(None, status or "", command, normalise_text(text))


def bounce_reason(evidence: BounceEvidence, table: ReasonTable | None = None) -> tuple[Reason, str]:
    """The reason for one recipient and the id of what decided it (for tracing)."""
    table = table or reason_table()
    if not evidence.context:
        return _decide(table, evidence)
    # The notice differs from bounce to bounce while the rest of the evidence repeats: it
    # is weighed apart, so decisions on the same reply stay shared in the cache.
    core = BounceEvidence(evidence.diagnostic, evidence.status, evidence.command, evidence.diagnostic_type,
                          evidence.action, evidence.hint, remote_host=evidence.remote_host)
    early = _early(core)
    if early is not None:
        return early
    return _notice(table, evidence.context) or _decide(table, core)


def clear_cache() -> None:
    """Forget decided evidence (benchmarks measure cold decisions; tests swap tables)."""
    _decide.cache_clear()
    _early.cache_clear()
    _notice.cache_clear()


@lru_cache(maxsize=4096)
def _notice(table: ReasonTable, context: str) -> tuple[Reason, str] | None:
    # The notification's own words ("was automatically rejected: Not enough disk space",
    # "The user(s) account is disabled.") state the mailbox's or message's condition,
    # which the status and the quoted reply often reduce to "user unknown".
    notice = " ".join(context.split()).lower()
    for reason in table.notice:
        if table.match(reason, notice):
            return reason, f"bounce:notice:{reason.value}"
    return None


@lru_cache(maxsize=16384)
def _early(evidence: BounceEvidence) -> tuple[Reason, str] | None:
    """What decides before anything else: an MTA's own wording, a delivery, a provider code."""
    hint = evidence.hint
    if hint is not None and hint not in _WEAK_HINTS:
        return hint, f"bounce:detector:{hint.value}"
    status = evidence.status
    if status and status.startswith("2."):
        return Reason.DELIVERED, f"bounce:status:{status}"
    text = normalise_text(evidence.diagnostic).lower()
    if _code_gate().search(text) is None:
        return None
    code = _code_rules().first_match(None, status or "", evidence.command, text)
    if code is not None:
        # A provider's own error code (Yahoo's [TSS04], Orange's OFR_506) names the reason
        # more exactly than the RFC 3463 status it comes with or the stage.
        return code.reason, code.id
    return None


@lru_cache(maxsize=16384)
def _decide(table: ReasonTable, evidence: BounceEvidence) -> tuple[Reason, str]:
    early = _early(evidence)
    if early is not None:
        return early
    hint = evidence.hint
    status = evidence.status
    text = " ".join(evidence.diagnostic.split()).lower()
    named = table.status_reason(status)
    if evidence.remote_host and (named is None or named in table.vague):
        by_host = remote_host_rules().match(evidence.remote_host, status, evidence.command, text)
        if by_host is not None:
            return by_host.reason, by_host.id
    temporary = status is not None and status.startswith("4.")
    local = evidence.diagnostic_type == "x-unix"
    if not local:
        for reason in table.first_pass:
            if reason is Reason.HOSTUNKNOWN and temporary:
                continue  # a temporary DNS failure does not prove the domain is missing
            test = _FIRST_TESTS.get(reason) or _by_status_or_words(reason)
            if test(table, named, text, evidence.command):
                return reason, f"bounce:first:{reason.value}"
    if hint is not None:
        return hint, f"bounce:detector:{hint.value}"
    if evidence.command in (SMTPStage.CONNECT, SMTPStage.EHLO) and not temporary:
        # Refused before any envelope was sent: the sending host is what is refused.
        return Reason.BLOCKED, "bounce:refused-at-connect"
    found = _second_pass(table, evidence, named, text)
    if found is not None and not (local and found[0] in table.vague):
        return found
    if local:
        # A local delivery program (procmail, a pipe) failed with no better explanation.
        return Reason.MAILERERROR, "bounce:local-program"
    provider = _provider_rule(text, status, evidence.command)
    if provider is not None:
        return provider.reason, provider.id
    if evidence.action == "delayed":
        return Reason.EXPIRED, "bounce:delayed"
    if table.match(Reason.VACATION, text):
        return Reason.VACATION, "bounce:words:vacation"
    if text:
        return Reason.ONHOLD, "bounce:onhold"
    return Reason.UNDEFINED, "bounce:undefined"
