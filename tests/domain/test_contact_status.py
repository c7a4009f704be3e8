"""The contact status policy as a table of event sequences → expected status and flags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailcarrier.domain.contact_status import (
    ContactEvent,
    ContactPolicy,
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


# --- account contact policy presets (seed 001 vs seed 003) and the suspected-filtering hold ---

EMMA = StatusPolicy(preset=ContactPolicy.EMMA)


@pytest.mark.parametrize(("steps", "marketo", "emma"), [
    ([BLOCK], (A, False), (E, False)),  # seed 003: every hard bounce -> Error at once
    ([BLOCK, BLOCK], (A, False), (E, False)),
    ([BLOCK, BLOCK, BLOCK], (E, False), (E, False)),
    ([UNKNOWN_USER], (E, True), (E, True)),  # category 2: invalid at once in both
    ([SOFT, SOFT], (A, False), (A, False)),  # soft bounces: three in a row in both
    ([SOFT, SOFT, SOFT], (E, False), (E, False)),
])
def test_presets_differ_only_on_category_1(steps: list[tuple[EventKind, Reason | None, Category | None]],
                                           marketo: tuple[ContactStatus, bool],
                                           emma: tuple[ContactStatus, bool]) -> None:
    for policy, expected in ((POLICY, marketo), (EMMA, emma)):
        state = run(steps, policy=policy)
        assert (state.status, state.email_invalid) == expected


def _unknown(evidence: DomainEvidence | None, when: datetime = T0) -> ContactEvent:
    return ContactEvent(K.HARD_BOUNCE, when, Reason.USERUNKNOWN, Category.INVALID_ADDRESS,
                        domain_evidence=evidence)


@pytest.mark.parametrize("policy", [POLICY, EMMA])
def test_suspected_filtering_holds_the_contact_under_both_presets(policy: StatusPolicy) -> None:
    held = decide(policy, ContactState(), _unknown(DomainEvidence(6, 10)), T0)
    assert held.suspected_filtering and held.reason is Reason.FILTERED and held.category is Category.SPAM_BLOCK
    assert (held.after.status, held.after.email_invalid, held.after.suspected_filtering) == (A, False, True)
    state = held.after
    for day in range(1, 6):  # refused again and again: still held, never moved by itself
        when = T0 + timedelta(days=day)
        again = ContactEvent(K.HARD_BOUNCE, when, Reason.FILTERED, Category.SPAM_BLOCK)
        state = decide(policy, state, again, when).after
    assert (state.status, state.suspected_filtering, state.consecutive_blocks) == (A, True, 6)


def test_domain_refusing_addresses_it_accepted_before_is_suspected() -> None:
    share_too_low = DomainEvidence(rejected=7, total=100, accepted_before=6)
    transition = decide(POLICY, ContactState(), _unknown(share_too_low), T0)
    assert transition.suspected_filtering
    assert "suddenly rejects 6 addresses" in transition.because[0]
    assert not decide(POLICY, ContactState(), _unknown(DomainEvidence(7, 100, 4)), T0).suspected_filtering


def test_confirm_invalidates_and_release_reactivates_a_held_contact() -> None:
    held = decide(POLICY, ContactState(), _unknown(DomainEvidence(6, 10)), T0).after
    confirmed = decide(POLICY, held, ContactEvent(K.FILTERING_CONFIRMED, T0), T0)
    assert (confirmed.after.status, confirmed.after.email_invalid, confirmed.after.suspected_filtering) == (E, True, False)
    released = decide(POLICY, held, ContactEvent(K.FILTERING_RELEASED, T0), T0)
    assert (released.after.status, released.after.email_invalid, released.after.suspected_filtering) == (A, False, False)
    assert released.after.consecutive_blocks == 0
    for kind in (K.FILTERING_CONFIRMED, K.FILTERING_RELEASED):
        with pytest.raises(ConflictError, match="not held"):
            decide(POLICY, ContactState(), ContactEvent(kind, T0), T0)


def test_a_delivery_ends_the_suspicion() -> None:
    held = decide(POLICY, ContactState(), _unknown(DomainEvidence(6, 10)), T0).after
    after = decide(POLICY, held, ContactEvent(K.DELIVERED, T0 + timedelta(days=1)), T0).after
    assert not after.suspected_filtering and after.consecutive_blocks == 0


def test_rejudging_an_invalidation_as_filtering_holds_the_contact() -> None:
    invalid = decide(POLICY, ContactState(), _unknown(None), T0).after
    assert (invalid.status, invalid.email_invalid) == (E, True)
    rejudged = decide(POLICY, invalid, ContactEvent(K.FILTERING_SUSPECTED, T0), T0)
    assert rejudged.suspected_filtering and rejudged.reason is Reason.FILTERED
    assert (rejudged.after.status, rejudged.after.email_invalid, rejudged.after.suspected_filtering) \
        == (A, False, True)
    assert rejudged.after.total_bounces == invalid.total_bounces  # counted once, not twice
    again = decide(POLICY, rejudged.after, ContactEvent(K.FILTERING_SUSPECTED, T0), T0)
    assert not again.suspected_filtering and again.after == rejudged.after
