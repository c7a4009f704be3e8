"""Input constraints shared by the resource routes.

PostgreSQL text cannot hold NUL characters (SQLite can), so a NUL in any string input is
refused at the edge with a 422 instead of failing in the database.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

__all__ = ["NO_NUL", "Address"]

#: A pattern matching any string without NUL characters.
NO_NUL = r"^[^\x00]*$"
Address = Annotated[str, StringConstraints(min_length=3, max_length=320, pattern=NO_NUL)]
