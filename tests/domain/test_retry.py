from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailcarrier.domain.classify import classify, classify_internal
from mailcarrier.domain.retry import RetryPolicy, decide_retry, domain_backoff
from mailcarrier.domain.vocabulary import Category, DeliveryState, Reason

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
POLICY = RetryPolicy()
MAILBOX_FULL = classify("Mailbox full", code=452, status="4.2.2")
USER_UNKNOWN = classify("User unknown", code=550, status="5.1.1")
THROTTLED = classify("Too many connections from your IP", code=421)
RATE_LIMITED = classify("Rate limited, try later", code=451, status="4.7.28")


def test_default_schedule_is_four_attempts_within_thirty_hours() -> None:
    times = []
    for made in (1, 2, 3):
        decision = decide_retry(POLICY, MAILBOX_FULL, attempts_made=made, first_attempt_at=T0, now=T0)
        assert decision.state is DeliveryState.IN_PROGRESS
        times.append(decision.next_attempt_at)
    assert times == [T0 + timedelta(hours=1), T0 + timedelta(hours=6), T0 + timedelta(hours=30)]
    final = decide_retry(POLICY, MAILBOX_FULL, attempts_made=4, first_attempt_at=T0, now=T0 + timedelta(hours=30))
    assert final.state is DeliveryState.BOUNCED_SOFT
    assert final.next_attempt_at is None
    assert final.reason is Reason.MAILBOXFULL
    assert final.category is Category.TEMPORARY


def test_next_attempt_is_never_in_the_past() -> None:
    late = T0 + timedelta(hours=3)
    decision = decide_retry(POLICY, MAILBOX_FULL, attempts_made=1, first_attempt_at=T0, now=late)
    assert decision.next_attempt_at == late


def test_permanent_failure_is_final_at_once() -> None:
    decision = decide_retry(POLICY, USER_UNKNOWN, attempts_made=1, first_attempt_at=T0, now=T0)
    assert decision.state is DeliveryState.BOUNCED_HARD
    assert decision.reason is Reason.USERUNKNOWN


def test_vague_reason_expires() -> None:
    vague = replace(MAILBOX_FULL, reason=Reason.UNDEFINED, category=Category.UNKNOWN)
    final = decide_retry(POLICY, vague, attempts_made=4, first_attempt_at=T0, now=T0)
    assert final.state is DeliveryState.BOUNCED_SOFT
    assert final.reason is Reason.EXPIRED


def test_exhausted_retries_are_never_a_hard_bounce() -> None:
    blocked = classify("Service unavailable, client host blocked using Spamhaus", code=421)
    final = decide_retry(POLICY, blocked, attempts_made=4, first_attempt_at=T0, now=T0)
    assert final.state is DeliveryState.BOUNCED_SOFT


def test_outcome_unknown_is_not_resent_by_default() -> None:
    decision = decide_retry(POLICY, classify_internal(147), attempts_made=1, first_attempt_at=T0, now=T0)
    assert decision.outcome_unknown
    assert decision.state is DeliveryState.DELIVERED
    assert decision.next_attempt_at is None


def test_outcome_unknown_is_resent_when_the_setting_says_so() -> None:
    policy = RetryPolicy(retry_outcome_unknown=True)
    decision = decide_retry(policy, classify_internal(147), attempts_made=1, first_attempt_at=T0, now=T0)
    assert decision.state is DeliveryState.IN_PROGRESS
    assert decision.next_attempt_at == T0 + timedelta(hours=1)


def test_timeout_before_data_is_retried() -> None:
    decision = decide_retry(POLICY, classify_internal(146), attempts_made=1, first_attempt_at=T0, now=T0)
    assert decision.state is DeliveryState.IN_PROGRESS


def test_compressed_schedule_for_demos() -> None:
    policy = RetryPolicy(schedule=(timedelta(0), timedelta(seconds=2)), max_age=timedelta(seconds=5))
    first = decide_retry(policy, MAILBOX_FULL, attempts_made=1, first_attempt_at=T0, now=T0)
    assert first.next_attempt_at == T0 + timedelta(seconds=2)
    assert decide_retry(policy, MAILBOX_FULL, attempts_made=2, first_attempt_at=T0, now=T0).state.is_final


@pytest.mark.parametrize(
    "kwargs",
    [
        {"schedule": ()},
        {"schedule": (timedelta(hours=1),)},
        {"schedule": (timedelta(0), timedelta(hours=2), timedelta(hours=1))},
        {"max_age": timedelta(hours=1)},
        {"backoff_base": timedelta(0)},
        {"backoff_base": timedelta(hours=3), "backoff_max": timedelta(hours=1)},
    ],
)
def test_invalid_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_decide_needs_an_attempt() -> None:
    with pytest.raises(ValueError, match="at least one attempt"):
        decide_retry(POLICY, MAILBOX_FULL, attempts_made=0, first_attempt_at=T0, now=T0)


def test_throttling_backs_off_the_domain_and_grows() -> None:
    assert domain_backoff(POLICY, THROTTLED, now=T0) == T0 + timedelta(minutes=5)
    assert domain_backoff(POLICY, RATE_LIMITED, now=T0, consecutive=2) == T0 + timedelta(minutes=10)
    assert domain_backoff(POLICY, THROTTLED, now=T0, consecutive=99) == T0 + timedelta(hours=2)


def test_recipient_failures_do_not_back_off_the_domain() -> None:
    assert domain_backoff(POLICY, MAILBOX_FULL, now=T0) is None
    assert domain_backoff(POLICY, USER_UNKNOWN, now=T0) is None


@given(st.integers(min_value=1, max_value=10), st.integers(min_value=0, max_value=200_000))
def test_every_decision_is_final_or_scheduled_within_max_age(made: int, seconds_late: int) -> None:
    now = T0 + timedelta(seconds=seconds_late)
    decision = decide_retry(POLICY, MAILBOX_FULL, attempts_made=made, first_attempt_at=T0, now=now)
    if decision.state.is_final:
        assert decision.next_attempt_at is None
        assert made >= POLICY.attempts
    else:
        assert decision.next_attempt_at is not None
        assert decision.next_attempt_at >= now
        assert made < POLICY.attempts


def test_recovered_attempts_do_not_count_against_the_schedule() -> None:
    """Issue 17: two crash-recovery records (147) and one real 451 leave three real tries."""
    policy = RetryPolicy()
    greylisted = classify("Greylisted, please try again later", code=451, status="4.7.1")
    first = datetime(2026, 5, 1, tzinfo=UTC)
    decision = decide_retry(policy, greylisted, attempts_made=3, first_attempt_at=first, now=first,
                            recovered_attempts=2)
    assert decision.state is DeliveryState.IN_PROGRESS
    assert decision.next_attempt_at == first + policy.schedule[1]
    last = decide_retry(policy, greylisted, attempts_made=6, first_attempt_at=first,
                        now=first + policy.schedule[3], recovered_attempts=2)
    assert last.state is DeliveryState.BOUNCED_SOFT
    with pytest.raises(ValueError, match="recovered_attempts"):
        decide_retry(policy, greylisted, attempts_made=2, first_attempt_at=first, now=first, recovered_attempts=2)
