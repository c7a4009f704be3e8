"""The contact status policy: what one event does to a contact's status, flags and counters.

Pure: the caller passes the contact's current state, the event and ``now``; the result is a
:class:`Transition` the store writes in one transaction. Rules (seeds 001, 002, 003, 004):

* category 2 (invalid address) → ``error`` + ``email_invalid`` at once (both presets);
* category 1 (spam/policy block) depends on the account's :class:`ContactPolicy` preset,
  because the seeds disagree: ``marketo`` (seed 001, the default) counts blocks and moves
  to ``error`` only after ``blocks_to_error`` consecutive ones, since a block says more
  about the sender than the address; ``emma`` (seed 003) moves every hard bounce to
  ``error`` at once (without ``email_invalid``: the address may well exist);
* a mailing whose attempts all failed temporarily (categories 3, 4, 9) counts once;
  ``soft_bounce_mailings_to_error`` consecutive ones → ``error``; a delivery resets the count;
* a "user unknown" that looks like B2B filtering (seeds 002, 004) — the domain rejected an
  unusual share of the same mailing, or rejected many addresses it had accepted in earlier
  mailings, or this address was delivered to or engaged with recently — is recorded as
  ``filtered`` (category 1) and *holds* the contact in the suspected-filtering state
  (``suspected_filtering``): it stays ``active`` and is neither invalidated nor moved to
  ``error`` by further such rejections until a user confirms the address is invalid
  (:attr:`EventKind.FILTERING_CONFIRMED`) or releases it as real
  (:attr:`EventKind.FILTERING_RELEASED`); a later delivery to it ends the suspicion too;
* a complaint or unsubscribe → ``opted_out`` (never undone by bounces or reactivation);
* reactivation → ``active``, flags and consecutive counters reset.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from mailcarrier.domain.errors import ConflictError
from mailcarrier.domain.vocabulary import Category, ContactStatus, Reason

__all__ = [
    "ContactEvent",
    "ContactPolicy",
    "ContactState",
    "DomainEvidence",
    "EventKind",
    "StatusPolicy",
    "Transition",
    "decide",
]


class EventKind(enum.StrEnum):
    """What happened to a contact, as far as its status is concerned."""

    SENT = "sent"  #: a message was handed to the receiving server (no status effect)
    DEFERRED = "deferred"  #: one attempt failed temporarily; retries follow (no status effect)
    DELIVERED = "delivered"  #: 2xx at end of data
    SOFT_BOUNCE = "soft_bounce"  #: final outcome of a mailing: every attempt failed temporarily
    HARD_BOUNCE = "hard_bounce"  #: refused for good (category decides what it means)
    COMPLAINT = "complaint"  #: ARF feedback report
    UNSUBSCRIBE = "unsubscribe"  #: the contact asked to stop
    OPEN = "open"
    CLICK = "click"
    REACTIVATE = "reactivate"  #: an operator restored the contact explicitly
    #: a user checked a suspected-filtering contact: the address really does not exist
    FILTERING_CONFIRMED = "filtering_confirmed"
    #: a user checked a suspected-filtering contact: the address is real (gateway filtering)
    FILTERING_RELEASED = "filtering_released"
    #: a refusal already applied as an invalid address is judged again, as suspected
    #: filtering, because its domain's evidence in the same mailing grew afterwards
    FILTERING_SUSPECTED = "filtering_suspected"


class ContactPolicy(enum.StrEnum):
    """What a hard bounce does to a contact: the two presets the seeds describe.

    Both invalidate a category-2 address at once and both hold suspected B2B filtering;
    they differ on category 1 (blocked as spam, policy, reputation).
    """

    #: seed 001 (Marketo): category 1 is watched and counted; ``error`` after repeats
    MARKETO = "marketo"
    #: seed 003 (Emma): every hard bounce moves the contact to ``error`` at once
    EMMA = "emma"


@dataclass(frozen=True, slots=True)
class StatusPolicy:
    """Thresholds of the rules; defaults are the seeds' values."""

    preset: ContactPolicy = ContactPolicy.MARKETO
    soft_bounce_mailings_to_error: int = 3
    blocks_to_error: int = 3
    filtering_reject_share: float = 0.30
    filtering_min_rejected: int = 5
    filtering_recent_days: int = 90


@dataclass(frozen=True, slots=True)
class ContactState:
    """The parts of a contact the policy reads and writes."""

    status: ContactStatus = ContactStatus.ACTIVE
    email_invalid: bool = False
    consecutive_soft_bounces: int = 0
    consecutive_blocks: int = 0
    total_bounces: int = 0
    last_delivered_at: datetime | None = None
    last_engaged_at: datetime | None = None
    #: held: a "user unknown" looked like B2B filtering; a user confirms or releases it
    suspected_filtering: bool = False


@dataclass(frozen=True, slots=True)
class DomainEvidence:
    """How the recipient's domain answered: in the same mailing, ``rejected`` of ``total``
    recipients were refused as unknown; ``accepted_before`` of those rejected addresses were
    delivered to (accepted) by the same domain in earlier mailings, recently."""

    rejected: int
    total: int
    accepted_before: int = 0


@dataclass(frozen=True, slots=True)
class ContactEvent:
    """One event; ``reason``/``category`` are set for bounces."""

    kind: EventKind
    occurred_at: datetime
    reason: Reason | None = None
    category: Category | None = None
    domain_evidence: DomainEvidence | None = None
    machine: bool = False  #: an open/click judged automated does not count as engagement
    #: a late bounce retracts the 250 of its own message (delivered at this time): that
    #: delivery is no evidence the address works, so it cannot suggest B2B filtering
    retracts_delivery_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """The outcome: the new state, the effective reason/category, and why."""

    before: ContactState
    after: ContactState
    reason: Reason | None
    category: Category | None
    suspected_filtering: bool
    because: tuple[str, ...]

    @property
    def status_changed(self) -> bool:
        return self.before.status != self.after.status or (
            self.before.email_invalid != self.after.email_invalid)


def decide(policy: StatusPolicy, state: ContactState, event: ContactEvent,
           now: datetime) -> Transition:
    """Apply one event to a contact state (see the module docstring for the rules)."""
    handler = _HANDLERS[event.kind]
    return handler(policy, state, event, now)


def _unchanged(state: ContactState, event: ContactEvent) -> Transition:
    return Transition(state, state, event.reason, event.category, False, ())


def _no_effect(_p: StatusPolicy, s: ContactState, e: ContactEvent, _n: datetime) -> Transition:
    return _unchanged(s, e)


def _delivered(_p: StatusPolicy, s: ContactState, e: ContactEvent, _n: datetime) -> Transition:
    # Built field by field rather than with dataclasses.replace: this is the most common
    # event by far (every delivery outcome), and replace() cost as much as the rest of it.
    after = ContactState(s.status, s.email_invalid, 0, 0, s.total_bounces,
                         _latest(s.last_delivered_at, e.occurred_at), s.last_engaged_at)
    # The history says why only when the delivery changed a counter: "resets" on a contact
    # with nothing to reset would be noise in every delivery entry.
    if s.suspected_filtering:  # the gateway accepts the address: the suspicion is over
        return Transition(s, after, e.reason, e.category, False, _ACCEPTED_NOTE)
    reset = s.consecutive_soft_bounces or s.consecutive_blocks
    return Transition(s, after, e.reason, e.category, False, _RESET_NOTE if reset else ())


_RESET_NOTE = ("delivery resets bounce counters",)
_ACCEPTED_NOTE = ("delivered: suspected filtering ended, bounce counters reset",)


def _engaged(_p: StatusPolicy, s: ContactState, e: ContactEvent, _n: datetime) -> Transition:
    if e.machine:
        return _unchanged(s, e)
    after = replace(s, last_engaged_at=_latest(s.last_engaged_at, e.occurred_at))
    return Transition(s, after, e.reason, e.category, False, ())


def _opt_out(_p: StatusPolicy, s: ContactState, e: ContactEvent, _n: datetime) -> Transition:
    after = replace(s, status=ContactStatus.OPTED_OUT)
    return Transition(s, after, e.reason, e.category, False, (f"{e.kind.value} opts the contact out",))


def _reactivate(_p: StatusPolicy, s: ContactState, e: ContactEvent, _n: datetime) -> Transition:
    if s.status == ContactStatus.OPTED_OUT:
        raise ConflictError("an opted-out contact cannot be reactivated: it must subscribe again")
    after = replace(s, status=ContactStatus.ACTIVE, email_invalid=False,
                    consecutive_soft_bounces=0, consecutive_blocks=0, suspected_filtering=False)
    return Transition(s, after, None, None, False, ("reactivated: counters reset",))


def _filtering_confirmed(_p: StatusPolicy, s: ContactState, e: ContactEvent,
                         _n: datetime) -> Transition:
    if not s.suspected_filtering:
        raise ConflictError("the contact is not held as suspected filtering: nothing to confirm")
    after = _to_error(replace(s, suspected_filtering=False), invalid=True)
    return Transition(s, after, Reason.USERUNKNOWN, Category.INVALID_ADDRESS, False,
                      ("suspected filtering confirmed: the address is invalid",))


def _filtering_suspected(_p: StatusPolicy, s: ContactState, e: ContactEvent,
                         _n: datetime) -> Transition:
    """Undo an invalidation the later evidence contradicts: held instead (counted already)."""
    if s.suspected_filtering or not s.email_invalid:
        return _unchanged(s, e)
    status = ContactStatus.ACTIVE if s.status == ContactStatus.ERROR else s.status
    after = replace(s, status=status, email_invalid=False, suspected_filtering=True)
    return Transition(s, after, Reason.FILTERED, Category.SPAM_BLOCK, True, (
        "re-judged: the domain's later refusals in the same mailing point to gateway filtering; "
        "held as suspected filtering instead of invalid",))


def _filtering_released(_p: StatusPolicy, s: ContactState, e: ContactEvent,
                        _n: datetime) -> Transition:
    if not s.suspected_filtering:
        raise ConflictError("the contact is not held as suspected filtering: nothing to release")
    status = s.status if s.status == ContactStatus.OPTED_OUT else ContactStatus.ACTIVE
    after = replace(s, status=status, email_invalid=False, suspected_filtering=False,
                    consecutive_soft_bounces=0, consecutive_blocks=0)
    return Transition(s, after, None, None, False,
                      ("suspected filtering released: the address is real; counters reset",))


def _soft_bounce(p: StatusPolicy, s: ContactState, e: ContactEvent, _n: datetime) -> Transition:
    count = s.consecutive_soft_bounces + 1
    after = replace(s, consecutive_soft_bounces=count, total_bounces=s.total_bounces + 1)
    because = [f"mailing failed temporarily ({count} in a row)"]
    if count >= p.soft_bounce_mailings_to_error:
        after = _to_error(after, invalid=False)
        because.append(f"{p.soft_bounce_mailings_to_error} consecutive soft-bounced mailings")
    category = e.category if e.category is not None else Category.TEMPORARY
    return Transition(s, after, e.reason, category, False, tuple(because))


def _hard_bounce(p: StatusPolicy, s: ContactState, e: ContactEvent, now: datetime) -> Transition:
    category = e.category if e.category is not None else Category.UNKNOWN
    if category == Category.INVALID_ADDRESS:
        filtering = _suspected_filtering(p, s, e, now)
        if filtering:
            return _hold(s, replace(e, reason=Reason.FILTERED, category=Category.SPAM_BLOCK),
                         because=filtering)
        after = _to_error(replace(s, total_bounces=s.total_bounces + 1), invalid=True)
        return Transition(s, after, e.reason, category, False, ("invalid address (category 2)",))
    if category == Category.SPAM_BLOCK:
        if s.suspected_filtering and e.reason == Reason.FILTERED:
            return _hold(s, e, because=("rejected again while held as suspected filtering",))
        return _block(p, s, e)
    return _soft_bounce(p, s, replace(e, category=category), now)


def _hold(s: ContactState, e: ContactEvent, *, because: tuple[str, ...]) -> Transition:
    """Suspected filtering: counted, flagged, and otherwise left for a user to decide."""
    after = replace(s, consecutive_blocks=s.consecutive_blocks + 1,
                    total_bounces=s.total_bounces + 1, suspected_filtering=True)
    notes = (*because, "held as suspected filtering: not invalidated; confirm or release it")
    return Transition(s, after, e.reason, Category.SPAM_BLOCK, True, notes)


def _block(p: StatusPolicy, s: ContactState, e: ContactEvent) -> Transition:
    count = s.consecutive_blocks + 1
    after = replace(s, consecutive_blocks=count, total_bounces=s.total_bounces + 1)
    notes = [f"blocked (category 1, {count} in a row)"]
    if p.preset is ContactPolicy.EMMA:
        after = _to_error(after, invalid=False)
        notes.append("contact policy 'emma': every hard bounce moves the contact to error")
    elif count >= p.blocks_to_error:
        after = _to_error(after, invalid=False)
        notes.append(f"{p.blocks_to_error} consecutive blocks")
    return Transition(s, after, e.reason, Category.SPAM_BLOCK, False, tuple(notes))


def _suspected_filtering(p: StatusPolicy, s: ContactState, e: ContactEvent,
                         now: datetime) -> tuple[str, ...]:
    """Why a 'user unknown' looks like B2B filtering rather than a dead address (empty: it does not)."""
    if e.reason not in (Reason.USERUNKNOWN, Reason.FILTERED):
        return ()
    evidence = e.domain_evidence
    if evidence is not None and evidence.total > 0 and evidence.rejected >= p.filtering_min_rejected \
            and evidence.rejected / evidence.total >= p.filtering_reject_share:
        return (f"suspected filtering: the domain rejected {evidence.rejected} of "
                f"{evidence.total} recipients of this mailing",)
    if evidence is not None and evidence.accepted_before >= p.filtering_min_rejected:
        return (f"suspected filtering: the domain suddenly rejects {evidence.accepted_before} "
                f"addresses it accepted in earlier mailings within {p.filtering_recent_days} days",)
    horizon = now - timedelta(days=p.filtering_recent_days)
    delivered = s.last_delivered_at
    if delivered is not None and e.retracts_delivery_at is not None and delivered <= e.retracts_delivery_at:
        delivered = None
    for label, when in (("delivered to", delivered), ("engaged", s.last_engaged_at)):
        if when is not None and when >= horizon:
            return (f"suspected filtering: the address was {label} within "
                    f"{p.filtering_recent_days} days",)
    return ()


def _to_error(state: ContactState, *, invalid: bool) -> ContactState:
    """Move to ``error``; an opted-out contact stays opted out (consent outranks bounces)."""
    status = state.status if state.status == ContactStatus.OPTED_OUT else ContactStatus.ERROR
    return replace(state, status=status, email_invalid=state.email_invalid or invalid)


def _latest(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None or candidate > current else current


_HANDLERS = {
    EventKind.SENT: _no_effect,
    EventKind.DEFERRED: _no_effect,
    EventKind.DELIVERED: _delivered,
    EventKind.SOFT_BOUNCE: _soft_bounce,
    EventKind.HARD_BOUNCE: _hard_bounce,
    EventKind.COMPLAINT: _opt_out,
    EventKind.UNSUBSCRIBE: _opt_out,
    EventKind.OPEN: _engaged,
    EventKind.CLICK: _engaged,
    EventKind.REACTIVATE: _reactivate,
    EventKind.FILTERING_CONFIRMED: _filtering_confirmed,
    EventKind.FILTERING_RELEASED: _filtering_released,
    EventKind.FILTERING_SUSPECTED: _filtering_suspected,
}
