"""Model discrepancy: split-conformal bias and scale, and their application to forecast draws."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import theilslopes

from twin.calibrate import DiscrepancySettings
from twin.forecast._discrepancy import (
    DISCREPANCY_COLUMNS,
    DISCREPANCY_SCALES,
    MAX_GAIN,
    HorizonScores,
    age_trend,
    anchoring_gain,
    apply_discrepancy,
    conformal_fit,
    correction_at,
    discrepancy_table,
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


def test_anchoring_gain_recovers_how_much_of_the_latest_miss_persists():
    """Errors at two horizons that carry 0.8 of the miss at the latest reading, each with its
    own bias, plus noise and an outlier: the pooled robust slope finds 0.8, and the conformal
    interval fitted after it is much narrower than without it and covers as asked."""
    rng = np.random.default_rng(3)
    n = 40
    anchors = [rng.normal(0.0, 0.3, n) for _ in range(2)]
    errors = [
        b + 0.8 * a + rng.normal(0.0, 0.05, n) for b, a in zip((0.05, -0.2), anchors, strict=True)
    ]
    errors[0][0] += 2.0  # one failing batch
    gain = anchoring_gain(errors, anchors)
    assert gain == pytest.approx(0.8, abs=0.05)
    spread = np.full(n, 0.05)
    for bias_true, error, anchor in zip((0.05, -0.2), errors, anchors, strict=True):
        left = error - gain * anchor
        bias, scale = conformal_fit(left, spread, spread, 0.9, 20.0)
        assert bias == pytest.approx(bias_true, abs=0.03)
        assert np.mean(np.abs(left - bias) <= scale * spread) >= 0.9
        assert scale < 3.0
        assert conformal_fit(error, spread, spread, 0.9, 20.0)[1] > 4.0  # unanchored


def test_anchoring_gain_is_clipped_to_its_range():
    anchor = [np.linspace(-0.3, 0.3, 20)]
    assert anchoring_gain([-1.0 * anchor[0]], anchor) == 0.0
    assert anchoring_gain([5.0 * anchor[0]], anchor) == MAX_GAIN
    assert anchoring_gain([anchor[0]], [np.zeros(20)]) == 0.0  # no anchors (none read): none


def table(rows, gain=0.0, age_slope_per_h=0.0, age_reference_h=0.0):
    extra = (gain, 0.0, 0.0, age_slope_per_h, age_reference_h)
    return pd.DataFrame(
        [dict(zip(DISCREPANCY_COLUMNS, r + extra, strict=True)) for r in rows],
        columns=list(DISCREPANCY_COLUMNS),
    )


def test_correction_is_zero_now_and_interpolated_ahead():
    discrepancy = table(
        [("viable_cells", 48.0, 0.2, 2.0, 30), ("viable_cells", 96.0, 0.4, 4.0, 30)]
    )
    discrepancy.loc[:, "gain"] = [0.5, 1.0]
    bias, scale, gain = correction_at(
        discrepancy, "viable_cells", np.array([-5.0, 0.0, 24.0, 72.0, 200.0])
    )
    np.testing.assert_allclose(bias, [0.0, 0.0, 0.1, 0.3, 0.4])
    np.testing.assert_allclose(scale, [1.0, 1.0, np.sqrt(2.0), np.sqrt(8.0), 4.0])
    np.testing.assert_allclose(gain, [0.0, 0.0, 0.25, 0.75, 1.0])
    bias, scale, gain = correction_at(discrepancy, "viability", np.array([50.0]))
    assert bias[0] == 0.0 and scale[0] == 1.0 and gain[0] == 0.0  # nothing learnt: unchanged
    # A table written before anchoring (no gain column) anchors nothing.
    _, _, gain = correction_at(discrepancy.drop(columns="gain"), "viable_cells", np.array([72.0]))
    assert gain[0] == 0.0


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


def test_applied_draws_carry_the_gain_times_each_runs_anchor():
    rng = np.random.default_rng(4)
    draws = {"viable_cells": np.exp(rng.normal(np.log(1e9), 0.1, (2, 101, 2)))}
    discrepancy = table([("viable_cells", 60.0, 0.1, 1.0, 30)], gain=0.5)
    anchors = {v: np.array([0.4, -0.2]) for v in DISCREPANCY_SCALES}
    ahead = np.array([[30.0, 60.0], [30.0, 60.0]])

    def shift(out):
        z_in = to_scale("viable_cells", draws["viable_cells"])
        return np.median(to_scale("viable_cells", out), axis=1) - np.median(z_in, axis=1)

    out = apply_discrepancy(discrepancy, draws, ahead, anchors)["viable_cells"]
    # bias + gain x anchor at 60 h (the learnt horizon), half of both at 30 h
    np.testing.assert_allclose(shift(out), [[0.15, 0.3], [0.0, 0.0]], atol=1e-9)
    unanchored = apply_discrepancy(discrepancy, draws, ahead)["viable_cells"]
    np.testing.assert_allclose(shift(unanchored), [[0.05, 0.1], [0.05, 0.1]], atol=1e-9)


def _trend_scores(slope_per_h, rng, n=36):
    """Scores at two horizons whose errors fall by ``slope_per_h`` per hour of harvest age
    (days 7-10), each horizon with its own bias, plus noise."""
    scores = {}
    harvest = rng.choice([168.0, 192.0, 216.0, 240.0], n)
    for h, bias in ((48.0, 0.1), (72.0, -0.05)):
        error = bias + slope_per_h * (harvest - 204.0) + rng.normal(0.0, 0.05, n)
        spread = np.full(n, 0.1)
        runs = np.array([f"R{i}" for i in range(n)], dtype=object)
        scores[h] = HorizonScores(error, spread, spread, np.zeros(n), np.full(n, h), harvest, runs)
    return {"viable_car_pos_cells": scores}


def test_age_trend_recovers_a_decline_that_is_too_gentle():
    """A model that over-predicts late harvests: the pooled slope is found, the per-horizon
    bias is left without it, and no trend is kept where chance explains it."""
    rng = np.random.default_rng(5)
    scores = _trend_scores(-0.004, rng)
    by_h = scores["viable_car_pos_cells"]
    slope, reference = age_trend(
        [v.error for v in by_h.values()],
        [v.harvest_h for v in by_h.values()],
        [v.run_id for v in by_h.values()],
    )
    assert slope == pytest.approx(-0.004, abs=5e-4)
    assert reference in (192.0, 204.0, 216.0)
    learnt = discrepancy_table(scores, DiscrepancySettings(age_trend=True))
    assert learnt["age_slope_per_h"].to_numpy() == pytest.approx([slope, slope])
    np.testing.assert_allclose(
        learnt["bias"] + slope * (204.0 - reference), [0.1, -0.05], atol=0.03
    )
    without = discrepancy_table(scores, DiscrepancySettings(age_trend=False))
    assert (without["age_slope_per_h"] == 0).all()
    assert (without["mean_abs_error"] > 2 * learnt["mean_abs_error"]).all()
    # the interval is never narrower than without the trend (it may be chance)
    assert (learnt["scale"].to_numpy() >= without["scale"].to_numpy()).all()
    flat = _trend_scores(0.0, np.random.default_rng(6))["viable_car_pos_cells"]
    flat_trend = age_trend(
        [v.error for v in flat.values()],
        [v.harvest_h for v in flat.values()],
        [v.run_id for v in flat.values()],
    )
    assert flat_trend[0] == 0.0


def test_age_trend_counts_each_run_once_as_evidence():
    """Without any trend, a run's error repeated at four horizons (as a run's backtests at
    4 cuts are nearly the same miss) makes a pooled slope 'significant' about a fifth of the
    time; judged over runs, about as often as its 5 % level says."""
    pooled_hits, kept = 0, 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        harvest = rng.choice([168.0, 192.0, 216.0, 240.0], 36)
        miss = rng.normal(0.0, 0.1, 36)
        errors = [miss + rng.normal(0.0, 0.01, 36) for _ in range(4)]
        runs = [np.array([f"R{i}" for i in range(36)], dtype=object)] * 4
        fit = theilslopes(np.concatenate(errors), np.tile(harvest, 4), alpha=0.95)
        pooled_hits += fit.low_slope > 0 or fit.high_slope < 0
        kept += age_trend(errors, [harvest] * 4, runs)[0] != 0.0
    assert pooled_hits >= 9  # the overconfident test this avoids
    assert kept <= 6


def test_age_trend_moves_each_point_by_its_culture_time():
    discrepancy = table(
        [("viable_cells", 60.0, 0.1, 1.0, 30)], age_slope_per_h=-0.01, age_reference_h=200.0
    )
    ahead = np.array([0.0, 30.0, 60.0, 60.0])
    time_h = np.array([150.0, 180.0, 210.0, 240.0])
    bias, _, _ = correction_at(discrepancy, "viable_cells", ahead, time_h)
    np.testing.assert_allclose(bias, [0.0, 0.05 + 0.5 * 0.2, 0.1 - 0.1, 0.1 - 0.4])
    without_time, _, _ = correction_at(discrepancy, "viable_cells", ahead)
    np.testing.assert_allclose(without_time, [0.0, 0.05, 0.1, 0.1])
    older = discrepancy.drop(columns=["age_slope_per_h", "age_reference_h"])
    np.testing.assert_allclose(correction_at(older, "viable_cells", ahead, time_h)[0], without_time)


@pytest.mark.parametrize("variable", ["viable_cells", "car_pos_fraction", "viable_car_pos_cells"])
def test_scales_round_trip(variable):
    values = np.array([1e-3, 0.2, 0.7]) if variable == "car_pos_fraction" else np.array([1e6, 3e9])
    np.testing.assert_allclose(from_scale(variable, to_scale(variable, values)), values, rtol=1e-12)
