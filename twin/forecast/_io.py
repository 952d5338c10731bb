"""Reading the calibration a forecast starts from, and truncating data for backtests."""

from __future__ import annotations

import logging

import pandas as pd

from .._cli import resolve_user_path
from .._errors import TwinInputError
from ..calibrate import Calibration, load_calibration
from ..data import RunData

log = logging.getLogger(__name__)


def calibration_from_path(path: str | None, key: str = "calibration") -> Calibration:
    """Load ``calibration.nc`` from a file or from a calibrate run directory.

    **Raises:** :class:`TwinInputError` naming ``key`` if it is unset or nothing is there.
    """
    if path is None:
        raise TwinInputError(
            f"{key} is required: the calibration.nc of `python experiments/calibrate.py` "
            "(or its run directory)"
        )
    target = resolve_user_path(str(path))
    if target.is_dir():
        target = target / "calibration.nc"
    if not target.is_file():
        raise TwinInputError(f"{key}={str(path)!r}: no calibration file at {target}")
    calibration = load_calibration(target)
    if not calibration.converged:
        log.warning(
            "%s: this calibration did NOT converge (or a run's solve failed at its estimate): "
            "what follows rests on unreliable estimates; see convergence.csv beside it",
            target,
        )
    return calibration


def harvest_times(data: RunData) -> pd.Series:
    """Harvest time (h) of each finished run, indexed by run_id."""
    events = data.events
    return events[events["operation"] == "harvest"].set_index("run_id")["time_h"]


def truncate(data: RunData, run_ids: list[str], horizon_h: float) -> RunData:
    """The runs ``run_ids`` as they were ``horizon_h`` hours before harvest: measurements after
    that are removed; the events (done and planned, harvest included) are kept."""
    harvest = harvest_times(data)
    missing = sorted(set(run_ids) - set(harvest.index))
    if missing:
        raise TwinInputError(f"runs {missing} have no harvest: a backtest needs finished runs")
    runs = data.runs[data.runs["run_id"].isin(run_ids)]
    events = data.events[data.events["run_id"].isin(run_ids)]
    measurements = data.measurements[data.measurements["run_id"].isin(run_ids)]
    cutoff = measurements["run_id"].map(harvest) - horizon_h
    return RunData(
        runs=runs, events=events, measurements=measurements[measurements["time_h"] <= cutoff]
    )


def measured_at(data: RunData, time_h: pd.Series) -> pd.DataFrame:
    """Every variable measured at each run's time ``time_h`` (indexed by run_id) as a wide
    table indexed by run_id (replicate readings averaged), with ``viable_car_pos_cells`` =
    viable cells x %CAR+ where both were measured."""
    m = data.measurements
    at = m[m["time_h"] == m["run_id"].map(time_h)]
    wide = at.pivot_table(index="run_id", columns="variable", values="value")
    if {"viable_cells", "car_pos_fraction"} <= set(wide.columns):
        wide["viable_car_pos_cells"] = wide["viable_cells"] * wide["car_pos_fraction"]
    return wide


def measured_at_harvest(data: RunData) -> pd.DataFrame:
    """Every variable measured at each finished run's harvest (:func:`measured_at`)."""
    return measured_at(data, harvest_times(data))


def observed_at_harvest(data: RunData) -> pd.DataFrame:
    """Measured viable CAR+ cells at each finished run's harvest (viable cells x %CAR+)."""
    wide = measured_at_harvest(data)
    if "viable_car_pos_cells" not in wide.columns:
        return pd.DataFrame(columns=["run_id", "observed"])
    return wide["viable_car_pos_cells"].dropna().rename("observed").reset_index()
