"""mailcarrier: email campaign delivery and deliverability engine.

The importable library surface is :mod:`mailcarrier.domain`: SMTP reply parsing,
reason/category classification and bounce-email parsing, all pure functions over
immutable values.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
