"""The application factory behind ``mailcarrier serve``.

``create_app`` wires settings, the database engine and the clock into ``app.state``,
installs the problem+json error handlers and includes every router of
:mod:`mailcarrier.api.routers`. Nothing happens at import time: the factory is called
by the CLI (or a test) with explicit settings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI
from sqlalchemy import Engine

import mailcarrier
from mailcarrier.api.context import AppContext
from mailcarrier.api.dashboard.security import DashboardSecurity
from mailcarrier.api.docs import install_offline_docs
from mailcarrier.api.problems import install_problem_handlers
from mailcarrier.api.proxies import TrustedProxies
from mailcarrier.api.routers import ROUTERS
from mailcarrier.api.tracking_state import build_tracking_state
from mailcarrier.config import Settings
from mailcarrier.storage.engine import make_engine

__all__ = ["create_app"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: Settings, engine: Engine | None = None, *,
               clock: Callable[[], datetime] | None = None) -> FastAPI:
    """Build the application; an engine passed in is left open, one built here is disposed at shutdown."""
    owns_engine = engine is None
    bound_engine = engine if engine is not None else make_engine(settings)
    context = AppContext(settings=settings, engine=bound_engine, clock=clock or _utc_now)
    tracking = build_tracking_state(settings, bound_engine, context.clock)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        tracking.recorder.start()
        try:
            yield
        finally:
            tracking.recorder.stop()
            if owns_engine:
                bound_engine.dispose()

    # docs_url/redoc_url off: FastAPI's pages load their scripts from a CDN; ours are local.
    app = FastAPI(title="mailcarrier", version=mailcarrier.__version__, lifespan=lifespan,
                  description="Email campaign delivery and deliverability engine.",
                  docs_url=None, redoc_url=None)
    install_offline_docs(app)
    app.state.context = context
    app.state.tracking = tracking
    install_problem_handlers(app)
    app.add_middleware(DashboardSecurity, secret=settings.resolved_secret)
    # Outermost: every layer below sees the client address the configured proxies vouch for.
    app.add_middleware(TrustedProxies, trusted=settings.api.trusted_proxies)
    for router in ROUTERS:
        app.include_router(router)
    return app
