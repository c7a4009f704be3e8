"""Seed 001's bounce type and "Email Invalid" for stored bounces."""

from __future__ import annotations

import pytest

from mailcarrier.domain.bounce_labels import bounce_labels


@pytest.mark.parametrize(("reason", "category", "expected"), [
    ("userunknown", 2, ("hard", True)),
    ("blocked", 1, ("hard", False)),
    ("filtered", 1, ("hard", False)),  # suspected B2B filtering: hard, the address is not invalid
    ("blocked", 3, ("soft", False)),  # greylisting / throttling: a temporary category
    ("mailboxfull", 3, ("soft", False)),
    ("networkerror", 4, ("soft", False)),
    ("undefined", 9, ("soft", False)),
    ("vacation", 9, (None, False)),  # an auto-reply is no bounce
    (None, 2, ("hard", True)),
    ("somethingnew", 1, ("hard", False)),  # a reason unknown to this version: the category decides
    ("userunknown", None, (None, False)),
    ("userunknown", 7, (None, False)),
])
def test_bounce_labels(reason: str | None, category: int | None, expected: tuple[str | None, bool]) -> None:
    assert bounce_labels(reason, category) == expected
