"""How far the hit writer has stored each tracking spool segment (revision ``0008_tracking_spool``).

The writer updates a segment's row in the same transaction as the hits it read from it, so
after a crash at any moment the next writer resumes exactly after the last stored hit: no
hit is lost and none is stored twice. (The spool's own position files, written after the
commit, can lag behind by one batch; the larger of the two wins.) Rows of deleted segments
are removed.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, String, Table

from mailcarrier.storage.tables import metadata

__all__ = ["tracking_spool_positions"]

tracking_spool_positions = Table(
    "tracking_spool_positions", metadata,
    Column("segment", String(128), primary_key=True),
    Column("position", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
)
