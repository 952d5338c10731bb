"""From simulated draws to what would be measured: intervals, release odds, harvest advice."""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..assays import AssayNoise, sample_assay
from ..process import Downstream, product

# forecast.csv variables (RUN_DATA.md), in order.
FORECAST_VARIABLES: tuple[str, ...] = (
    "viable_cells",
    "viability",
    "car_pos_fraction",
    "vcn_per_cell",
    "viable_car_pos_cells",
)
FORECAST_COLUMNS: tuple[str, ...] = (
    "run_id",
    "variable",
    "time_h",
    "median",
    "lower_90",
    "upper_90",
)


def measured_draws(
    key: jax.Array,
    draws: dict[str, jax.Array],
    noise: AssayNoise,
    shared_axis: int | None = None,
) -> dict[str, np.ndarray]:
    """Add assay noise to simulated draws (any shape) of the observables.

    ``viable_car_pos_cells`` is not an assay of its own: it is the measured viable count times the
    measured %CAR+, as a lab would compute it.

    ``shared_axis``: if given (e.g. the time axis), one noise deviate per draw is shared along
    it (common random numbers). Each value's distribution is the same as with independent
    noise, so intervals and release odds at any one time are unchanged; quantiles traced over
    time are then free of sampling jitter, and comparisons between times (harvest advice) are
    not decided by it.
    """
    values = {v: jnp.asarray(draws[v]) for v in _ASSAYED}
    sds = {v: jnp.asarray(noise.sd(v), float) for v in _ASSAYED}
    measured = {k: np.asarray(x) for k, x in _assays(key, values, sds, shared_axis).items()}
    measured["viable_car_pos_cells"] = measured["viable_cells"] * measured["car_pos_fraction"]
    return measured


_ASSAYED = ("viable_cells", "viability", "car_pos_fraction", "vcn_per_cell")


@functools.partial(jax.jit, static_argnames="shared_axis")
def _assays(key, values, sds, shared_axis):
    # One compiled program per shape (eagerly, each operation would compile on its own).
    measured = {}
    for k, variable in zip(jax.random.split(key, len(_ASSAYED)), _ASSAYED, strict=True):
        measured[variable] = sample_assay(k, variable, values[variable], sds[variable], shared_axis)
    return measured


def interval_rows(run_id: str, time_h: float, measured: dict[str, np.ndarray]) -> list[dict]:
    """forecast.csv rows (median and central 90 % interval) for one run at one time."""
    rows = []
    for variable in FORECAST_VARIABLES:
        with warnings.catch_warnings():  # all draws failed (NaN): NaN interval
            warnings.simplefilter("ignore", RuntimeWarning)
            lower, median, upper = np.nanquantile(measured[variable], [0.05, 0.5, 0.95])
        rows.append(
            {
                "run_id": run_id,
                "variable": variable,
                "time_h": time_h,
                "median": float(median),
                "lower_90": float(lower),
                "upper_90": float(upper),
            }
        )
    return rows


def release_odds(measured: dict[str, np.ndarray], downstream: Downstream) -> dict[str, np.ndarray]:
    """Probability (over the draws' leading axis) of meeting each release check and all of them
    with at least the minimum number of doses, and the expected number of conforming doses.

    Release is decided on measured values (QC assays), so ``measured`` should carry assay noise.
    The VCN check uses VCN per transduced cell = VCN per cell / %CAR+.
    """
    car_pos = measured["car_pos_fraction"]
    harvest = {
        "viable_cells": jnp.asarray(measured["viable_cells"]),
        "viability": jnp.asarray(measured["viability"]),
        "car_pos_fraction": jnp.asarray(car_pos),
        "vcn_per_transduced_cell": jnp.asarray(
            measured["vcn_per_cell"] / np.maximum(car_pos, 1e-12)
        ),
    }
    result = product(harvest, downstream)
    return {
        "p_viability": np.mean(np.asarray(result["passes_viability"]), axis=0),
        "p_car_pos": np.mean(np.asarray(result["passes_car_pos"]), axis=0),
        "p_vcn": np.mean(np.asarray(result["passes_vcn"]), axis=0),
        "p_dose": np.mean(np.asarray(result["passes_dose"]), axis=0),
        "p_conforming": np.mean(np.asarray(result["conforming"]), axis=0),
        "expected_conforming_doses": np.mean(np.asarray(result["conforming_doses"]), axis=0),
        "expected_viable_car_pos_cells": np.mean(
            np.asarray(result["product_viable_car_pos_cells"]), axis=0
        ),
    }


def harvest_advice(
    times_h: np.ndarray, odds: dict[str, np.ndarray], tolerance: float = 0.01
) -> dict:
    """The harvest time that maximizes the chance of a conforming dose; among times within
    ``tolerance`` of that chance, the one with the largest expected yield."""
    p = np.asarray(odds["p_conforming"])
    best = p.max()
    candidates = np.flatnonzero(p >= best - tolerance)
    pick = candidates[np.argmax(np.asarray(odds["expected_viable_car_pos_cells"])[candidates])]
    return {
        "recommended_harvest_time_h": float(times_h[pick]),
        "p_conforming_at_recommended": float(p[pick]),
        "expected_product_car_pos_cells_at_recommended": float(
            odds["expected_viable_car_pos_cells"][pick]
        ),
        "expected_conforming_doses_at_recommended": float(odds["expected_conforming_doses"][pick]),
    }


def forecast_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(FORECAST_COLUMNS))
