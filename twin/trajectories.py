"""Simulated batches as xarray Datasets (units in attrs) and the harvest/product summary."""

from __future__ import annotations

import numpy as np
import xarray as xr

from .observe import OBSERVABLES, observables
from .process import Downstream, Schedule, product, schedule_to_events
from .simulate import Trajectory, result_names

PRODUCT_UNITS = {
    "product_viable_cells": "cells",
    "product_viability": "fraction",
    "product_viable_car_pos_cells": "cells",
    "doses": "doses",
    "formulated_volume_ml": "mL",
    "passes_viability": "bool",
    "passes_car_pos": "bool",
    "passes_vcn": "bool",
    "passes_dose": "bool",
    "conforming": "bool",
    "conforming_doses": "doses",
}


def harvest_summary(trajectory: Trajectory, downstream: Downstream) -> dict[str, float]:
    """Harvest observables (``harvest_<name>``) and the product (see ``process.product``)."""
    at_harvest = observables(trajectory.end_state)
    summary = {f"harvest_{k}": float(v) for k, v in at_harvest.items()}
    summary.update({k: float(v) for k, v in product(at_harvest, downstream).items()})
    summary["solver_success"] = float(trajectory.success)
    return summary


def trajectory_dataset(
    trajectory: Trajectory,
    schedule: Schedule,
    downstream: Downstream,
    *,
    run_id: str = "simulated",
) -> xr.Dataset:
    """One simulated batch as a Dataset.

    Observables lie on ``time_h``; the events on ``event`` (``event_time_h``, ``operation`` and
    the event values); harvest and product figures are scalar variables. Units are in each
    variable's ``units`` attr.
    """
    obs = observables(trajectory.states)
    data_vars = {
        name: ("time_h", np.asarray(obs[name]), {"units": unit})
        for name, unit in OBSERVABLES.items()
    }
    events = schedule_to_events(schedule)
    data_vars["event_time_h"] = ("event", [e.time_h for e in events], {"units": "h"})
    data_vars["operation"] = ("event", np.array([e.operation for e in events], dtype=object))
    for field, unit in (("moi", "TU/cell"), ("fraction", "fraction"), ("volume_ml", "mL")):
        values = [np.nan if e.value(field) is None else e.value(field) for e in events]
        data_vars[f"event_{field}"] = ("event", np.asarray(values, float), {"units": unit})
    summary = harvest_summary(trajectory, downstream)
    for name, value in summary.items():
        unit = PRODUCT_UNITS.get(name) or OBSERVABLES.get(name.removeprefix("harvest_"), "")
        data_vars[name] = ((), value, {"units": unit})
    return xr.Dataset(
        data_vars,
        coords={"time_h": ("time_h", np.asarray(trajectory.time_h), {"units": "h"})},
        attrs={
            "run_id": run_id,
            "title": "cart-twin simulated cartridge",
            # Why the solve failed ("successful" if it did not); the values after it are NaN.
            "solver_result": str(result_names(trajectory.result)),
        },
    )
