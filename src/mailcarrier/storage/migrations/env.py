"""Alembic environment: migrate the engine handed over by ``mailcarrier.storage.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, create_engine

from mailcarrier.storage.schema import metadata

config = context.config
engine = config.attributes.get("engine")
if not isinstance(engine, Engine):
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True,
                      on_version_apply=config.attributes.get("on_version_apply"))
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
