"""Backtest a forecast on finished runs: donor folds, fold calibrations that resume, errors.

Donors (not runs) are held out, so every forecast is for a donor its calibration never saw.
A fold's calibration is the expensive part, so it is written to ``<cache_dir>/fold_<k>.nc``
with a fingerprint of everything it depends on (training data, fit settings, model, noise,
seed); a rerun into the same folder reuses every fold whose fingerprint still matches. That
makes an interrupted backtest resumable and lets forecast settings be compared cheaply.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import TwinInputError
from ..assays import AssayNoise
from ..calibrate import (
    Calibration,
    CalibrationConfig,
    calibrate,
    load_calibration,
    write_calibration,
)
from ..data import RunData
from ..kinetics import KineticParameters, ModelStructure
from ..process import Downstream
from ..simulate import SolverSettings
from ._forecast import ForecastSettings, forecast
from ._io import observed_at_harvest, truncate

log = logging.getLogger(__name__)


def donor_folds(donor_ids: list[str], folds: int, seed: int) -> list[list[str]]:
    """Donors shuffled (seeded) and dealt into ``folds`` groups."""
    if not 2 <= folds <= len(donor_ids):
        raise TwinInputError(
            f"folds={folds}: must be between 2 and the number of donors ({len(donor_ids)})"
        )
    order = np.random.default_rng(seed).permutation(len(donor_ids))
    return [[donor_ids[i] for i in order[k::folds]] for k in range(folds)]


def data_fingerprint(data: RunData) -> str:
    """A digest of the three tables' contents (row order included)."""
    digest = hashlib.sha256()
    for frame in (data.runs, data.events, data.measurements):
        digest.update(frame.to_csv(index=False).encode())
    return digest.hexdigest()


def cached_calibration(
    cache_dir: Path,
    fold: int,
    train: RunData,
    settings: dict,
    fit: Callable[[RunData], Calibration],
) -> Calibration:
    """The calibration of ``train`` for ``fold``: read from ``cache_dir`` when a file with the
    same fingerprint (``train``'s contents + the JSON-able ``settings``) is there, else
    ``fit(train)``, written atomically with its fingerprint beside it."""
    fingerprint = hashlib.sha256(
        json.dumps({"data": data_fingerprint(train), **settings}, sort_keys=True).encode()
    ).hexdigest()
    path = cache_dir / f"fold_{fold}.nc"
    stamp = cache_dir / f"fold_{fold}.fingerprint"
    if path.is_file() and stamp.is_file() and stamp.read_text().strip() == fingerprint:
        try:
            calibration = load_calibration(path)
        except TwinInputError as error:  # e.g. a cache of another format version: refit
            log.warning("fold %d: not reusing %s (%s)", fold, path, error)
        else:
            log.info("fold %d: reusing %s", fold, path)
            return calibration
    calibration = fit(train)
    cache_dir.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)  # a file without its stamp is never trusted
    write_calibration(calibration, path)
    stamp.write_text(fingerprint + "\n")
    return calibration


def noise_floor(
    car_pos_fraction: float, noise: AssayNoise, n: int = 20_000, seed: int = 0
) -> float:
    """Expected relative error of an *exact* forecast of viable CAR+ cells against what is
    measured, from assay noise alone: viable cells log-normal, %CAR+ logit-normal (the
    noise model of :mod:`twin.assays`) around a true fraction ``car_pos_fraction``."""
    rng = np.random.default_rng(seed)
    cells = np.exp(noise.viable_cells * rng.standard_normal(n))
    logit = np.log(car_pos_fraction) - np.log1p(-car_pos_fraction)
    fraction = 1.0 / (1.0 + np.exp(-(logit + noise.car_pos_fraction * rng.standard_normal(n))))
    measured_over_true = cells * fraction / car_pos_fraction
    return float(np.mean(np.abs(1.0 / measured_over_true - 1.0)))


def fold_rows(
    forecast_table: pd.DataFrame,
    observed: pd.Series,
    data: RunData,
    fold: int,
    noise: AssayNoise,
) -> list[dict]:
    """Backtest rows of one fold: forecast of viable CAR+ cells at harvest vs ``observed``
    (indexed by run_id), with relative error, 90 % interval coverage, and the error an exact
    forecast would have from assay ``noise`` alone (:func:`noise_floor`)."""
    table = forecast_table[forecast_table["variable"] == "viable_car_pos_cells"]
    car = forecast_table[forecast_table["variable"] == "car_pos_fraction"]
    car = car.set_index("run_id")["median"]
    rows = []
    for row in table.itertuples(index=False):
        actual = float(observed[row.run_id])
        rows.append(
            {
                "run_id": row.run_id,
                "donor_id": data.donor_of(row.run_id),
                "fold": fold,
                "harvest_time_h": row.time_h,
                "observed": actual,
                "median": row.median,
                "lower_90": row.lower_90,
                "upper_90": row.upper_90,
                "relative_error": abs(row.median - actual) / actual,
                "log_error": float(np.log(row.median / actual)),
                "covered": row.lower_90 <= actual <= row.upper_90,
                "noise_floor": noise_floor(float(car[row.run_id]), noise),
                "failed_draws": int(getattr(row, "failed_draws", 0)),
            }
        )
    return rows


def backtest_metrics(results: pd.DataFrame, horizon_h: float) -> dict:
    """Mean and median relative error, bias (mean log error), 90 % coverage, and the mean
    relative error an exact forecast would have from assay noise alone.

    The errors are over the runs with a forecast; ``failed_runs`` counts those without one
    (every draw's solve failed: a NaN median, counted as not covered) and ``failed_draws`` the
    failed draws of all runs, 0 included, so a mean over fewer runs never passes unnoticed."""
    failed = ~np.isfinite(results["median"].to_numpy(float))
    draws = results["failed_draws"] if "failed_draws" in results else pd.Series(0, results.index)
    return {
        "horizon_h": float(horizon_h),
        "runs": len(results),
        "failed_runs": int(failed.sum()),
        "failed_draws": int(draws.sum()),
        "mean_relative_error": float(results["relative_error"].mean()),
        "median_relative_error": float(results["relative_error"].median()),
        "mean_log_error": float(results["log_error"].mean()),
        "coverage_90": float(results["covered"].mean()),
        "assay_noise_floor_mean_relative_error": float(results["noise_floor"].mean()),
    }


def calibrate_cached(
    train: RunData,
    *,
    fit: CalibrationConfig,
    model_parameters: KineticParameters,
    structure: ModelStructure,
    solver: SolverSettings,
    noise: AssayNoise,
    settings: ForecastSettings,
    seed: int,
    cache_dir: Path,
    fit_settings: dict,
    fold: int = 0,
) -> Calibration:
    """The calibration of ``train``, cached in ``cache_dir`` as fold ``fold`` (see
    :func:`cached_calibration`; ``fit_settings`` is what the fit depends on besides the
    data); its discrepancy is learnt forecasting as ``settings`` will."""

    def fit_train(data: RunData) -> Calibration:
        return calibrate(
            data,
            fit,
            model_parameters=model_parameters,
            structure=structure,
            solver=solver,
            noise=noise,
            seed=seed,
            progress=False,
            forecast_settings=settings,
        )

    return cached_calibration(cache_dir, fold, train, fit_settings, fit_train)


def calibrate_and_forecast(
    train: RunData,
    test: RunData,
    horizon_h: float,
    *,
    fit: CalibrationConfig,
    model_parameters: KineticParameters,
    structure: ModelStructure,
    solver: SolverSettings,
    noise: AssayNoise,
    downstream: Downstream,
    settings: ForecastSettings,
    seed: int,
    cache_dir: Path,
    fit_settings: dict,
    fold: int = 0,
    test_runs: list[str] | None = None,
) -> tuple[Calibration, list[dict]]:
    """Calibrate on ``train`` (:func:`calibrate_cached`), then forecast each finished run of
    ``test`` (or ``test_runs``) from its data up to ``horizon_h`` before harvest.

    **Returns:** the calibration and the backtest rows (:func:`fold_rows`).
    """
    observed = observed_at_harvest(test).set_index("run_id")["observed"]
    runs = [r for r in (test.run_ids if test_runs is None else test_runs) if r in observed]
    calibration = calibrate_cached(
        train,
        fit=fit,
        model_parameters=model_parameters,
        structure=structure,
        solver=solver,
        noise=noise,
        settings=settings,
        seed=seed,
        cache_dir=cache_dir,
        fit_settings=fit_settings,
        fold=fold,
    )
    result = forecast(calibration, truncate(test, runs, horizon_h), downstream, settings)
    return calibration, fold_rows(result.table, observed, test, fold, calibration.noise)
