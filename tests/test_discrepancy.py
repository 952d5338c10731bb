"""Model discrepancy: split-conformal bias and scale, and their application to forecast draws."""

import numpy as np
import pandas as pd
import pytest

from twin.forecast._discrepancy import (
    DISCREPANCY_COLUMNS,
    apply_discrepancy,
    conformal_fit,
    correction_at,
    from_scale,
    to_scale,
)


def test_conformal_interval_covers_the_calibration_errors():
    rng = np.random.default_rng(0)
    n = 40
    error = 0.3 + rng.standard_t(3, n) * 0.2  # biased, heavy-tailed, model too confident
    below = np.full(n, 0.1)
    above = np.full(n, 0.15)
    bias, scale = conformal_fit(error, below, above, coverage=0.9, max_scale=20.0)
    assert bias == pytest.approx(np.median(error))
    covered = (error >= bias - scale * below) & (error <= bias + scale * above)
    assert covered.mean() >= 0.9  # finite-sample corrected: at least the nominal share
    # ... and the smallest such stretch: a slightly smaller one covers less.
    shrunk = (error >= bias - 0.999 * scale * below) & (error <= bias + 0.999 * scale * above)
    assert shrunk.mean() < covered.mean()


def test_conformal_coverage_holds_on_new_errors():
    """Exchangeable errors: the interval learnt on 50 covers ~90 % of fresh ones."""
    rng = np.random.default_rng(1)
    hits = []
    for _ in range(200):
        train, test = rng.normal(0.5, 0.4, 50), rng.normal(0.5, 0.4, 20)
        bias, scale = conformal_fit(train, np.full(50, 0.1), np.full(50, 0.1), 0.9, 20.0)
        hits.append(np.mean(np.abs(test - bias) <= scale * 0.1))
    assert 0.87 <= np.mean(hits) <= 0.95


def table(rows):
    return pd.DataFrame(
        [dict(zip(DISCREPANCY_COLUMNS, r + (0.0, 0.0), strict=True)) for r in rows],
        columns=list(DISCREPANCY_COLUMNS),
    )


def test_correction_is_zero_now_and_interpolated_ahead():
    discrepancy = table(
        [("viable_cells", 48.0, 0.2, 2.0, 30), ("viable_cells", 96.0, 0.4, 4.0, 30)]
    )
    bias, scale = correction_at(
        discrepancy, "viable_cells", np.array([-5.0, 0.0, 24.0, 72.0, 200.0])
    )
    np.testing.assert_allclose(bias, [0.0, 0.0, 0.1, 0.3, 0.4])
    np.testing.assert_allclose(scale, [1.0, 1.0, np.sqrt(2.0), np.sqrt(8.0), 4.0])
    bias, scale = correction_at(discrepancy, "viability", np.array([50.0]))
    assert bias[0] == 0.0 and scale[0] == 1.0  # nothing learnt: unchanged


def test_applied_draws_move_by_the_bias_and_stretch_about_the_median():
    rng = np.random.default_rng(2)
    draws = {"viable_cells": np.exp(rng.normal(np.log(1e9), 0.1, (2, 101, 3)))}
    discrepancy = table([("viable_cells", 60.0, np.log(1.25), 3.0, 30)])
    ahead = np.array([[-10.0, 0.0, 60.0], [0.0, 30.0, 90.0]])
    out = apply_discrepancy(discrepancy, draws, ahead)["viable_cells"]
    z_in, z_out = to_scale("viable_cells", draws["viable_cells"]), to_scale("viable_cells", out)
    shift = np.median(z_out, axis=1) - np.median(z_in, axis=1)
    np.testing.assert_allclose(
        shift, [[0, 0, np.log(1.25)], [0, np.log(1.25) / 2, np.log(1.25)]], atol=1e-12
    )
    spread = np.std(z_out, axis=1) / np.std(z_in, axis=1)
    np.testing.assert_allclose(spread, [[1, 1, 3], [1, np.sqrt(3.0), 3]], rtol=1e-9)  # log-linear


@pytest.mark.parametrize("variable", ["viable_cells", "car_pos_fraction", "viable_car_pos_cells"])
def test_scales_round_trip(variable):
    values = np.array([1e-3, 0.2, 0.7]) if variable == "car_pos_fraction" else np.array([1e6, 3e9])
    np.testing.assert_allclose(from_scale(variable, to_scale(variable, values)), values, rtol=1e-12)
