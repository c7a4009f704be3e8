"""One classifier for SMTP replies and bounce emails: reason, category, bounce type, retry.

A live reply and one recipient of a bounce email become the same :class:`Evidence`, and
:func:`classify_evidence` decides both with the same rules, so the same words get the
same verdict on both paths. The reason is decided in this order of evidence, the first
that speaks deciding (:mod:`mailcarrier.domain.reason`):

1. **A delivery**: a 2xx/3xx reply or a 2.x.x status.
2. **An operator's own rules** (``rules validate``-checked files passed to :func:`load_rules`).
3. **An MTA's own fixed wording**, read by the bounce detector that knows that MTA
   (Exim's "retry timeout exceeded" is ``expired`` whatever its status says).
4. **A provider's documented code** (``tier = "code"`` rules of the provider registry,
   ``data/providers/*.toml``: Yahoo's [TSS04], Orange's OFR_506, Microsoft's S3150), more
   exact than the RFC 3463 status it comes with.
5. **A provider's reading keyed by the answering host** (``[[host_rule]]`` tables), when the
   status is vague.
6. **Specific wording and the enhanced status's detail** (``reasons.toml``), reason by
   reason in a fixed order: a reason wins when the status names it or its wording occurs
   where the command allows it. The stage only separates wordings that mean different
   things at different stages: "user unknown" answered to RCPT is a missing mailbox, the
   same words answered to the end of DATA come from a content filter (``filtered``),
   after MAIL FROM it is our sender that is ``rejected``.
7. **Wording particular to one stage** (``stage.toml``): greylisting, a 4xx at the banner,
   too many recipients at RCPT, a size refusal after DATA, STARTTLS refused.
8. A refusal at the banner or EHLO that nothing explains is ``blocked``.
9. **Broader wording**, then a status that only names a vague reason; a permanent
   refusal after DATA that nothing explains is ``filtered``; a local program's failure
   is ``mailererror``.
10. **A provider's own wording** (``tier = "wording"`` rules of the registry) when nothing
    general explains it.
11. ``expired`` for a delayed notice; vacation wording.
12. **The reply code at its stage** (``fallback.toml``, RFC 5321 section 4.2), when the
    command is known.
13. ``onhold`` for words nothing explains, ``undefined`` when there are none.

Then the consequences, from the reason and the codes (:func:`consequences`):

* *permanent* from the reply code, else the status class, else the DSN ``Action``; a 552
  answered to RCPT is temporary (RFC 5321 section 4.5.3.1.10), as a rule's ``retry`` may say;
* the **category** of seed 001 from the reason, except that a temporary failure is never
  category 1 or 2 (greylisting, throttling and "try again later" are category 3) and a
  timeout is category 3 whatever its reason;
* ``bounce_type`` hard for categories 1 and 2, soft otherwise (seed 001), and
  ``address_invalid`` for category 2 only: a reply that says nothing about the mailbox or
  the domain never invalidates a contact.

Every result names the rule that decided it; :func:`explain` lists the evidence read.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from mailcarrier.domain.evidence import Evidence, normalise_text
from mailcarrier.domain.reason import clear_cache as clear_reason_cache
from mailcarrier.domain.reason import decide_reason
from mailcarrier.domain.rules_engine import Rule, RuleSet, Scope, default_rules
from mailcarrier.domain.smtp_reply import EnhancedStatus, SMTPReply, SMTPStage, status_in_text
from mailcarrier.domain.vocabulary import (
    INTERNAL_CODES,
    BounceType,
    Category,
    Reason,
    category_for,
)

__all__ = [
    "Classification",
    "Evidence",
    "classify",
    "classify_evidence",
    "classify_internal",
    "classify_reply",
    "clear_cache",
    "explain",
    "normalise_text",
]


@dataclass(frozen=True, slots=True)
class Classification:
    """What a failure means and what to do about it."""

    reason: Reason
    category: Category
    #: Seed 001's "Email Invalid = TRUE": category 2, the mailbox or domain does not exist.
    address_invalid: bool
    #: The failure is final for this message (5xx, or 5.x.x without a code).
    permanent: bool
    #: Try this recipient again later.
    retry: bool
    scope: Scope
    #: The id of the rule that decided, for tracing ("internal:146" for our own codes).
    rule: str
    #: Our internal code (146, 147, 160, ...) when the failure happened on our side.
    internal_code: int | None = None
    #: The server may have accepted the message (a 147-style timeout after the final ".").
    outcome_unknown: bool = False

    @property
    def bounce_type(self) -> BounceType | None:
        """Seed 001's hard (categories 1, 2) or soft (3, 4, 9); None for a delivery."""
        return BounceType.of(self.reason, self.category)

    @property
    def hard_bounce(self) -> bool:
        """The address itself is bad (Sisimai's "hardbounce"); the same as ``address_invalid``."""
        return self.address_invalid


_DEFAULT_SCOPE: dict[Reason, Scope] = {
    **dict.fromkeys(
        (Reason.BLOCKED, Reason.BADREPUTATION, Reason.REQUIREPTR, Reason.TOOMANYCONN, Reason.SPEEDING,
         Reason.NETWORKERROR, Reason.SYSTEMFULL, Reason.FAILEDSTARTTLS, Reason.AUTHFAILURE,
         Reason.NORELAYING, Reason.REJECTED),
        Scope.DOMAIN,
    ),
    **dict.fromkeys(
        (Reason.SPAMDETECTED, Reason.CONTENTERROR, Reason.VIRUSDETECTED, Reason.MESGTOOBIG,
         Reason.NOTCOMPLIANTRFC, Reason.POLICYVIOLATION),
        Scope.MESSAGE,
    ),
}

_TIMEOUT_WORDS = ("timed out", "timeout", "time out", "time-out")


#: Mailbox statements that decide the address once the sender has given up (see consequences).
_SETTLED_WHEN_FAILED = frozenset({Reason.USERUNKNOWN, Reason.HASMOVED})


def _permanent(evidence: Evidence) -> bool:
    code = evidence.code
    if code is not None and 400 <= code < 600:
        # RFC 5321 4.5.3.1.10: a 552 to RCPT (too many recipients, storage) is to be
        # treated as the temporary 452 it should have been.
        return code >= 500 and not (code == 552 and evidence.command is SMTPStage.RCPT)
    status = evidence.status or ""
    if status[:1] in ("4", "5"):
        return status[0] == "5"
    # Neither code says: a DSN's "Action: failed" is final; an unstated outcome is not.
    return evidence.action == "failed"


def consequences(evidence: Evidence, reason: Reason, rule_id: str, rule: Rule | None) -> Classification:
    """Permanence, retry, category, scope and bounce type of a decided reason."""
    if reason is Reason.DELIVERED:
        return Classification(reason, Category.UNKNOWN, False, False, False, Scope.RECIPIENT, rule_id)
    permanent = _permanent(evidence)
    if rule is not None and rule.retry is not None:
        permanent = not rule.retry
    words = evidence.diagnostic.lower()
    timeout = reason in (Reason.NETWORKERROR, Reason.EXPIRED) and any(w in words for w in _TIMEOUT_WORDS)
    # A bounce email reporting the recipient "failed" ends the sender's retries. When the
    # server's last word was that the mailbox does not exist (or moved), that answer stands
    # even if worded as 4xx: Postfix returns a message whose queue lifetime ran out on
    # "450 4.1.1 User unknown" with Action: failed. Domain-level 4xx answers (DNS errors,
    # a Null MX that Gmail reports as 4.0.0) stay temporary: a DNS failure proves nothing.
    # A live 4xx has action "" and stays a temporary failure, category 3.
    settled = permanent or (evidence.action == "failed" and reason in _SETTLED_WHEN_FAILED)
    category = category_for(reason, permanent=settled, timeout=timeout)
    scope = (rule.scope if rule is not None and rule.scope is not None
             else _DEFAULT_SCOPE.get(reason, Scope.RECIPIENT))
    return Classification(reason, category, category is Category.INVALID_ADDRESS, permanent,
                          not permanent, scope, rule_id)


@lru_cache(maxsize=65536)
def _classify(rules: RuleSet, evidence: Evidence) -> Classification:
    reason, rule_id, rule = decide_reason(evidence, rules)
    return consequences(evidence, reason, rule_id, rule)


def clear_cache() -> None:
    """Forget every decided reply and reason (benchmarks measure cold decisions)."""
    _classify.cache_clear()
    _classify_text.cache_clear()
    clear_reason_cache()


def classify_evidence(evidence: Evidence, rules: RuleSet | None = None) -> Classification:
    """Classify one recipient's failure, from a live reply or from a bounce email."""
    rules = rules or default_rules()
    # Addresses and IP literals never decide a reason: masked, replies that differ only in
    # them share one decision (and one cache entry), live and in a bounce alike.
    masked = normalise_text(evidence.diagnostic)
    if masked != evidence.diagnostic:
        # Built directly: dataclasses.replace() costs several times a constructor call.
        evidence = Evidence(masked, evidence.status, evidence.command, evidence.diagnostic_type,
                            evidence.action, evidence.hint, evidence.context, evidence.remote_host,
                            evidence.code)
    if evidence.context:
        # The notice varies from bounce to bounce: not worth a cache entry.
        reason, rule_id, rule = decide_reason(evidence, rules)
        return consequences(evidence, reason, rule_id, rule)
    return _classify(rules, evidence)


def _status_of(text: str, status: EnhancedStatus | str | None) -> str | None:
    if status is None:
        return status_in_text(text) or None if text else None
    if isinstance(status, str):
        return status_in_text(status) or (status_in_text(text) if text else "") or None
    return str(status)


def classify(
    text: str = "",
    *,
    code: int | None = None,
    status: EnhancedStatus | str | None = None,
    stage: SMTPStage = SMTPStage.UNKNOWN,
    permanent_hint: bool | None = None,
    rules: RuleSet | None = None,
) -> Classification:
    """Classify a failure described by any of: reply code, enhanced code, free text.

    ``status`` may be omitted: an enhanced code found in ``text`` is used instead.
    ``permanent_hint`` decides permanence only when neither code says it (False reads as
    a DSN ``Action: delayed``).
    """
    action = "failed" if permanent_hint is True else "delayed" if permanent_hint is False else ""
    # The per-reply hot path: masked text as the key, no Evidence built on a cache hit.
    return _classify_text(rules or default_rules(), normalise_text(text), code, _status_of(text, status),
                          stage, action)


@lru_cache(maxsize=65536)
def _classify_text(rules: RuleSet, text: str, code: int | None, status: str | None, stage: SMTPStage,
                   action: str) -> Classification:
    return _classify(rules, Evidence(text, status, stage, "smtp", action, code=code))


def classify_reply(reply: SMTPReply, rules: RuleSet | None = None) -> Classification:
    """Classify a parsed SMTP reply, taking its stage into account."""
    return classify(reply.text, code=reply.code, status=reply.enhanced, stage=reply.stage, rules=rules)


def explain(evidence: Evidence, rules: RuleSet | None = None) -> list[tuple[str, str]]:
    """The evidence read, in precedence order, and what decided: (label, value) pairs."""
    result = classify_evidence(evidence, rules)
    lines = [
        ("reply code", str(evidence.code) if evidence.code is not None else "(none)"),
        ("enhanced status", evidence.status or "(none)"),
        ("stage (command answered)", evidence.command.value),
        ("diagnostic type", evidence.diagnostic_type or "(unstated)"),
        ("action", evidence.action),
    ]
    if evidence.hint is not None:
        lines.append(("MTA wording read by its detector", evidence.hint.value))
    if evidence.remote_host:
        lines.append(("remote host", evidence.remote_host))
    if evidence.context:
        lines.append(("notice", " ".join(evidence.context.split())[:200]))
    lines.append(("text rules see", normalise_text(evidence.diagnostic)[:300] or "(no text)"))
    lines += [
        ("decided by", result.rule),
        ("reason", result.reason.value),
        ("permanent", str(result.permanent).lower()),
        ("category", f"{int(result.category)} - {result.category.label}"),
        ("bounce type", result.bounce_type.value if result.bounce_type else "(not a bounce)"),
        ("address invalid", str(result.address_invalid).lower()),
        ("retry", str(result.retry).lower()),
    ]
    return lines


def classify_internal(code: int) -> Classification:
    """Classify one of our internal codes (146 timeout before ".", 147 after, 160 ...)."""
    entry = INTERNAL_CODES[code]
    permanent = not entry.retry and not entry.outcome_unknown
    category = category_for(entry.reason, permanent=permanent, timeout="timeout" in entry.name)
    return Classification(
        reason=entry.reason,
        category=category,
        address_invalid=category is Category.INVALID_ADDRESS,
        permanent=permanent,
        retry=entry.retry,
        scope=Scope.RECIPIENT if permanent else Scope.DOMAIN,
        rule=f"internal:{entry.code}",
        internal_code=entry.code,
        outcome_unknown=entry.outcome_unknown,
    )
