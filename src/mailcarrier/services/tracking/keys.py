"""Tracking keys and machine-activity thresholds, read from the settings.

Tokens are signed with the current key id's master secret; every secret still listed is
accepted, so keys rotate without breaking links already sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mailcarrier.config import Settings
from mailcarrier.domain.errors import ConfigurationError
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
    found: dict[int, bytes] = {settings.tracking_key_id: settings.resolved_secret()}
    for raw_entry in settings.tracking_retired_secrets.split(","):
        entry = raw_entry.strip()
        if not entry:
            continue
        key_id, sep, secret = entry.partition(":")
        if not sep or not key_id.strip().isdigit() or not secret or int(key_id) > 255:
            raise ConfigurationError(
                "MAILCARRIER_TRACKING_RETIRED_SECRETS entries must look like 'KEY_ID:SECRET' "
                "with KEY_ID in 0..255")
        found.setdefault(int(key_id), secret.encode())
    return TrackingKeys(settings.tracking_key_id, found)


def thresholds(settings: Settings) -> Thresholds:
    """The machine-activity thresholds configured by the operator."""
    return Thresholds(
        burst_seconds=settings.tracking_burst_seconds,
        burst_links=settings.tracking_burst_links,
        shared_ip_seconds=settings.tracking_shared_ip_seconds,
        shared_ip_recipients=settings.tracking_shared_ip_recipients,
        after_delivery_seconds=settings.tracking_after_delivery_seconds,
    )
