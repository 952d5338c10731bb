"""The spreadsheet forecast: what a process engineer would do without a model.

For a held-out run cut at ``t_cut = harvest - horizon_h``:

    forecast = last viable count  x  median fold growth  x  last %CAR+

- *last viable count*: the run's latest ``viable_cells`` reading at or before ``t_cut``,
  taken at ``t_last``;
- *median fold growth*: over the training runs with a ``viable_cells`` reading at both
  ``t_last`` and the held-out run's harvest time ``T`` (hours since seeding), the median of
  ``count(T) / count(t_last)``. If no training run has both readings, each training run
  with readings at ``t_last`` and at its own harvest contributes its fold scaled to the window
  on the log scale, ``(count(T_r)/count(t_last))^((T - t_last)/(T_r - t_last))``;
- *last %CAR+*: the run's latest ``car_pos_fraction`` reading at or before ``t_cut`` (if none,
  the training runs' median %CAR+ at harvest).

The 90 % interval is the same product with the 5th and 95th percentiles of the training folds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..data import RunData


def _harvest_times(data: RunData) -> pd.Series:
    e = data.events
    return e[e["operation"] == "harvest"].set_index("run_id")["time_h"]


def _wide_counts(data: RunData) -> pd.DataFrame:
    m = data.measurements
    counts = m[m["variable"] == "viable_cells"]
    return counts.pivot_table(index="run_id", columns="time_h", values="value")


def spreadsheet_forecast(train: RunData, test: RunData, horizon_h: float) -> pd.DataFrame:
    """One row per finished ``test`` run: ``run_id, harvest_time_h, t_last_h, last_count,
    last_car_pos_fraction, n_folds, median, lower_90, upper_90``."""
    counts = _wide_counts(train)
    train_harvest = _harvest_times(train)
    m = train.measurements
    car_at_harvest = m[
        (m["variable"] == "car_pos_fraction") & (m["time_h"] == m["run_id"].map(train_harvest))
    ]["value"]
    fallback_car = float(car_at_harvest.median())
    rows = []
    for run_id, harvest in _harvest_times(test).items():
        mine = test.measurements[test.measurements["run_id"] == run_id]
        visible = mine[mine["time_h"] <= harvest - horizon_h]
        count = visible[visible["variable"] == "viable_cells"].sort_values("time_h")
        car = visible[visible["variable"] == "car_pos_fraction"].sort_values("time_h")
        if count.empty:
            continue
        t_last, last = float(count["time_h"].iloc[-1]), float(count["value"].iloc[-1])
        last_car = float(car["value"].iloc[-1]) if not car.empty else fallback_car
        folds = _folds(counts, train_harvest, t_last, float(harvest))
        if folds.size == 0:
            continue
        base = last * last_car
        rows.append(
            {
                "run_id": run_id,
                "harvest_time_h": float(harvest),
                "t_last_h": t_last,
                "last_count": last,
                "last_car_pos_fraction": last_car,
                "n_folds": int(folds.size),
                "median": base * float(np.median(folds)),
                "lower_90": base * float(np.quantile(folds, 0.05)),
                "upper_90": base * float(np.quantile(folds, 0.95)),
            }
        )
    return pd.DataFrame(rows)


def _folds(counts: pd.DataFrame, harvest: pd.Series, t_last: float, t_end: float) -> np.ndarray:
    if t_last in counts and t_end in counts:
        both = counts[[t_last, t_end]].dropna()
        if len(both):
            return (both[t_end] / both[t_last]).to_numpy()
    if t_last not in counts:
        return np.array([])
    folds = []
    for run_id, start in counts[t_last].dropna().items():
        end_time = float(harvest.get(run_id, np.nan))
        if not end_time > t_last or end_time not in counts:
            continue
        end = counts.loc[run_id, end_time]
        if np.isfinite(end) and start > 0 and end > 0:
            folds.append((end / start) ** ((t_end - t_last) / (end_time - t_last)))
    return np.asarray(folds)
