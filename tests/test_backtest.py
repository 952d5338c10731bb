"""Backtest plumbing: donor folds, fold calibrations that resume, per-run errors and metrics.

The full backtest (calibrate per fold, forecast) is exercised by `experiments/backtest.py` on
the example data; here the parts that decide *what* is compared are checked cheaply.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_forecast import known_calibration

from twin import TwinInputError
from twin.assays import AssayNoise
from twin.data import RunData, read_run_data
from twin.forecast._backtest import (
    backtest_metrics,
    cached_calibration,
    data_fingerprint,
    donor_folds,
    fold_rows,
    noise_floor,
)


def test_donor_folds_partition_the_donors_reproducibly():
    donors = [f"D{i}" for i in range(10)]
    folds = donor_folds(donors, 3, seed=1)
    assert sorted(d for fold in folds for d in fold) == donors
    assert [len(f) for f in folds] == [4, 3, 3]
    assert folds == donor_folds(donors, 3, seed=1)
    assert folds != donor_folds(donors, 3, seed=2)
    with pytest.raises(TwinInputError, match="folds=11"):
        donor_folds(donors, 11, seed=0)


EXAMPLE = read_run_data(Path(__file__).resolve().parents[1] / "twin" / "data" / "example")


def _data(value: float) -> RunData:
    """Run R001 of the example data with its first measurement set to ``value``."""
    one = EXAMPLE.select(["R001"])
    measurements = one.measurements.copy()
    measurements.iloc[0, measurements.columns.get_loc("value")] = value
    return RunData(one.runs, one.events, measurements)


def test_fold_calibration_is_reused_only_when_nothing_it_depends_on_changed(tmp_path):
    calls = []

    def fit(train):
        calls.append(train)
        return known_calibration()

    settings = {"fit": {"donor_sd": 0.3}, "seed": 0}
    first = cached_calibration(tmp_path, 0, _data(1e8), settings, fit)
    again = cached_calibration(tmp_path, 0, _data(1e8), settings, fit)
    assert len(calls) == 1
    np.testing.assert_array_equal(again.estimate, first.estimate)
    assert again.fitted == first.fitted

    cached_calibration(tmp_path, 0, _data(2e8), settings, fit)  # other training data
    cached_calibration(tmp_path, 0, _data(2e8), {**settings, "seed": 1}, fit)  # other settings
    assert len(calls) == 3
    cached_calibration(tmp_path, 1, _data(2e8), {**settings, "seed": 1}, fit)  # other fold
    assert len(calls) == 4

    (tmp_path / "fold_1.fingerprint").unlink()  # e.g. interrupted between the two writes
    cached_calibration(tmp_path, 1, _data(2e8), {**settings, "seed": 1}, fit)
    assert len(calls) == 5


def test_data_fingerprint_sees_every_table():
    base = _data(1e8)
    assert data_fingerprint(base) == data_fingerprint(_data(1e8))
    assert data_fingerprint(base) != data_fingerprint(_data(1.0000001e8))
    events = base.events.copy()
    events.iloc[-1, events.columns.get_loc("time_h")] += 1.0
    other_events = RunData(base.runs, events, base.measurements)
    assert data_fingerprint(base) != data_fingerprint(other_events)


def test_fold_rows_and_metrics():
    data = EXAMPLE.select(["R001", "R004"])  # donors D01 and D02
    table = pd.DataFrame(
        {
            "run_id": ["R001", "R001", "R004", "R004"],
            "time_h": [192.0, 192.0, 216.0, 216.0],
            "variable": ["viable_car_pos_cells", "car_pos_fraction"] * 2,
            "median": [1.1e9, 0.4, 4.0e8, 0.5],
            "lower_90": [0.9e9, 0.3, 3.0e8, 0.4],
            "upper_90": [1.3e9, 0.5, 4.5e8, 0.6],
        }
    )
    observed = pd.Series({"R001": 1.0e9, "R004": 5.0e8})
    results = pd.DataFrame(fold_rows(table, observed, data, 2, AssayNoise()))
    assert list(results["run_id"]) == ["R001", "R004"]
    np.testing.assert_allclose(results["relative_error"], [0.1, 0.2])
    np.testing.assert_allclose(results["log_error"], np.log([1.1, 0.8]))
    assert list(results["covered"]) == [True, False]
    assert list(results["donor_id"]) == ["D01", "D02"]
    metrics = backtest_metrics(results, horizon_h=60)
    assert metrics["mean_relative_error"] == pytest.approx(0.15)
    assert metrics["coverage_90"] == pytest.approx(0.5)
    assert metrics["mean_log_error"] == pytest.approx(np.log(0.88) / 2)


def test_noise_floor_matches_small_noise_theory_and_grows_with_noise():
    # For small log-normal noise of SD s alone, E|exp(-e) - 1| -> s sqrt(2 / pi).
    tiny_car = AssayNoise(viable_cells=0.05, car_pos_fraction=1e-6)
    assert noise_floor(0.4, tiny_car, n=200_000) == pytest.approx(
        0.05 * np.sqrt(2 / np.pi), rel=0.03
    )
    # %CAR+ noise on the logit scale moves a fraction near 1 less than one near 0.5
    car_only = AssayNoise(viable_cells=1e-6, car_pos_fraction=0.1)
    assert noise_floor(0.9, car_only) < noise_floor(0.5, car_only)
    assert noise_floor(0.4, AssayNoise()) > noise_floor(0.4, tiny_car)
