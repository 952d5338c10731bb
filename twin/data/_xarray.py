"""A dataset as one xarray Dataset / NetCDF file, with a lossless round trip to `RunData`.

Layout (units in each variable's ``units`` attribute):

* dims ``run`` and ``time``; coordinates ``run`` (run_id), ``donor_id`` (on ``run``) and
  ``time_h`` (on ``time``: the sorted union of all measurement times, h since seed);
* one ``(run, time)`` float variable per measurement variable (RUN_DATA.md), NaN = not measured;
* the batch records on dims ``(run, event)``: ``event_time_h``, ``event_operation`` (strings,
  ``''`` after a run's last event) and ``event_<field>`` for each numeric event field (NaN =
  empty). Event fields are prefixed because some share a name with a measurement variable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from twin._atomic import atomic_path
from twin._errors import TwinInputError

from ._check import run_data_problems
from ._contract import EVENT_FIELD_UNITS, MEASUREMENT_UNITS, TIME_UNITS
from ._run_data import RunData

_EVENT_PREFIX = "event_"
_EVENT_VARIABLES = (
    f"{_EVENT_PREFIX}time_h",
    f"{_EVENT_PREFIX}operation",
    *(_EVENT_PREFIX + field for field in EVENT_FIELD_UNITS),
)


def run_data_to_xarray(data: RunData) -> xr.Dataset:
    """``data`` as one Dataset (layout in this module's docstring)."""
    run_ids = data.run_ids
    run_index = {run_id: i for i, run_id in enumerate(run_ids)}
    measurements = data.measurements
    times = np.unique(measurements["time_h"].to_numpy())
    run_rows = _positions(measurements["run_id"], run_index)
    time_cols = np.searchsorted(times, measurements["time_h"].to_numpy())
    variables = {}
    for name, units in MEASUREMENT_UNITS.items():
        grid = np.full((len(run_ids), len(times)), np.nan)
        chosen = (measurements["variable"] == name).to_numpy()
        grid[run_rows[chosen], time_cols[chosen]] = measurements["value"].to_numpy()[chosen]
        variables[name] = xr.Variable(("run", "time"), grid, {"units": units})

    events = data.events
    event_rows = _positions(events["run_id"], run_index)
    event_cols = events.groupby("run_id", sort=False).cumcount().to_numpy()
    n_events = int(event_cols.max()) + 1 if len(events) else 0
    columns = {"time_h": TIME_UNITS, **EVENT_FIELD_UNITS}
    for column, units in columns.items():
        grid = np.full((len(run_ids), n_events), np.nan)
        grid[event_rows, event_cols] = events[column].to_numpy()
        variables[_EVENT_PREFIX + column] = xr.Variable(("run", "event"), grid, {"units": units})
    operations = np.full((len(run_ids), n_events), "", dtype=object)
    operations[event_rows, event_cols] = events["operation"].to_numpy(dtype=object)
    variables[f"{_EVENT_PREFIX}operation"] = xr.Variable(("run", "event"), operations)

    coords = {
        "run": ("run", np.array(run_ids, dtype=object)),
        "donor_id": ("run", data.runs["donor_id"].to_numpy(dtype=object)),
        "time_h": ("time", times, {"units": TIME_UNITS, "long_name": "hours since seed"}),
    }
    return xr.Dataset(variables, coords)


def run_data_from_xarray(ds: xr.Dataset) -> RunData:
    """The :class:`RunData` held by a Dataset made by :func:`run_data_to_xarray`.

    **Raises:** :class:`~twin._errors.TwinInputError` if variables or coordinates are missing or
    unknown ones are present.
    """
    _check_layout(ds)
    run_ids = [str(run_id) for run_id in ds["run"].values]
    runs = pd.DataFrame({"run_id": run_ids, "donor_id": [str(d) for d in ds["donor_id"].values]})

    times = ds["time_h"].values.astype(float)
    pieces = []
    for name in MEASUREMENT_UNITS:
        grid = ds[name].transpose("run", "time").values
        rows, cols = np.nonzero(~np.isnan(grid))
        pieces.append(
            pd.DataFrame(
                {
                    "run_id": [run_ids[r] for r in rows],
                    "time_h": times[cols],
                    "variable": name,
                    "value": grid[rows, cols],
                }
            )
        )
    measurements = pd.concat(pieces, ignore_index=True)

    operations = ds[f"{_EVENT_PREFIX}operation"].transpose("run", "event").values.astype(str)
    rows, cols = np.nonzero(operations != "")  # row-major: by run, then in recorded order
    events = pd.DataFrame(
        {"run_id": [run_ids[r] for r in rows], "operation": operations[rows, cols]}
    )
    for column in ("time_h", *EVENT_FIELD_UNITS):
        events[column] = ds[_EVENT_PREFIX + column].transpose("run", "event").values[rows, cols]
    return RunData(runs=runs, events=events, measurements=measurements)


def write_netcdf(data: RunData, file: str | Path) -> Path:
    """Write ``data`` as one NetCDF file, atomically (a temporary file, then ``os.replace``).

    **Raises:** :class:`~twin._errors.TwinInputError` if ``data`` breaks the contract.
    """
    target = Path(file)
    problems = run_data_problems(data)
    if problems:
        raise TwinInputError(f"refusing to write invalid run data to {target}", problems)
    with atomic_path(target) as staging:
        run_data_to_xarray(data).to_netcdf(staging, engine="netcdf4")
    return target


def read_netcdf(file: str | Path) -> RunData:
    """Read and validate a NetCDF file written by :func:`write_netcdf`.

    **Raises:** :class:`~twin._errors.TwinInputError` listing every problem found; rows are
    numbered from 1 in the order :func:`~twin.data.write_run_data` writes them, e.g.
    ``run.nc: events row 3, column moi: value '-1.0' must be >= 0``.
    """
    path = Path(file)
    if not path.is_file():
        raise TwinInputError(f"NetCDF file not found: {path}")
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            ds.load()
    except (OSError, ValueError) as error:
        raise TwinInputError(f"{path}: not a readable NetCDF file ({error})") from error
    try:
        data = run_data_from_xarray(ds)
    except TwinInputError as error:
        problems = [f"{path.name}: {problem}" for problem in error.problems]
        raise TwinInputError(f"{path} does not hold run data", problems) from error
    problems = run_data_problems(data, prefix=f"{path.name}: ")
    if problems:
        raise TwinInputError(f"{len(problems)} problems in run data {path}", problems)
    return data


def _positions(run_ids: pd.Series, run_index: dict[str, int]) -> np.ndarray:
    """Each row's run position; every run must be listed in the runs table."""
    unknown = sorted(set(run_ids) - set(run_index))
    if unknown:
        raise ValueError(f"runs missing from the runs table: {unknown}")
    return run_ids.map(run_index).to_numpy(dtype=int)


def _check_layout(ds: xr.Dataset) -> None:
    expected_dims = {
        "run": ("run",),
        "donor_id": ("run",),
        "time_h": ("time",),
        **dict.fromkeys(MEASUREMENT_UNITS, ("run", "time")),
        **dict.fromkeys(_EVENT_VARIABLES, ("run", "event")),
    }
    present = {name: ds[name].dims for name in (*ds.coords, *ds.data_vars)}
    problems = []
    for name, dims in expected_dims.items():
        if name not in present:
            problems.append(f"missing variable {name!r}")
        elif sorted(present[name]) != sorted(dims):
            problems.append(f"variable {name!r} has dims {present[name]}, expected {dims}")
    problems += [f"unknown variable {name!r}" for name in sorted(set(present) - set(expected_dims))]
    if problems:
        raise TwinInputError("not a run-data Dataset: " + "; ".join(problems), problems)
