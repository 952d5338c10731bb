"""Load limits: sizes that are typos, not needs, refused before any work starts.

A horizon of 1e9 days, 1e9 forecast draws or 1e12 sweep points would otherwise run for days or
exhaust memory or disk without a word. Each limit is far above any use the twin was built for
(a factory's decade, a sweep of 1e8 simulations) and is checked where the setting is read,
naming the key, the value and the limit.
"""

from __future__ import annotations

MAX_SIMULATIONS = 100_000_000  # per command: ~16 GB of sweep outcomes, days of CPU time
MAX_DRAWS = 100_000  # forecast draws per run, donors per optimizer evaluation
MAX_TIME_POINTS = 100_000  # saved states per simulated batch (~20 MB of trajectory)
MAX_FACILITY_DAYS = 3650.0  # ten years of a factory
MAX_FACILITY_BATCHES = 1_000_000  # expected arrivals over a factory run


def over_limit(key: str, value: float, size: float, limit: float, what: str) -> str | None:
    """The problem line when ``size`` (what ``key=value`` asks for) exceeds ``limit``."""
    if size > limit:
        return f"{key}={value!r}: asks for {size:.3g} {what}, above the limit {limit:.3g}"
    return None
