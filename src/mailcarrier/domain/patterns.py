"""Compiling the rule files' regular expressions for text that is lowercased once."""

from __future__ import annotations

import re

__all__ = ["lowercase_pattern"]


def lowercase_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a pattern meant for lowercased text.

    Case-insensitive matching folds case at every position tried, several times slower
    than matching lowercased text; a pattern with capitals keeps the flag.
    """
    return re.compile(pattern, 0 if pattern == pattern.lower() else re.IGNORECASE)
