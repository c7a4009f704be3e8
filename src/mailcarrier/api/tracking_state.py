"""The tracking machinery one server process holds: keys, link cache, hit writer, rate limit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from fastapi import Request
from sqlalchemy import Engine

from mailcarrier.api.rate_limit import SlidingWindowLimiter
from mailcarrier.config import Settings
from mailcarrier.domain.contact_status import StatusPolicy
from mailcarrier.services.policies import status_policy
from mailcarrier.services.tracking.keys import TrackingKeys, tracking_keys
from mailcarrier.services.tracking.links import LinkDirectory
from mailcarrier.services.tracking.writer import HitRecorder

__all__ = ["TrackingState", "build_tracking_state", "tracking_state"]


@dataclass(frozen=True, slots=True)
class TrackingState:
    keys: TrackingKeys
    links: LinkDirectory
    recorder: HitRecorder
    policy: StatusPolicy
    subscribe_limiter: SlidingWindowLimiter


def build_tracking_state(settings: Settings, engine: Engine,
                         clock: Callable[[], datetime]) -> TrackingState:
    policy = status_policy(settings)
    return TrackingState(
        keys=tracking_keys(settings),
        links=LinkDirectory(engine),
        recorder=HitRecorder(engine, settings, policy, clock=clock),
        policy=policy,
        subscribe_limiter=SlidingWindowLimiter(settings.api.subscribe_rate_limit,
                                               settings.api.subscribe_rate_window_seconds),
    )


def tracking_state(request: Request) -> TrackingState:
    """FastAPI dependency: this process's tracking state."""
    state: TrackingState = request.app.state.tracking
    return state
