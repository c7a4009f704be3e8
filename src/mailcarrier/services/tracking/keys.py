"""Tracking keys and machine-activity thresholds, read from the settings.

Tokens are signed with the current key id's master secret; every secret still listed is
accepted, so keys rotate without breaking links already sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mailcarrier.config import Settings
from mailcarrier.domain.machine_activity import (
    Thresholds,
)

__all__ = ["TrackingKeys", "thresholds", "tracking_keys"]

# --- keys and thresholds from settings ------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrackingKeys:
    """The key id that signs new tokens, and every master secret still accepted, by id."""

    key_id: int
    secrets: Mapping[int, bytes]

    @property
    def current(self) -> bytes:
        return self.secrets[self.key_id]


def tracking_keys(settings: Settings) -> TrackingKeys:
    """Keys from settings: the current secret under ``tracking_key_id`` plus retired ones."""
    found: dict[int, bytes] = {settings.tracking.key_id: settings.resolved_secret()}
    for retired in settings.tracking.retired_secrets:  # KEY_ID:SECRET, checked at load
        found.setdefault(retired.key_id, retired.secret.encode())
    return TrackingKeys(settings.tracking.key_id, found)


def thresholds(settings: Settings) -> Thresholds:
    """The machine-activity thresholds configured by the operator."""
    return Thresholds(
        burst_seconds=settings.tracking.burst_seconds,
        burst_links=settings.tracking.burst_links,
        shared_ip_seconds=settings.tracking.shared_ip_seconds,
        shared_ip_recipients=settings.tracking.shared_ip_recipients,
        after_delivery_seconds=settings.tracking.after_delivery_seconds,
    )
