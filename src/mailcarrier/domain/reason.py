"""Decide the reason of one failure from its evidence: the reason half of the classifier.

:func:`decide_reason` is called by :func:`mailcarrier.domain.classify.classify_evidence`
for live replies and bounce emails alike; the precedence it applies is written in that
module's docstring and in ``docs/classification.md``. The wording families and the status
table are data (``rules/reasons.toml``); stage wording and bare-code meanings are ordered
rule files (``rules/stage.toml``, ``rules/fallback.toml``) and provider codes and wording
the rules of the provider registry (``data/providers/*.toml``), all in the format of
:mod:`mailcarrier.domain.rules_engine`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from mailcarrier.domain.errors import RuleFileError
from mailcarrier.domain.evidence import Evidence
from mailcarrier.domain.family_filter import FamilyFilter
from mailcarrier.domain.patterns import family_parts, lowercase_pattern
from mailcarrier.domain.remote_hosts import remote_host_rules
from mailcarrier.domain.rules_engine import PROVIDER_CODES, PROVIDER_WORDING, Rule, RuleSet
from mailcarrier.domain.smtp_reply import SMTPStage
from mailcarrier.domain.vocabulary import Reason

__all__ = ["ReasonTable", "RuleTiers", "clear_cache", "compile_reason_table", "decide_reason", "reason_table",
           "rule_tiers"]


@dataclass(frozen=True, slots=True, eq=False)
class ReasonTable:
    """The compiled contents of ``reasons.toml``."""

    first_pass: tuple[Reason, ...]
    second_pass: tuple[Reason, ...]
    vague: frozenset[Reason]
    #: Reasons whose wording in the notification's prose decides (see Evidence.context).
    notice: tuple[Reason, ...]
    status: dict[str, Reason]
    #: Each reason's patterns as written, in file order (for tracing which one matched).
    sources: dict[Reason, tuple[str, ...]]
    #: Each family as the regexes :func:`~mailcarrier.domain.patterns.family_parts` splits it
    #: into: searched in turn, they find a match exactly when the family's one alternation
    #: does, several times faster.
    parts: dict[Reason, tuple[re.Pattern[str], ...]]
    #: Rules out, in one pass over a text, the families whose words it does not hold.
    filter: FamilyFilter[Reason]

    def match(self, reason: Reason, text: str) -> bool:
        # One decision asks about the same family several times (first pass, the
        # not-really-unknown checks, second pass): each family is searched once per text.
        return _family_match(self, reason, text)

    def alternation(self, reason: Reason) -> re.Pattern[str]:
        """The family as one alternation of its patterns, what ``parts`` is proven equal to
        (compiled on demand: decisions search ``parts``, and start-up need not compile both)."""
        return lowercase_pattern("|".join(f"(?:{p})" for p in self.sources.get(reason, ())))

    def which(self, reason: Reason, text: str) -> int | None:
        """The index of the first of ``reason``'s patterns found in ``text`` (slow; for tracing)."""
        for index, source in enumerate(self.sources.get(reason, ())):
            if lowercase_pattern(source).search(text):
                return index
        return None

    def status_reason(self, status: str | None) -> Reason | None:
        """The reason a status names: exact, then the same code in the other class."""
        if not status:
            return None
        found = self.status.get(status)
        if found is None and status[:1] in "45":
            found = self.status.get(("5" if status[0] == "4" else "4") + status[1:])
        return found


@lru_cache(maxsize=8192)
def _family_match(table: ReasonTable, reason: Reason, text: str) -> bool:
    if not table.filter.may_match(reason, _candidates(table, text)):
        return False
    parts = table.parts.get(reason, ())
    if len(parts) == 1:  # most families: one search, no generator
        return parts[0].search(text) is not None
    return any(part.search(text) is not None for part in parts)


@lru_cache(maxsize=256)
def _candidates(table: ReasonTable, text: str) -> int:
    # One decision asks many families about the same text: one pass for all of them.
    return table.filter.candidates(text)


def _reasons(values: object, key: str) -> tuple[Reason, ...]:
    if not isinstance(values, list):
        raise RuleFileError(f"reasons.toml: {key!r} must be a list of reasons")
    try:
        return tuple(Reason(str(v)) for v in values)
    except ValueError as exc:
        raise RuleFileError(f"reasons.toml: {key}: {exc}") from None


def compile_reason_table(data: str) -> ReasonTable:
    """Compile a reasons.toml-layout text; RuleFileError when it is invalid."""
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
        sources = {Reason(name): tuple(str(p) for p in pats) for name, pats in patterns.items()}
        parts = {name: family_parts(pats) for name, pats in sources.items()}
    except (ValueError, re.error) as exc:
        raise RuleFileError(f"reasons.toml: {exc}") from None
    return ReasonTable(
        first_pass=_reasons(doc.get("first_pass"), "first_pass"),
        second_pass=_reasons(doc.get("second_pass"), "second_pass"),
        vague=frozenset(_reasons(doc.get("vague_reasons"), "vague_reasons")),
        notice=_reasons(doc.get("notice_reasons", []), "notice_reasons"),
        status=status,
        sources=sources,
        parts=parts,
        filter=FamilyFilter(sources),
    )


@lru_cache(maxsize=1)
def reason_table() -> ReasonTable:
    """The shipped table, compiled on first use."""
    data = (resources.files("mailcarrier.domain") / "rules" / "reasons.toml").read_text(encoding="utf-8")
    return compile_reason_table(data)


# Reasons whose wording, when a 5.1.1-style status says "user unknown", shows the server
# meant something else (a relay refusal, a block, a full mailbox, a rate limit: Comcast's
# "452 4.1.0 ... Rate limit exceeded", RL codes of postmaster.comcast.net).
_NOT_REALLY_UNKNOWN = (Reason.NORELAYING, Reason.BLOCKED, Reason.MAILBOXFULL, Reason.HASMOVED,
                       Reason.REJECTED, Reason.NOTACCEPT, Reason.FILTERED, Reason.SPEEDING)
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
    if named is Reason.SUSPEND:
        return False
    if command is SMTPStage.RCPT:
        # The recipient's own filter speaks at RCPT too ("Delivery refused due to recipient
        # preferences"); missing-mailbox words there were userunknown's to take.
        return table.match(Reason.FILTERED, text)
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
        # A DNS failure is a network error, not proof that the domain is missing, unless the
        # words say the name does not exist (Postfix's permanent "Host or domain name not
        # found. Name service error ...: Host not found", without "try again").
        return table.match(Reason.HOSTUNKNOWN, text) or not table.match(Reason.NETWORKERROR, text)
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


def _second_pass(table: ReasonTable, evidence: Evidence, named: Reason | None,
                 text: str) -> tuple[Reason, str] | None:
    smtp = evidence.diagnostic_type in ("smtp", "")
    if named is not None and named not in table.vague and smtp and evidence.diagnostic_type:
        return named, f"status:{evidence.status}"
    for reason in table.second_pass:
        if reason is Reason.NORELAYING and not _norelaying(table, named, text, evidence.command):
            continue
        if table.match(reason, text):
            return reason, f"words:{reason.value}"
    if (evidence.command in _DATA_COMMANDS and (named is None or named in table.vague)
            and evidence.action != "delayed" and not _temporary(evidence)):
        # Refused for good once the content was seen, and neither wording nor status says
        # why: the content (its header) was filtered, Sisimai's definition of "filtered".
        return Reason.FILTERED, "stage:refused-after-data"
    if named is not None:
        return named, f"status:{evidence.status}"
    return None


@dataclass(frozen=True, slots=True, eq=False)
class RuleTiers:
    """A rule set split by where each file stands in the precedence of evidence."""

    user: RuleSet  #: an operator's own files: decide first
    codes: RuleSet  #: providers' documented error codes (registry rules with tier "code")
    stage: RuleSet  #: wording that means something particular at one SMTP stage (stage.toml)
    providers: RuleSet  #: providers' own wording, asked when nothing general explains (tier "wording")
    fallback: RuleSet  #: what a bare reply code means at a known stage (fallback.toml)
    #: Matches wherever one of the ``codes`` rules' texts does (all of them have one), as
    #: :func:`~mailcarrier.domain.patterns.family_parts`; otherwise the empty pattern.
    code_gate: tuple[re.Pattern[str], ...]
    #: Before the gate: rules a text out in one pass from the words the codes' texts hold.
    code_filter: FamilyFilter[int]


_SHIPPED = (PROVIDER_CODES, "stage.toml", PROVIDER_WORDING, "fallback.toml")


@lru_cache(maxsize=8)
def rule_tiers(rules: RuleSet) -> RuleTiers:
    """``rules`` grouped by where each shipped rule comes from (anything else is the user's)."""
    groups: dict[str, list[Rule]] = {name: [] for name in ("user", *_SHIPPED)}
    for rule in rules.rules:
        shipped = next((name for name in _SHIPPED if rule.origin.startswith(name)), "user")
        groups[shipped].append(rule)
    texts = [r.text.pattern for r in groups[PROVIDER_CODES] if r.text is not None]
    complete = bool(texts) and len(texts) == len(groups[PROVIDER_CODES])
    gate = family_parts(tuple(texts)) if complete else (re.compile(""),)
    # Without a text on every code rule, the gate matches anything: so does the filter.
    code_filter: FamilyFilter[int] = FamilyFilter({0: tuple(texts) if complete else ("",)})
    return RuleTiers(RuleSet(tuple(groups["user"])), RuleSet(tuple(groups[PROVIDER_CODES])),
                     RuleSet(tuple(groups["stage.toml"])), RuleSet(tuple(groups[PROVIDER_WORDING])),
                     RuleSet(tuple(groups["fallback.toml"])), gate, code_filter)


#: What decided: the reason, a trace id, and the data rule when one of the rule files did.
Decision = tuple[Reason, str, "Rule | None"]


def decide_reason(evidence: Evidence, rules: RuleSet, table: ReasonTable | None = None) -> Decision:
    """The reason for one recipient, the id of what decided it and the deciding data rule.

    ``evidence.diagnostic`` is read as :func:`~mailcarrier.domain.evidence.normalise_text`
    leaves it (addresses masked, whitespace collapsed): call through
    :func:`mailcarrier.domain.classify.classify_evidence`, which does that once.
    """
    table = table or reason_table()
    tiers = rule_tiers(rules)
    if not evidence.context:
        return _decide(table, tiers, evidence)
    # The notice differs from bounce to bounce while the rest of the evidence repeats: it
    # is weighed apart, so decisions on the same reply stay shared in the cache.
    core = Evidence(evidence.diagnostic, evidence.status, evidence.command, evidence.diagnostic_type,
                    evidence.action, evidence.hint, remote_host=evidence.remote_host, code=evidence.code)
    early = _early(tiers, core)
    if early is not None:
        return early
    notice = _notice(table, evidence.context)
    if notice is not None:
        return notice[0], notice[1], None
    return _decide(table, tiers, core)


def clear_cache() -> None:
    """Forget decided evidence (benchmarks measure cold decisions; tests swap tables)."""
    _decide.cache_clear()
    _early.cache_clear()
    _notice.cache_clear()
    _family_match.cache_clear()
    _candidates.cache_clear()


@lru_cache(maxsize=4096)
def _notice(table: ReasonTable, context: str) -> tuple[Reason, str] | None:
    # The notification's own words ("was automatically rejected: Not enough disk space",
    # "The user(s) account is disabled.") state the mailbox's or message's condition,
    # which the status and the quoted reply often reduce to "user unknown".
    notice = " ".join(context.split()).lower()
    for reason in table.notice:
        if table.match(reason, notice):
            return reason, f"notice:{reason.value}"
    return None


def _temporary(evidence: Evidence) -> bool:
    if evidence.code is not None and 400 <= evidence.code < 600:
        return evidence.code < 500
    return (evidence.status or "").startswith("4.")


def _from_rule(rule: Rule | None) -> Decision | None:
    return None if rule is None else (rule.reason, rule.id, rule)


@lru_cache(maxsize=16384)
def _early(tiers: RuleTiers, evidence: Evidence) -> Decision | None:
    """What decides before anything else: the operator's rules, a delivery, an MTA's own
    fixed wording, a provider's documented code, a stage's particular wording."""
    status = evidence.status or ""
    code = evidence.code
    if status.startswith("2.") or (not status and code is not None and 200 <= code < 400
                                   and evidence.diagnostic_type == "smtp"):
        return Reason.DELIVERED, "positive-reply", None
    masked = evidence.diagnostic  # classify_evidence masked and collapsed it already
    if tiers.user.rules:
        found = _from_rule(tiers.user.first_match(code, status, evidence.command, masked))
        if found is not None:
            return found
    hint = evidence.hint
    if hint is not None and hint not in _WEAK_HINTS:
        return hint, f"detector:{hint.value}", None
    text = masked.lower()
    if not tiers.code_filter.rules_out(text) and any(gate.search(text) is not None
                                                      for gate in tiers.code_gate):
        # A provider's own error code (Yahoo's [TSS04], Orange's OFR_506) names the reason
        # more exactly than the RFC 3463 status it comes with or the stage.
        found = _from_rule(tiers.codes.first_match(code, status, evidence.command, text))
        if found is not None:
            return found
    return None


@lru_cache(maxsize=16384)
def _decide(table: ReasonTable, tiers: RuleTiers, evidence: Evidence) -> Decision:
    early = _early(tiers, evidence)
    if early is not None:
        return early
    hint = evidence.hint
    status = evidence.status
    masked = evidence.diagnostic
    text = masked.lower()
    named = table.status_reason(status)
    if evidence.remote_host and (named is None or named in table.vague):
        by_host = remote_host_rules().match(evidence.remote_host, status, evidence.command, text)
        if by_host is not None:
            return by_host.reason, by_host.id, by_host
    temporary = _temporary(evidence)
    local = evidence.diagnostic_type == "x-unix"
    if not local:
        command = evidence.command
        for reason in table.first_pass:
            if reason is Reason.HOSTUNKNOWN and temporary:
                continue  # a temporary DNS failure does not prove the domain is missing
            test = _FIRST_TESTS.get(reason) or _by_status_or_words(reason)
            if reason is Reason.USERUNKNOWN and command is SMTPStage.UNKNOWN and not evidence.action:
                # A live reply whose stage the caller did not give (``mailcarrier classify``
                # without --stage): missing-mailbox wording is the RCPT answer it almost always
                # is (RFC 5321 3.3, 4.2.2: mailbox replies answer RCPT). A bounce record always
                # has an Action; there an unstated command keeps the gateway reading (filtered).
                if test(table, named, text, SMTPStage.RCPT):
                    return reason, f"first:{reason.value}", None
            elif test(table, named, text, command):
                return reason, f"first:{reason.value}", None
    if hint is not None:
        return hint, f"detector:{hint.value}", None
    # Wording that means something particular at the stage it answered (rules without a
    # stage hold at any stage, greylisting for one).
    staged = tiers.stage.first_match(evidence.code, status or "", evidence.command,
                                     masked)
    if staged is not None:
        return staged.reason, staged.id, staged
    if evidence.command in (SMTPStage.CONNECT, SMTPStage.EHLO) and not temporary:
        # Refused before any envelope was sent: the sending host is what is refused.
        return Reason.BLOCKED, "stage:refused-at-connect", None
    found = _second_pass(table, evidence, named, text)
    if found is not None and not (local and found[0] in table.vague):
        return found[0], found[1], None
    if local:
        # A local delivery program (procmail, a pipe) failed with no better explanation.
        return Reason.MAILERERROR, "local-program", None
    # When nothing general explains a reply, a provider's own wording (Gmail's, Microsoft's
    # S3150, Yahoo's TSS04 ...) may.
    provider = tiers.providers.first_match(evidence.code, status or "", evidence.command,
                                           masked)
    if provider is not None:
        return provider.reason, provider.id, provider
    if evidence.action == "delayed":
        return Reason.EXPIRED, "delayed", None
    if table.match(Reason.VACATION, text):
        return Reason.VACATION, "words:vacation", None
    if evidence.command is not SMTPStage.UNKNOWN and evidence.code is not None:
        # Only the reply code is left: what it means at the stage it answered (RFC 5321).
        fallback = tiers.fallback.first_match(evidence.code, status or "", evidence.command, text)
        if fallback is not None:
            return fallback.reason, fallback.id, fallback
    if text:
        return Reason.ONHOLD, "onhold", None
    return Reason.UNDEFINED, "undefined", None
