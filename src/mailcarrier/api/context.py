"""What routes need from the running application: settings, the engine and the clock.

Held on ``app.state`` by :func:`mailcarrier.api.app.create_app` and handed to routes as
dependencies, so routes never build engines or read the environment themselves, and tests
can pass a database and a clock of their choosing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from fastapi import Request
from sqlalchemy import Engine

from mailcarrier.config import Settings

__all__ = ["AppContext", "app_context"]


@dataclass(frozen=True, slots=True)
class AppContext:
    settings: Settings
    engine: Engine
    clock: Callable[[], datetime]


def app_context(request: Request) -> AppContext:
    """FastAPI dependency: the application's context."""
    context: AppContext = request.app.state.context
    return context
