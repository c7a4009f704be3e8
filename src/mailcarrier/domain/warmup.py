"""IP warm-up: daily volume caps that grow while a new or idle IP earns its reputation.

Mailbox providers distrust an IP with no recent history, so a new IP, or one idle for
30 days or more, follows a ramp of daily caps (``data/warmup.toml``). The cap is spread
evenly over the day so a morning burst cannot spend it all, and the ramp holds for a
day when yesterday's bounce or complaint rate was above the limits. Pure: dates and
counts are passed in.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from functools import cache
from importlib import resources
from types import MappingProxyType

from mailcarrier.domain.errors import ConfigurationError, RuleFileError

__all__ = [
    "DayStats",
    "WarmupLimits",
    "WarmupSchedule",
    "WarmupState",
    "advance",
    "daily_cap",
    "hourly_allowance",
    "load_schedules",
    "parse_schedules",
    "start",
]


@dataclass(frozen=True, slots=True)
class WarmupSchedule:
    """One named ramp: ``daily[n - 1]`` is the cap on day ``n``."""

    name: str
    description: str
    daily: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class WarmupLimits:
    """When the ramp holds and when an IP counts as cold again."""

    idle_restart_days: int = 30
    max_bounce_rate: float = 0.05
    max_complaint_rate: float = 0.001

    def __post_init__(self) -> None:
        if self.idle_restart_days < 1:
            raise ConfigurationError("idle_restart_days must be at least 1")


@dataclass(frozen=True, slots=True)
class DayStats:
    """One IP's outcome for one day."""

    sent: int
    bounced: int = 0
    complained: int = 0

    def bounce_rate(self) -> float:
        return self.bounced / self.sent if self.sent else 0.0

    def complaint_rate(self) -> float:
        return self.complained / self.sent if self.sent else 0.0


@dataclass(frozen=True, slots=True)
class WarmupState:
    """Where an IP stands on its ramp.

    ``day`` is the ramp day in force on ``as_of``; ``last_sent_on`` is the last day the
    IP carried mail (None: never); ``held`` says the last advance was a hold.
    """

    schedule: str
    day: int
    as_of: date
    last_sent_on: date | None = None
    held: bool = False


def start(schedule: str, today: date) -> WarmupState:
    """Begin (or restart) the ramp today."""
    return WarmupState(schedule=schedule, day=1, as_of=today, last_sent_on=None)


def advance(
    state: WarmupState, today: date, yesterday: DayStats | None, limits: WarmupLimits
) -> WarmupState:
    """Move the ramp to ``today``: restart after idleness, hold on bad rates, else step.

    Calling again on the same day returns the state unchanged, so it is safe to call
    before every send.
    """
    if today <= state.as_of:
        return state
    last_sent = state.last_sent_on
    if yesterday is not None and yesterday.sent:
        last_sent = today - timedelta(days=1)
    if (today - (last_sent or state.as_of)).days >= limits.idle_restart_days:
        return start(state.schedule, today)
    if yesterday is not None and (
        yesterday.bounce_rate() > limits.max_bounce_rate
        or yesterday.complaint_rate() > limits.max_complaint_rate
    ):
        return replace(state, as_of=today, last_sent_on=last_sent, held=True)
    step = (today - state.as_of).days
    return replace(state, day=state.day + step, as_of=today, last_sent_on=last_sent, held=False)


def daily_cap(schedule: WarmupSchedule, state: WarmupState) -> int | None:
    """Today's cap for the IP, or None once the ramp is complete (the IP is warm)."""
    if state.day > len(schedule.daily):
        return None
    return schedule.daily[state.day - 1]


def hourly_allowance(cap: int | None, sent_today: int, now: datetime) -> int | None:
    """How many more messages may leave now, spreading ``cap`` evenly over 24 hours.

    By the end of hour ``h`` (0-based) at most ``cap * (h + 1) / 24`` messages may have
    left; an unused share carries over to later hours. None means no cap.
    """
    if cap is None:
        return None
    allowed_so_far = -(-cap * (now.hour + 1) // 24)
    return max(0, min(cap, allowed_so_far) - sent_today)


def parse_schedules(text: str) -> Mapping[str, WarmupSchedule]:
    """Read warm-up schedules from TOML text; raise RuleFileError saying what is wrong."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleFileError(f"warm-up schedules are not valid TOML: {exc}") from exc
    tables = doc.get("schedules")
    if not isinstance(tables, dict) or not tables:
        raise RuleFileError("warm-up file needs a non-empty [schedules.<name>] table")
    result: dict[str, WarmupSchedule] = {}
    for name, table in tables.items():
        daily = table.get("daily") if isinstance(table, dict) else None
        if (
            not isinstance(daily, list)
            or not daily
            or not all(isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 for cap in daily)
        ):
            raise RuleFileError(f"schedule {name!r}: 'daily' must be a non-empty list of positive integers")
        if any(later < earlier for earlier, later in itertools.pairwise(daily)):
            raise RuleFileError(f"schedule {name!r}: daily caps must never decrease")
        result[name] = WarmupSchedule(
            name=name, description=str(table.get("description", "")), daily=tuple(daily)
        )
    return MappingProxyType(result)


@cache
def load_schedules() -> Mapping[str, WarmupSchedule]:
    """The shipped schedules (conservative, standard, aggressive)."""
    text = (resources.files("mailcarrier.domain") / "data" / "warmup.toml").read_text("utf-8")
    return parse_schedules(text)
