"""Seed 001's two answers for a stored bounce: its bounce type and "Email Invalid".

Stored rows (deliveries, attempts, activities, contacts' latest bounce) keep the reason and
the category; the API, webhooks and reports derive the two answers here, from the same rule
the classifier uses (:meth:`mailcarrier.domain.vocabulary.BounceType.of`): hard = categories
1 and 2, soft = 3, 4 and 9; address invalid = category 2 only.
"""

from __future__ import annotations

from mailcarrier.domain.vocabulary import BounceType, Category, Reason

__all__ = ["bounce_labels"]


def bounce_labels(reason: str | None, category: int | None) -> tuple[str | None, bool]:
    """(``"hard"``/``"soft"``, address invalid) of a stored failure; (None, False) for rows
    that are no bounce (no category, or an auto-reply/complaint reason)."""
    if category is None:
        return None, False
    try:
        cat = Category(category)
    except ValueError:
        return None, False
    try:
        kind = BounceType.of(Reason(reason), cat) if reason else BounceType.HARD if cat.is_hard \
            else BounceType.SOFT
    except ValueError:  # a reason unknown to this version: the category still decides
        kind = BounceType.HARD if cat.is_hard else BounceType.SOFT
    if kind is None:
        return None, False
    return kind.value, cat is Category.INVALID_ADDRESS
