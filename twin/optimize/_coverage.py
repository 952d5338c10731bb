"""What the calibration data covered: the range of each decision value over the recorded runs.

A recipe whose decisions leave these ranges asks the twin to extrapolate: its kinetics were
never checked against data there (an IL-2 level nobody ran, an MOI above every recorded one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from ..data import RunData

# decision value -> (operation, events column); transduction_delay_h is derived below.
_EVENT_COLUMNS: dict[str, tuple[str, str]] = {
    "seed_cells": ("seed", "cells"),
    "seed_volume_ml": ("seed", "volume_ml"),
    "moi": ("transduce", "moi"),
    "medium_il2_IU_per_mL": ("seed", "il2_IU_per_mL"),
    "harvest_time_h": ("harvest", "time_h"),
    "exchange_time_h": ("exchange", "time_h"),
    "exchange_fraction": ("exchange", "fraction"),
    "feed_time_h": ("feed", "time_h"),
    "feed_volume_ml": ("feed", "volume_ml"),
}


def covered_ranges(
    data: RunData, run_ids: Iterable[str] | None = None
) -> dict[str, tuple[float, float]]:
    """Per decision value (:data:`~twin.process.DESIGN_VALUES` names): ``(low, high)`` over the
    events of ``run_ids`` (default: every run), in the decision's unit. A value no run records
    (e.g. no feeds) is absent; one every run holds equal has ``low == high``.
    """
    events = data.events
    if run_ids is not None:
        events = events[events["run_id"].isin(list(run_ids))]
    ranges: dict[str, tuple[float, float]] = {}
    for name, (operation, column) in _EVENT_COLUMNS.items():
        values = events.loc[events["operation"] == operation, column].dropna()
        if len(values):
            ranges[name] = (float(values.min()), float(values.max()))
    activation = _first_times(events, "activate")
    delay = (_first_times(events, "transduce") - activation).dropna()
    if len(delay):
        ranges["transduction_delay_h"] = (float(delay.min()), float(delay.max()))
    return ranges


def _first_times(events: pd.DataFrame, operation: str) -> pd.Series:
    """Per run, the time of its first ``operation`` event."""
    return events[events["operation"] == operation].groupby("run_id")["time_h"].first()


def outside_ranges(
    values: Mapping[str, object],
    ranges: Mapping[str, tuple[float, float]],
    names: Iterable[str],
    *,
    rtol: float = 1e-6,
) -> dict[str, str]:
    """For each of ``names`` whose value (any entry, for a vector) leaves its covered range:
    a readable note such as ``"moi=12.3 (data 2-10)"``; names without a range are skipped."""
    notes = {}
    for name in names:
        if name not in ranges:
            continue
        low, high = ranges[name]
        slack = rtol * max(abs(low), abs(high), 1.0)
        x = np.atleast_1d(np.asarray(values[name], float))
        outside = (x < low - slack) | (x > high + slack)
        if np.any(outside):
            shown = " ".join(f"{v:.4g}" for v in x[outside])
            notes[name] = f"{name}={shown} (data {low:.4g}-{high:.4g})"
    return notes


def restrict_to_ranges(
    bounds: Mapping[str, tuple[float, float]],
    start: Mapping[str, object],
    ranges: Mapping[str, tuple[float, float]],
) -> tuple[dict[str, tuple[float, float]], dict[str, str]]:
    """Intersect each decision's box with its covered range (decisions without a range keep
    their box). A decision whose start value (any entry) is outside the intersection, or whose
    intersection is a single value, cannot move without extrapolating: it is held at the
    start. A start on the edge of the covered range (e.g. the longest recorded culture) may
    move inward.

    **Returns:** ``(bounds, held)``: the narrowed boxes of the decisions left free, and per
    held decision a readable reason.
    """
    narrowed, held = {}, {}
    for name, (low, high) in bounds.items():
        if name not in ranges:
            narrowed[name] = (float(low), float(high))
            continue
        lo, hi = max(float(low), ranges[name][0]), min(float(high), ranges[name][1])
        x0 = np.atleast_1d(np.asarray(start[name], float))
        if x0.size and lo < hi and np.all((lo <= x0) & (x0 <= hi)):
            narrowed[name] = (lo, hi)
        else:
            covered = ranges[name]
            held[name] = (
                f"{name} held at the start recipe's value "
                f"{' '.join(f'{v:.4g}' for v in x0)}: the calibration data cover only "
                f"{covered[0]:.4g}-{covered[1]:.4g}"
            )
    return narrowed, held
