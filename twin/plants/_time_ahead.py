"""Where a held-out forecast's miss arises: the twin's forecast of the viable count against the
process's true (noise-free) count at every sample of a run, from the last one it saw to harvest.

The error at the last visible sample is what conditioning on the run's data left (the state
the forecast starts from); how it grows after the cut is what the twin's dynamics add. A
model whose miss is already large at the cut needs a better estimate of the present (more
run-level freedom, anchoring); one whose miss grows with time ahead needs better dynamics.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..data import RunData
from ..forecast import Forecast
from ..forecast._io import harvest_times
from ._assays import relative_sd
from ._generate import events_from_table
from ._oracle import ProcessModel

log = logging.getLogger(__name__)

VARIABLE = "viable_cells"
COLUMNS = ("run_id", "time_h", "time_ahead_h", "true_viable_cells", "median", "log_error")


def true_viable_cells(
    model: ProcessModel, test: RunData, true_parameters: pd.DataFrame
) -> pd.DataFrame:
    """``run_id, time_h, true_viable_cells`` at every time a run was sampled, from the
    process's own equations with that run's true donor parameters (``true_parameters.csv``:
    ``run_id``, ``donor_id``, one column per parameter). A run without true parameters or
    samples, or whose solve fails, is left out, and the log names it."""
    parameters = true_parameters.drop(columns=["donor_id"], errors="ignore").set_index("run_id")
    rows, left_out = [], []
    for run_id in test.run_ids:
        events = events_from_table(test.events[test.events["run_id"] == run_id])
        times = sorted({e.time_h for e in events if e.operation == "sample"})
        observed = None
        if run_id in parameters.index and times:
            p = {name: float(value) for name, value in parameters.loc[run_id].items()}
            observed = model.observe(events, p, times)
        if observed is None:
            left_out.append(run_id)
            continue
        rows += [(run_id, t, observed[t][VARIABLE]) for t in times]
    if left_out:
        log.warning("%s: no true count for runs %s (left out)", model.name, left_out)
    return pd.DataFrame(rows, columns=["run_id", "time_h", "true_viable_cells"])


def time_ahead_errors(
    forecast: Forecast, test: RunData, truth: pd.DataFrame, horizon_h: float
) -> pd.DataFrame:
    """One row per run and sample time from its last visible sample (at or before the cut,
    ``horizon_h`` before harvest) on: the time after the cut (``time_ahead_h``, <= 0 for the
    last visible one), the true viable count, the forecast median there and
    ``log_error = log(median / true)`` (:data:`COLUMNS`)."""
    harvest = harvest_times(test)
    run_ids = list(forecast.runs["run_id"])
    rows = []
    for run_id, run_truth in truth.groupby("run_id", sort=False):
        i = run_ids.index(run_id)
        cut = float(harvest[run_id]) - horizon_h
        visible = run_truth["time_h"] <= cut
        if not visible.any():
            continue
        scored = run_truth[run_truth["time_h"] >= run_truth.loc[visible, "time_h"].max()]
        medians = np.interp(
            scored["time_h"], forecast.time_h[i], forecast.quantiles[VARIABLE][i, :, 2]
        )
        columns = (scored["time_h"], scored["true_viable_cells"], medians)
        for t, true, median in zip(*columns, strict=True):
            rows.append((run_id, t, t - cut, true, median, float(np.log(median / true))))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def time_ahead_table(errors: pd.DataFrame) -> pd.DataFrame:
    """Per bench and time ahead: ``runs`` and the mean absolute log error
    (``mean_abs_log_error``) of the forecast viable count against the true one."""
    grouped = errors.assign(abs_log_error=errors["log_error"].abs()).groupby(
        ["bench", "time_ahead_h"], sort=False
    )
    return grouped.agg(
        runs=("run_id", "size"), mean_abs_log_error=("abs_log_error", "mean")
    ).reset_index()


def format_time_ahead(table: pd.DataFrame) -> str:
    """The table as text: one line per bench, the error at each time ahead."""
    wide = table.pivot(index="bench", columns="time_ahead_h", values="mean_abs_log_error")
    wide = wide.reindex(table["bench"].unique())
    head = "".join(f"{t:>+9.0f} h" for t in wide.columns)
    # A log-normal reading with SD s misses the truth by s sqrt(2/pi) on average.
    one_reading = relative_sd(VARIABLE) * np.sqrt(2.0 / np.pi)
    lines = [
        "viable count, forecast against the true one: mean |log error| by time after the cut "
        f"(one reading of the plants' counter: {one_reading:.3f})",
        f"{'bench':<18}{head}",
    ]
    for bench, row in wide.iterrows():
        lines.append(f"{bench:<18}" + "".join(f"{v:>11.3f}" for v in row))
    return "\n".join(lines)
