"""Model discrepancy learnt from the training runs' own held-out forecasts (split conformal).

Real cells never follow the twin's equations, so a forecast that propagates only parameter and
assay uncertainty is biased and too confident where the model is wrong. The calibration data
say by how much: each finished training run is forecast as if it were running, from its data
cut ``h`` hours before its harvest, conditioned as a *new* donor (its own donor effects are not
used), and the forecast at harvest is compared with what was measured there. Per forecast
variable and horizon this gives, on the variable's own scale (log or logit):

- ``gain`` (anchoring to the latest reading): how much of the run's *anchor residual*, its
  latest reading minus the forecast median at that time, carries on to the error at the
  horizon. Where the model is wrong the conditioned trajectory misses the latest readings in a
  way that persists (a culture already stalling, a fit still rising); the robust (Theil-Sen)
  slope of error on anchor residual, pooled over the horizons, says how much to trust that
  (:func:`anchoring_gain`). A statistical post-correction of this kind is what weather
  services call model output statistics; here it is one coefficient per variable.
- ``bias``: the median error left after the anchoring, added to future forecasts;
- ``mean_abs_error`` (after both corrections) and ``mean_abs_error_uncorrected``: how far
  off those forecasts were (used to rank model structures, :mod:`twin.calibrate._select`);
- ``age_slope_per_h`` (``age_trend``): how the error left after the anchoring changes with
  the culture time at the forecast target, per hour from ``age_reference_h`` (the median
  harvest time of the scored runs): a model whose decline with culture age is too gentle
  over-predicts late harvests and under-predicts early ones. One robust slope pooled over the
  horizons like the gain, kept only where its 95 % interval (over runs, each run's horizons
  averaged) excludes 0; the interval scale below is then never narrower than without it;
- ``scale``: the split-conformal factor by which the forecast's spread around its median must
  be stretched (or shrunk) so that the central ``coverage`` interval covers that share of the
  training runs after the corrections (finite-sample corrected quantile of the scores).

:func:`apply_discrepancy` applies them to forecast draws, interpolated in the time ahead of the
run's last measurement (none at 0 h). Only the population estimate is shared with the run
being scored, so the errors are nearly out-of-sample; the scale absorbs what remains.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.stats import theilslopes

from .._errors import TwinInputError
from ..assays import ASSAY_SCALES
from ..calibrate import DiscrepancySettings
from ..data import RunData
from ._io import measured_at, measured_at_harvest, truncate

log = logging.getLogger(__name__)

# The scale each forecast variable is corrected on: (transform, floor).
DISCREPANCY_SCALES: dict[str, tuple[str, float]] = {
    "viable_cells": ASSAY_SCALES["viable_cells"],
    "viability": ASSAY_SCALES["viability"],
    "car_pos_fraction": ASSAY_SCALES["car_pos_fraction"],
    "vcn_per_cell": ASSAY_SCALES["vcn_per_cell"],
    "viable_car_pos_cells": ("log", 1.0e4),
}
DISCREPANCY_COLUMNS = (
    "variable",
    "horizon_h",
    "bias",
    "scale",
    "n_runs",
    "gain",
    "mean_abs_error",
    "mean_abs_error_uncorrected",
    "age_slope_per_h",
    "age_reference_h",
)
_Z90 = 1.6448536269514722
# Cap on the anchoring gain: an error that grows with the anchor residual beyond twice it is
# more likely noise in 36 runs than a trend to extrapolate.
MAX_GAIN = 2.0
# Fewest scored runs a horizon's bias and scale are learnt from.
MIN_SCORED_RUNS = 5


def to_scale(variable: str, value):
    """A forecast variable on its correction scale (log or logit; NumPy)."""
    transform, floor = DISCREPANCY_SCALES[variable]
    value = np.asarray(value, float)
    if transform == "log":
        return np.log(np.maximum(value, 0.0) + floor)
    clipped = np.clip(value, floor, 1.0 - floor)
    return np.log(clipped) - np.log1p(-clipped)


def from_scale(variable: str, z):
    transform, floor = DISCREPANCY_SCALES[variable]
    z = np.asarray(z, float)
    if transform == "log":
        return np.maximum(np.exp(z) - floor, 0.0)
    return 1.0 / (1.0 + np.exp(-z))


def discrepancy_scores(
    observed: np.ndarray, median: np.ndarray, lower: np.ndarray, upper: np.ndarray, variable: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(error, spread below, spread above)`` on the variable's scale, per forecast."""
    z_obs, z_med = to_scale(variable, observed), to_scale(variable, median)
    below = np.maximum(z_med - to_scale(variable, lower), 1e-9)
    above = np.maximum(to_scale(variable, upper) - z_med, 1e-9)
    return z_obs - z_med, below, above


def conformal_fit(
    error: np.ndarray, below: np.ndarray, above: np.ndarray, coverage: float, max_scale: float
) -> tuple[float, float]:
    """``(bias, scale)``: the median error, and the smallest stretch of each forecast's
    central interval (re-centred by the bias) that covers ``coverage`` of the errors with the
    split-conformal finite-sample correction."""
    bias = float(np.median(error))
    centred = error - bias
    scores = np.where(centred >= 0, centred / above, -centred / below)
    n = scores.size
    level = min(1.0, math.ceil((n + 1) * coverage) / n)
    scale = float(np.quantile(scores, level, method="higher"))
    return bias, float(np.clip(scale, 1.0 / max_scale, max_scale))


def anchoring_gain(errors: list[np.ndarray], anchors: list[np.ndarray]) -> float:
    """The share of the anchor residual that carries on to the error: one robust (Theil-Sen)
    slope of error on anchor over all horizons, each horizon centred on its own medians (the
    bias is per horizon), clipped to ``[0, MAX_GAIN]``. Pooled because 36 runs give each
    horizon's slope alone too noisy an estimate (on the mismatch bench it jumped from 0 to 1
    between neighbouring horizons); 0 if the anchors do not vary."""
    error = np.concatenate([e - np.median(e) for e in errors])
    anchor = np.concatenate([a - np.median(a) for a in anchors])
    if error.size < 3 or np.ptp(anchor) == 0:
        return 0.0
    return float(np.clip(theilslopes(error, anchor).slope, 0.0, MAX_GAIN))


def age_trend(
    errors: list[np.ndarray], ages_h: list[np.ndarray], run_ids: list[np.ndarray]
) -> tuple[float, float]:
    """``(slope per hour, reference age in hours)``: the robust (Theil-Sen) slope of error on
    the culture age at the forecast target over all horizons, each horizon centred on its own
    medians, and the median age. The slope is 0 unless its 95 % interval excludes 0, with the
    interval from each run's errors averaged over the horizons: a run scored at four horizons
    is one piece of evidence, not four (pooled, the interval would be about half as wide), and
    a trend that chance explains in 36 runs is not one to extrapolate."""
    ages = np.concatenate(ages_h)
    reference = float(np.median(ages)) if ages.size else 0.0
    error = np.concatenate([e - np.median(e) for e in errors])
    age = np.concatenate([a - np.median(a) for a in ages_h])
    if error.size < 3 or np.ptp(age) == 0:
        return 0.0, reference
    per_run = (
        pd.DataFrame({"run": np.concatenate(run_ids), "error": error, "age": ages})
        .groupby("run")
        .mean()
    )
    if len(per_run) < 3 or np.ptp(per_run["age"]) == 0:
        return 0.0, reference
    evidence = theilslopes(per_run["error"], per_run["age"], alpha=0.95)
    significant = evidence.low_slope > 0 or evidence.high_slope < 0
    return (float(theilslopes(error, age).slope) if significant else 0.0), reference


def anchor_residuals(
    data: RunData, run_ids: list[str], now_h: np.ndarray, median_now: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """``{variable: [runs]}``: each run's reading at its latest measurement time ``now_h``
    minus its forecast median there (``median_now[variable]``, ``[runs]``), on the variable's
    correction scale; 0 where the variable was not read then (``viable_car_pos_cells``: the
    viable count times %CAR+, both read then)."""
    anchors = {v: np.zeros(len(run_ids)) for v in DISCREPANCY_SCALES}
    readings = measured_at(data, pd.Series(now_h, index=run_ids)).reindex(run_ids)
    for variable, values in anchors.items():
        if variable not in readings:
            continue
        reading = readings[variable].to_numpy(float)
        median = np.asarray(median_now[variable], float)
        read = np.isfinite(reading) & np.isfinite(median)
        values[read] = to_scale(variable, reading[read]) - to_scale(variable, median[read])
    return anchors


class HorizonScores(NamedTuple):
    """The runs one cut horizon scored (:func:`backtest_scores`), one entry per run."""

    error: np.ndarray  # observed minus forecast median at harvest (correction scale)
    below: np.ndarray  # forecast spread below the median
    above: np.ndarray  # forecast spread above the median
    anchor: np.ndarray  # anchor residual at the latest reading
    ahead_h: np.ndarray  # time from the latest reading to harvest
    harvest_h: np.ndarray  # culture time at harvest
    run_id: np.ndarray


# Per variable, per cut horizon.
Scores = dict[str, dict[float, HorizonScores]]


def backtest_scores(
    calibration,
    data: RunData,
    settings: DiscrepancySettings = DiscrepancySettings(),
    forecast_settings=None,
) -> Scores:
    """Forecast each finished run of ``data`` from its data cut ``settings.horizons_h`` before
    its harvest, as a new donor, with ``calibration`` (module docstring), and score each
    forecast at harvest against what was measured there; empty if no run is finished."""
    from ._forecast import ForecastSettings, forecast  # the forecast uses this module

    forecast_settings = ForecastSettings() if forecast_settings is None else forecast_settings

    wide = measured_at_harvest(data)
    observed = wide[[v for v in DISCREPANCY_SCALES if v in wide.columns]]
    runs = [r for r in data.run_ids if r in observed.index]
    if not runs or not settings.horizons_h:
        return {}
    pieces = []
    for h in settings.horizons_h:
        cut = truncate(data, runs, h)
        tag = {r: f"{r}@{h:g}" for r in runs}
        # Each copy is its own new donor: nothing of its donor's calibrated effects is used.
        pieces.append(
            RunData(
                runs=cut.runs.assign(
                    run_id=cut.runs["run_id"].map(tag), donor_id=cut.runs["run_id"].map(tag)
                ),
                events=cut.events.assign(run_id=cut.events["run_id"].map(tag)),
                measurements=cut.measurements.assign(run_id=cut.measurements["run_id"].map(tag)),
            )
        )
    combined = RunData(
        runs=pd.concat([p.runs for p in pieces], ignore_index=True),
        events=pd.concat([p.events for p in pieces], ignore_index=True),
        measurements=pd.concat([p.measurements for p in pieces], ignore_index=True),
    )
    result = forecast(
        dataclasses.replace(calibration, discrepancy=pd.DataFrame(columns=DISCREPANCY_COLUMNS)),
        combined,
        settings=dataclasses.replace(
            forecast_settings,
            n_draws=settings.n_draws,
            use_known_donors=False,
            advice_extension_h=0.0,
            time_step_h=1.0e4,
            apply_discrepancy=False,
        ),
    )
    table = result.table.set_index(["run_id", "variable"])
    by_run = result.runs.set_index("run_id")
    harvest_h = by_run["planned_harvest_time_h"]
    ahead = harvest_h - by_run["now_h"]
    scores: Scores = {}
    for variable in observed.columns:
        for h in settings.horizons_h:
            keep = [
                (r, f"{r}@{h:g}")
                for r in runs
                if np.isfinite(observed.at[r, variable]) and (f"{r}@{h:g}", variable) in table.index
            ]
            if not keep:
                continue
            values = table.loc[[(t, variable) for _, t in keep]]
            error, below, above = discrepancy_scores(
                observed.loc[[r for r, _ in keep], variable].to_numpy(),
                values["median"].to_numpy(),
                values["lower_90"].to_numpy(),
                values["upper_90"].to_numpy(),
                variable,
            )
            tagged = [t for _, t in keep]
            anchor = by_run.loc[tagged, f"anchor_{variable}"].to_numpy(float)
            ok = np.isfinite(error) & np.isfinite(below) & np.isfinite(above) & np.isfinite(anchor)
            scores.setdefault(variable, {})[h] = HorizonScores(
                error[ok],
                below[ok],
                above[ok],
                anchor[ok],
                ahead[tagged].to_numpy(float)[ok],
                harvest_h[tagged].to_numpy(float)[ok],
                np.array([r for r, _ in keep], dtype=object)[ok],
            )
    return scores


def pool_scores(parts: list[Scores]) -> Scores:
    """The scores of several backtests (e.g. donor folds) as one."""
    pooled: Scores = {}
    for part in parts:
        for variable, by_horizon in part.items():
            for h, arrays in by_horizon.items():
                before = pooled.setdefault(variable, {}).get(h)
                pooled[variable][h] = (
                    arrays
                    if before is None
                    else HorizonScores(
                        *(np.concatenate(pair) for pair in zip(before, arrays, strict=True))
                    )
                )
    return pooled


def discrepancy_table(
    scores: Scores, settings: DiscrepancySettings = DiscrepancySettings()
) -> pd.DataFrame:
    """The discrepancy table (:data:`DISCREPANCY_COLUMNS`) from backtest ``scores``: per
    variable one anchoring gain (and, with ``settings.age_trend``, one age slope), then per
    horizon (with at least 5 scored runs) the bias and conformal scale of the errors left
    after them (empty, with a warning, if none has)."""
    rows = []
    for variable, by_horizon in scores.items():
        scored = {h: v for h, v in by_horizon.items() if v.error.size >= MIN_SCORED_RUNS}
        if not scored:
            continue
        gain = (
            anchoring_gain([v.error for v in scored.values()], [v.anchor for v in scored.values()])
            if settings.anchor
            else 0.0
        )
        anchored_by_h = {h: v.error - gain * v.anchor for h, v in scored.items()}
        slope, reference_h = (
            age_trend(
                list(anchored_by_h.values()),
                [v.harvest_h for v in scored.values()],
                [v.run_id for v in scored.values()],
            )
            if settings.age_trend
            else (0.0, 0.0)
        )
        for h, v in scored.items():
            anchored = anchored_by_h[h] - slope * (v.harvest_h - reference_h)
            bias, scale = conformal_fit(
                anchored, v.below, v.above, settings.coverage, settings.max_scale
            )
            if slope:
                # Never narrower than without the trend: 36 runs can show one by chance (the
                # mismatch bench's cytokine plant, seed 2), and coverage must not rest on it.
                untrended = conformal_fit(
                    anchored_by_h[h], v.below, v.above, settings.coverage, settings.max_scale
                )
                scale = max(scale, untrended[1])
            rows.append(
                {
                    "variable": variable,
                    "horizon_h": float(v.ahead_h.mean()),
                    "bias": bias,
                    "scale": scale,
                    "n_runs": int(v.error.size),
                    "gain": gain,
                    "mean_abs_error": float(np.mean(np.abs(anchored - bias))),
                    "mean_abs_error_uncorrected": float(np.mean(np.abs(v.error))),
                    "age_slope_per_h": slope,
                    "age_reference_h": reference_h,
                }
            )
    if not rows:
        runs = max((v.error.size for h in scores.values() for v in h.values()), default=0)
        log.warning(
            "model discrepancy not learnt: %d finished runs with harvest data (at least %d needed)",
            runs,
            MIN_SCORED_RUNS,
        )
    return pd.DataFrame(rows, columns=list(DISCREPANCY_COLUMNS))


def learn_discrepancy(
    calibration,
    data: RunData,
    settings: DiscrepancySettings = DiscrepancySettings(),
    forecast_settings=None,
) -> pd.DataFrame:
    """The discrepancy table (:data:`DISCREPANCY_COLUMNS`) of ``calibration`` on its own
    training ``data`` (module docstring), forecasting as ``forecast_settings`` (a
    :class:`~._forecast.ForecastSettings`; default: its defaults) will; empty if there are
    too few finished runs."""
    return discrepancy_table(
        backtest_scores(calibration, data, settings, forecast_settings), settings
    )


def check_folds(data: RunData, settings: DiscrepancySettings) -> None:
    """**Raises:** :class:`~twin.TwinInputError` if ``data`` have fewer donors than
    ``settings.folds`` (checked before any fit, so a calibration fails at once)."""
    donors = len(set(data.runs["donor_id"]))
    if settings.folds > donors:
        raise TwinInputError(
            f"fit.discrepancy.folds={settings.folds}: the data have only {donors} donors"
        )


def learn_discrepancy_cross_fitted(
    data: RunData,
    fit: Callable[[RunData], object],
    settings: DiscrepancySettings,
    forecast_settings=None,
    seed: int = 0,
) -> pd.DataFrame:
    """The discrepancy table from donor folds (``settings.folds``): each fold's runs are
    scored (:func:`backtest_scores`) with ``fit`` (a calibration of the other folds' runs),
    and the scores of all folds are pooled into one table (:func:`discrepancy_table`).

    **Raises:** :class:`~twin.TwinInputError` if there are fewer donors than folds.
    """
    from ._backtest import donor_folds  # the backtest builds on this module's forecast

    check_folds(data, settings)
    donors = sorted(set(data.runs["donor_id"]))
    parts = []
    for k, held_out in enumerate(donor_folds(donors, settings.folds, seed)):
        held = [r for r in data.run_ids if data.donor_of(r) in held_out]
        log.info(
            "discrepancy fold %d of %d: calibrating without donors %s",
            k + 1,
            settings.folds,
            ", ".join(held_out),
        )
        fold_calibration = fit(data.select([r for r in data.run_ids if r not in held]))
        parts.append(
            backtest_scores(fold_calibration, data.select(held), settings, forecast_settings)
        )
    return discrepancy_table(pool_scores(parts), settings)


def correction_at(
    discrepancy: pd.DataFrame, variable: str, ahead_h: np.ndarray, time_h: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(bias, scale, gain)`` for ``variable`` at ``ahead_h`` hours after the last
    measurement: none at 0 h (and before: the past is left as fitted), linear in the horizon
    up to and between the learnt ones, constant beyond the last (a table without ``gain``,
    written before anchoring, has none). With ``time_h`` (the culture time of each point,
    shaped like ``ahead_h``) the bias includes the age trend, ramped in like the gain (a table
    without ``age_slope_per_h`` has none)."""
    rows = discrepancy[discrepancy["variable"] == variable].sort_values("horizon_h")
    ahead_h = np.maximum(np.asarray(ahead_h, float), 0.0)
    if rows.empty:
        return np.zeros_like(ahead_h), np.ones_like(ahead_h), np.zeros_like(ahead_h)
    nodes = np.r_[0.0, rows["horizon_h"].to_numpy(float)]

    def ramp(column: str) -> np.ndarray:
        values = rows[column].to_numpy(float) if column in rows else np.zeros(len(rows))
        return np.interp(ahead_h, nodes, np.r_[0.0, values])

    bias = ramp("bias")
    log_scale = np.interp(ahead_h, nodes, np.r_[0.0, np.log(rows["scale"].to_numpy(float))])
    if time_h is not None and "age_slope_per_h" in rows:
        reference_h = float(rows["age_reference_h"].iloc[0])
        bias = bias + ramp("age_slope_per_h") * (np.asarray(time_h, float) - reference_h)
    return bias, np.exp(log_scale), ramp("gain")


def apply_discrepancy(
    discrepancy: pd.DataFrame,
    draws: dict[str, np.ndarray],
    ahead_h: np.ndarray,
    anchors: dict[str, np.ndarray] | None = None,
    time_h: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Forecast draws ``[runs, draws, times]`` corrected: each time point's draws are moved by
    the learnt bias plus the gain times the run's anchor residual (``anchors[variable]``,
    ``[runs]``, from :func:`anchor_residuals`; none: no anchoring) and stretched about their
    median by the learnt scale, at the time ahead of the run's last measurement ``ahead_h``
    (``[runs, times]``) and, for the age trend, the culture time ``time_h`` (same shape;
    none: no age trend)."""
    corrected = dict(draws)
    for variable, values in draws.items():
        if variable not in DISCREPANCY_SCALES:
            continue
        bias, scale, gain = correction_at(discrepancy, variable, ahead_h, time_h)
        if anchors is not None:
            bias = bias + gain * anchors[variable][:, None]
        z = to_scale(variable, values)
        median = np.median(z, axis=1, keepdims=True)
        z = median + bias[:, None, :] + scale[:, None, :] * (z - median)
        corrected[variable] = from_scale(variable, z)
    return corrected
