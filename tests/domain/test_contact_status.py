"""The contact status policy as a table of event sequences → expected status and flags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailcarrier.domain.contact_status import (
    ContactEvent,
    ContactState,
    DomainEvidence,
    EventKind,
    StatusPolicy,
    decide,
)
from mailcarrier.domain.errors import ConflictError
from mailcarrier.domain.vocabulary import Category, ContactStatus, Reason

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = StatusPolicy()

K = EventKind
DELIVERED = (K.DELIVERED, None, None)
SOFT = (K.SOFT_BOUNCE, Reason.MAILBOXFULL, Category.TEMPORARY)
SOFT_TECH = (K.SOFT_BOUNCE, Reason.NETWORKERROR, Category.TECHNICAL)
UNKNOWN_USER = (K.HARD_BOUNCE, Reason.USERUNKNOWN, Category.INVALID_ADDRESS)
BLOCK = (K.HARD_BOUNCE, Reason.BLOCKED, Category.SPAM_BLOCK)
HARD_FULL = (K.HARD_BOUNCE, Reason.MAILBOXFULL, Category.TEMPORARY)
COMPLAINT = (K.COMPLAINT, Reason.FEEDBACK, None)
UNSUB = (K.UNSUBSCRIBE, None, None)
REACTIVATE = (K.REACTIVATE, None, None)
OPEN = (K.OPEN, None, None)

A, E, OUT = ContactStatus.ACTIVE, ContactStatus.ERROR, ContactStatus.OPTED_OUT


def run(steps: list[tuple[EventKind, Reason | None, Category | None]],
        state: ContactState | None = None, policy: StatusPolicy = POLICY) -> ContactState:
    state = state or ContactState()
    for day, (kind, reason, category) in enumerate(steps):
        when = T0 + timedelta(days=day * 200)  # far apart: recent activity never interferes
        state = decide(policy, state, ContactEvent(kind, when, reason, category), when).after
    return state


@pytest.mark.parametrize(("steps", "status", "invalid"), [
    ([], A, False),
    ([DELIVERED], A, False),
    ([UNKNOWN_USER], E, True),
    ([SOFT], A, False),
    ([SOFT, SOFT], A, False),
    ([SOFT, SOFT, SOFT], E, False),
    ([SOFT, SOFT_TECH, SOFT], E, False),
    ([SOFT, SOFT, DELIVERED, SOFT, SOFT], A, False),
    ([SOFT, SOFT, HARD_FULL], E, False),
    ([BLOCK], A, False),
    ([BLOCK, BLOCK], A, False),
    ([BLOCK, BLOCK, BLOCK], E, False),
    ([BLOCK, BLOCK, DELIVERED, BLOCK], A, False),
    ([COMPLAINT], OUT, False),
    ([UNSUB], OUT, False),
    ([COMPLAINT, UNKNOWN_USER], OUT, True),
    ([UNKNOWN_USER, REACTIVATE], A, False),
    ([SOFT, SOFT, SOFT, REACTIVATE, SOFT, SOFT], A, False),
    ([BLOCK, BLOCK, BLOCK, REACTIVATE, BLOCK], A, False),
    ([OPEN, SOFT], A, False),
])
def test_event_sequences(steps: list[tuple[EventKind, Reason | None, Category | None]],
                         status: ContactStatus, invalid: bool) -> None:
    final = run(steps)
    assert (final.status, final.email_invalid) == (status, invalid)


def test_thresholds_are_configurable() -> None:
    strict = StatusPolicy(soft_bounce_mailings_to_error=1, blocks_to_error=1)
    assert run([SOFT], policy=strict).status == E
    assert run([BLOCK], policy=strict).status == E
    lenient = StatusPolicy(blocks_to_error=5)
    assert run([BLOCK] * 4, policy=lenient).status == A
    assert run([BLOCK] * 5, policy=lenient).status == E


def test_counters_and_reset() -> None:
    state = run([SOFT, BLOCK, SOFT])
    assert (state.consecutive_soft_bounces, state.consecutive_blocks, state.total_bounces) == (2, 1, 3)
    state = run([DELIVERED], state)
    assert (state.consecutive_soft_bounces, state.consecutive_blocks, state.total_bounces) == (0, 0, 3)


def unknown_user(evidence: DomainEvidence | None, state: ContactState | None = None,
                 now: datetime = T0):
    event = ContactEvent(K.HARD_BOUNCE, now, Reason.USERUNKNOWN, Category.INVALID_ADDRESS,
                         domain_evidence=evidence)
    return decide(POLICY, state or ContactState(), event, now)


@pytest.mark.parametrize(("rejected", "total", "suspected"), [
    (5, 10, True),    # 50 %, 5 rejected
    (3, 10, False),   # 30 % but only 3 recipients
    (6, 20, True),    # exactly 30 %
    (5, 20, False),   # 25 %
    (1, 1, False),    # one recipient is no pattern
    (0, 0, False),
])
def test_b2b_domain_share(rejected: int, total: int, suspected: bool) -> None:
    result = unknown_user(DomainEvidence(rejected, total))
    assert result.suspected_filtering is suspected
    if suspected:
        assert result.after.status == A and not result.after.email_invalid
        assert (result.reason, result.category) == (Reason.FILTERED, Category.SPAM_BLOCK)
        assert result.after.consecutive_blocks == 1
        assert any("rejected" in why for why in result.because)
    else:
        assert result.after.status == E and result.after.email_invalid
        assert result.category == Category.INVALID_ADDRESS


@pytest.mark.parametrize(("field", "age_days", "suspected"), [
    ("last_delivered_at", 10, True),
    ("last_delivered_at", 90, True),
    ("last_delivered_at", 91, False),
    ("last_engaged_at", 30, True),
    ("last_engaged_at", 400, False),
])
def test_b2b_recent_activity(field: str, age_days: int, suspected: bool) -> None:
    state = ContactState(**{field: T0 - timedelta(days=age_days)})  # type: ignore[arg-type]
    result = unknown_user(None, state)
    assert result.suspected_filtering is suspected
    assert result.after.email_invalid is not suspected


def test_machine_open_is_not_engagement() -> None:
    event = ContactEvent(K.OPEN, T0, machine=True)
    assert decide(POLICY, ContactState(), event, T0).after.last_engaged_at is None
    event = ContactEvent(K.CLICK, T0)
    assert decide(POLICY, ContactState(), event, T0).after.last_engaged_at == T0


def test_older_delivery_does_not_move_last_delivered_back() -> None:
    state = ContactState(last_delivered_at=T0)
    event = ContactEvent(K.DELIVERED, T0 - timedelta(days=1))
    assert decide(POLICY, state, event, T0).after.last_delivered_at == T0


def test_opted_out_cannot_be_reactivated() -> None:
    with pytest.raises(ConflictError, match="subscribe again"):
        run([UNSUB, REACTIVATE])


def test_status_changed_flag() -> None:
    assert unknown_user(None).status_changed
    assert not decide(POLICY, ContactState(), ContactEvent(K.SENT, T0), T0).status_changed


def test_a_delivery_explains_itself_only_when_it_resets_a_counter() -> None:
    """The history of a routine delivery carries no policy note; one after bounces says why."""
    plain = decide(POLICY, ContactState(), ContactEvent(K.DELIVERED, T0), T0)
    assert plain.because == ()
    assert plain.after.last_delivered_at == T0
    bounced = run([SOFT, BLOCK])
    reset = decide(POLICY, bounced, ContactEvent(K.DELIVERED, T0), T0)
    assert reset.because == ("delivery resets bounce counters",)
    assert (reset.after.consecutive_soft_bounces, reset.after.consecutive_blocks) == (0, 0)
    assert reset.after.total_bounces == bounced.total_bounces == 2
