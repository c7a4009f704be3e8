"""The whole schema: the base tables plus every feature's tables, on one ``MetaData``.

Each feature keeps its tables in its own module (``*_tables.py``) that adds them to the
shared :data:`metadata`; importing this module registers all of them. Migrations and the
schema-drift test use this module, never ``tables.py`` alone. Alembic revisions form one
line: a new revision's ``down_revision`` is the current head (``mailcarrier db current`` on a
fresh database, or ``storage.migrate.script_heads()``); a test fails on a second head.
"""

from __future__ import annotations

# Feature table modules register their tables on import: one import line per feature below.
from mailcarrier.storage import (
    inbound_tables,  # noqa: F401
    pool_tables,  # noqa: F401
    report_tables,  # noqa: F401
    tables,
    tracking_spool_tables,  # noqa: F401
    tracking_tables,  # noqa: F401
    webhook_tables,  # noqa: F401
)
from mailcarrier.storage.tables import metadata

__all__ = ["metadata", "tables"]
