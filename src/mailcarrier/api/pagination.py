"""Keyset pagination shared by every list endpoint.

A page holds ``items`` and ``next_cursor``: pass ``cursor=<next_cursor>`` to get the next
page; ``null`` means there is none. Cursors are row ids, so pages stay stable while rows
are added, and a page costs one index range scan however deep the client has paged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

__all__ = ["MAX_ID", "Cursor", "Limit", "Page", "page_of"]

T = TypeVar("T")
#: Ids above this are refused by validation (SQLite integers are 64-bit signed).
MAX_ID = 2**62

Cursor = Annotated[int, Query(ge=0, le=MAX_ID, description="next_cursor of the previous page; 0 = start")]
Limit = Annotated[int, Query(ge=1, le=500, description="Items per page (1-500)")]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: int | None


def page_of(rows: Sequence[T], limit: int, key: Callable[[T], int]) -> Page[T]:
    """A page from ``limit + 1`` fetched rows: the extra row only says another page exists."""
    items = list(rows[:limit])
    more = len(rows) > limit
    return Page[T](items=items, next_cursor=key(items[-1]) if more and items else None)
