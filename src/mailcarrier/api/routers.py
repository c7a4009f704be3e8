"""The registry of routers the application serves.

One module per resource (``api/routes_<name>.py``) exposes ``router``; add one line
below to serve it. Order matters only for overlapping paths.
"""

from __future__ import annotations

from fastapi import APIRouter

from mailcarrier.api import routes_consent, routes_health, routes_tracking

__all__ = ["ROUTERS"]

ROUTERS: list[APIRouter] = [
    routes_health.router,
    routes_tracking.router,
    routes_consent.router,
]
