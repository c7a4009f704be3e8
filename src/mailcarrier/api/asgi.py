"""Import target for ASGI servers: ``uvicorn --factory mailcarrier.api.asgi:app_from_env``.

Worker processes cannot receive a Python object, so each one builds its app from the
environment (``MAILCARRIER_*``), exactly as ``mailcarrier serve`` configured it.
"""

from __future__ import annotations

from fastapi import FastAPI

from mailcarrier.api.app import create_app
from mailcarrier.config import load_settings

__all__ = ["app_from_env"]


def app_from_env() -> FastAPI:
    """A fresh application configured from the environment."""
    return create_app(load_settings())
