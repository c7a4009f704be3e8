"""When to try a failed delivery again, and when to give up.

A pure policy: the caller passes the classification of the failure, how many
attempts were made, when the first one started and the current time. The
answer says whether the delivery is final (and in which state) or when to try
next, and whether the whole destination domain should rest for a while,
because hammering a server that answered 421 or "rate limited" only makes the
sender's reputation worse.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from mailcarrier.domain.classify import Classification
from mailcarrier.domain.rules_engine import Scope
from mailcarrier.domain.vocabulary import Category, DeliveryState, Reason, category_of

__all__ = ["RetryDecision", "RetryPolicy", "decide_retry", "domain_backoff"]

_DEFAULT_SCHEDULE = (timedelta(0), timedelta(hours=1), timedelta(hours=6), timedelta(hours=30))
#: Reasons for which a domain-scoped failure pauses the whole domain.
_BACKOFF_REASONS = frozenset({Reason.TOOMANYCONN, Reason.SPEEDING})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry schedule and domain back-off settings.

    ``schedule`` holds the start of each attempt as an offset from the first
    one; its length is the number of attempts. The default, 4 attempts at
    0, +1 h, +6 h and +30 h, is seed 003's "four attempts over a 30-hour period"
    (the last one a day after the third, seed 001's 24-hour retry); a recipient
    still failing then, or deferred past ``max_age`` (30 hours), is a soft bounce.
    """

    schedule: tuple[timedelta, ...] = _DEFAULT_SCHEDULE
    max_age: timedelta = timedelta(hours=30)
    #: First back-off of a domain after a 421 or rate-limit reply; doubles while it repeats.
    backoff_base: timedelta = timedelta(minutes=5)
    backoff_max: timedelta = timedelta(hours=2)
    #: Resend after a 147-style timeout after the final "." (risking a duplicate).
    retry_outcome_unknown: bool = False

    def __post_init__(self) -> None:
        if not self.schedule:
            raise ValueError("a retry schedule needs at least one attempt")
        if self.schedule[0] != timedelta(0):
            raise ValueError("the first attempt of a retry schedule must be at offset 0")
        if any(b <= a for a, b in zip(self.schedule, self.schedule[1:], strict=False)):
            raise ValueError("retry schedule offsets must strictly increase")
        if self.max_age < self.schedule[-1]:
            raise ValueError("retry max_age is shorter than the last scheduled attempt")
        if self.backoff_base <= timedelta(0) or self.backoff_max < self.backoff_base:
            raise ValueError("domain back-off needs 0 < backoff_base <= backoff_max")

    @property
    def attempts(self) -> int:
        return len(self.schedule)


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What to do with a delivery after a failed attempt."""

    #: ``in_progress`` with ``next_attempt_at`` set, or a final state.
    state: DeliveryState
    next_attempt_at: datetime | None
    reason: Reason
    category: Category
    #: The server may have the message (no answer after the final ".") and it is not resent.
    outcome_unknown: bool = False


def _final(classification: Classification, reason: Reason | None = None) -> RetryDecision:
    final_reason = reason or classification.reason
    category = category_of(final_reason) if reason else classification.category
    state = DeliveryState.BOUNCED_HARD if category.is_hard else DeliveryState.BOUNCED_SOFT
    return RetryDecision(state, None, final_reason, category)


def decide_retry(
    policy: RetryPolicy,
    classification: Classification,
    *,
    attempts_made: int,
    first_attempt_at: datetime,
    now: datetime,
    recovered_attempts: int = 0,
) -> RetryDecision:
    """Decide the fate of a delivery whose latest attempt (number ``attempts_made``) failed.

    ``recovered_attempts`` of those attempts were only recorded because a worker died with
    the message in flight (internal 147 at recovery): the server was not really tried, so
    they do not count against the schedule (a crash must not turn a greylisted recipient
    into a soft bounce).

    An outcome-unknown failure that the policy does not resend is final as
    ``delivered`` with the ``outcome_unknown`` flag: the server received the
    whole message and most likely kept it; the flag keeps it counted apart.
    When retries run out the recipient is a soft bounce with the last
    temporary reason, or ``expired`` when that reason said nothing useful.
    """
    if attempts_made < 1:
        raise ValueError("decide_retry is called after at least one attempt")
    if not 0 <= recovered_attempts < attempts_made:
        raise ValueError("recovered_attempts must be fewer than attempts_made (the latest is a real try)")
    tried = attempts_made - recovered_attempts
    if classification.outcome_unknown and not policy.retry_outcome_unknown:
        reason, category = classification.reason, classification.category
        return RetryDecision(DeliveryState.DELIVERED, None, reason, category, outcome_unknown=True)
    if not (classification.retry or classification.outcome_unknown):
        return _final(classification)
    if tried < policy.attempts:
        next_at = first_attempt_at + policy.schedule[tried]
        if next_at - first_attempt_at <= policy.max_age:
            return RetryDecision(
                DeliveryState.IN_PROGRESS, max(next_at, now), classification.reason, classification.category
            )
    vague = classification.reason in (Reason.UNDEFINED, Reason.ONHOLD)
    soft = _final(classification, Reason.EXPIRED if vague else None)
    if soft.state is DeliveryState.BOUNCED_HARD:
        return _final(classification, Reason.EXPIRED)
    return soft


def domain_backoff(
    policy: RetryPolicy, classification: Classification, *, now: datetime, consecutive: int = 1
) -> datetime | None:
    """Until when to stop sending to the domain, or None when the failure is not about the domain.

    Only domain-scoped throttling (421 "too many connections", rate limits)
    pauses the domain; ``consecutive`` counts back-offs in a row so a server
    that keeps refusing is left alone longer, up to ``backoff_max``.
    """
    if classification.scope is not Scope.DOMAIN or classification.reason not in _BACKOFF_REASONS:
        return None
    factor: int = 2 ** max(0, min(consecutive, 32) - 1)
    pause: timedelta = min(policy.backoff_base * factor, policy.backoff_max)
    return now + pause
