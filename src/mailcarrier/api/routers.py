"""The registry of routers the application serves.

One module per resource (``api/routes_<name>.py``) exposes ``router``; add one line
below to serve it. Order matters only for overlapping paths.
"""

from __future__ import annotations

from fastapi import APIRouter

from mailcarrier.api import (  # resources, reports and evidence (issue 7)
    routes_account,
    routes_audiences,
    routes_bounces,
    routes_consent,
    routes_contacts,
    routes_deliveries,
    routes_evidence,
    routes_health,
    routes_imports,
    routes_mailings,
    routes_pools,
    routes_reports,
    routes_tracking,
    routes_webhooks,
)
from mailcarrier.api.dashboard import routes as dashboard_routes

__all__ = ["ROUTERS"]

ROUTERS: list[APIRouter] = [
    routes_health.router,
    routes_tracking.router,
    routes_consent.router,
    routes_account.router,
    routes_audiences.router,
    routes_contacts.router,
    routes_imports.router,
    routes_mailings.router,
    routes_deliveries.router,
    routes_reports.router,
    routes_bounces.router,
    routes_evidence.router,
    routes_pools.router,
    routes_webhooks.router,
    dashboard_routes.router,
]
