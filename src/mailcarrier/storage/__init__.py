"""The system of record: SQLAlchemy Core tables, engine set-up and Alembic migrations.

All SQL lives in this package. To change the schema: edit ``tables.py``, then add a new
Alembic revision under ``migrations/versions`` (``alembic revision --autogenerate`` against
an upgraded database, with ``migrations/env.py`` as the environment). The test
``tests/storage/test_migrations.py`` fails when the migrations and ``tables.py`` drift apart.
"""
