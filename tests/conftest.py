"""Settings shared by the whole suite.

Hypothesis's per-example deadline (200 ms by default) is a timing assertion: on a loaded
machine a property test then fails on speed, not on behaviour. Speed is measured by the
benchmarks under ``bench/``; here only correctness is asserted.
"""

from hypothesis import settings

settings.register_profile("mailcarrier", deadline=None)
settings.load_profile("mailcarrier")
