"""The oracle: the error floor of a forecast at a horizon.

It knows a process's own equations and its donor population, and fits only each held-out
run's donor parameters to that run's visible data (MAP with the population prior, SciPy
``least_squares`` on standardized donor effects ``u = (z - z_pop) / donor_sd``), then predicts
viable CAR+ cells at harvest. The 90 % interval is Laplace + delta method: the posterior
covariance ``(J'J)^-1`` of ``u`` carried through the log-prediction's gradient, plus the harvest
assay's own noise (counter x flow cytometry) on the log scale.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from scipy.special import logit

from ..process import Event
from ._assays import relative_sd
from ._base import Param, Plant
from ._engine import simulate_events

Z90 = 1.6448536269514722
_FLOORS = {  # log-scale floors (unit of the variable): below them the noise is additive
    "viable_cells": 1e4,
    "glucose_mM": 0.5,
    "lactate_mM": 1.0,
    "il2_IU_per_mL": 1.3,
    "vcn_per_cell": 0.04,
}
_FRACTIONS = ("viability", "car_pos_fraction")


class ProcessModel(Protocol):
    """What the oracle needs to know about a process."""

    name: str
    parameters: dict[str, Param]
    glucose_detection_limit_mM: float

    def observe(
        self, events: Sequence[Event], p: dict, times_h: Sequence[float]
    ) -> dict[float, dict[str, float]] | None:
        """Noise-free observables at ``times_h`` (just before any event then), or ``None``
        when the solve fails."""


@dataclasses.dataclass
class PlantModel:
    """A plant as the oracle sees it (its true equations)."""

    plant: Plant

    @property
    def name(self) -> str:
        return self.plant.name

    @property
    def parameters(self) -> dict[str, Param]:
        return self.plant.parameters

    @property
    def glucose_detection_limit_mM(self) -> float:
        return self.plant.glucose_detection_limit_mM

    def observe(self, events, p, times_h):
        until = max(times_h)
        sample_times = {e.time_h for e in events if e.operation == "sample"}
        extra = [t for t in times_h if t not in sample_times]
        run = simulate_events(self.plant, events, p, until_h=until, states_at=extra)
        if not run.success:
            return None
        return dict(zip(run.sample_times_h, run.samples, strict=True))


def _residual(variable: str, observed: float, predicted: float, limit: float) -> float:
    sd = relative_sd(variable)
    if variable in _FRACTIONS:
        clip = lambda x: np.clip(x, 1e-3, 1 - 1e-3)  # noqa: E731
        return float((logit(clip(observed)) - logit(clip(predicted))) / sd)
    floor = _FLOORS[variable]
    if variable == "glucose_mM" and limit > 0 and observed == 0.0:
        # censored: only a prediction above the detection limit is evidence against
        return float(min(0.0, np.log(limit + floor) - np.log(max(predicted, 0.0) + floor)) / sd)
    return float((np.log(observed + floor) - np.log(max(predicted, 0.0) + floor)) / sd)


def oracle_forecast_run(
    model: ProcessModel,
    events: Sequence[Event],
    measurements: pd.DataFrame,
    horizon_h: float,
    *,
    max_nfev: int = 40,
) -> dict:
    """The oracle's forecast of one finished run's viable CAR+ cells at harvest from its data
    up to ``horizon_h`` before harvest (``measurements``: that run's rows, all times).

    **Returns:** ``harvest_time_h, median, lower_90, upper_90, converged, nfev``, ``data_rms``
    (RMS of the visible data's residuals at the fit, in noise SDs) and the fitted donor
    parameters (``fit.<name>``, natural units).
    """
    harvest = max(e.time_h for e in events if e.operation == "harvest")
    cutoff = harvest - horizon_h
    visible = measurements[measurements["time_h"] <= cutoff]
    times = sorted(set(visible["time_h"]))
    names = [n for n, spec in model.parameters.items() if spec.donor_sd > 0]
    specs = [model.parameters[n] for n in names]
    z0 = np.array([s.to_z(s.value) for s in specs])
    sd = np.array([s.donor_sd for s in specs])
    population = {n: s.value for n, s in model.parameters.items()}
    limit = model.glucose_detection_limit_mM
    rows = list(visible[["time_h", "variable", "value"]].itertuples(index=False, name=None))
    own = getattr(model, "residual", None)  # a model may bring its own assay likelihood
    residual = own if own is not None else lambda v, o, q: _residual(v, o, q, limit)

    def params(u):
        z = z0 + sd * u
        return population | {
            n: float(s.from_z(zi)) for n, s, zi in zip(names, specs, z, strict=True)
        }

    def residuals(u):
        obs = model.observe(events, params(u), times) if times else {}
        if obs is None:
            return np.concatenate([np.full(len(rows), 30.0), u])
        data = [residual(v, value, obs[t][v]) for t, v, value in rows]
        return np.concatenate([np.asarray(data, float), u])

    fit = least_squares(
        residuals, np.zeros(len(names)), method="trf", diff_step=1e-3, max_nfev=max_nfev
    )
    u_hat = fit.x
    data_rms = float(np.sqrt(np.mean(fit.fun[: len(rows)] ** 2))) if rows else 0.0
    cov = np.linalg.pinv(fit.jac.T @ fit.jac)

    def log_prediction(u):
        obs = model.observe(events, params(u), [harvest])
        if obs is None:
            return np.nan, np.nan
        h = obs[harvest]
        return np.log(max(h["viable_car_pos_cells"], 1.0)), h["car_pos_fraction"]

    g0, car = log_prediction(u_hat)
    step = 0.05
    grad = np.array([(log_prediction(u_hat + step * e)[0] - g0) / step for e in np.eye(len(names))])
    var_params = float(grad @ cov @ grad)
    # measured = count x %CAR+: log-normal count, logit-normal fraction (d log f = (1-f) d logit)
    var_assay = (
        relative_sd("viable_cells") ** 2 + (relative_sd("car_pos_fraction") * (1 - car)) ** 2
    )
    half = Z90 * np.sqrt(max(var_params, 0.0) + var_assay)
    return {
        "harvest_time_h": harvest,
        "median": float(np.exp(g0)),
        "lower_90": float(np.exp(g0 - half)),
        "upper_90": float(np.exp(g0 + half)),
        "converged": bool(fit.status > 0 and np.isfinite(g0)),
        "nfev": int(fit.nfev),
        "data_rms": data_rms,
        **{f"fit.{n}": v for n, v in params(u_hat).items() if n in names},
    }
