"""Systematic misfit in time (twin.calibrate.residual_trends): the daily mean of the runs'
standardized residuals flags a shared miss and leaves noise alone."""

from __future__ import annotations

import numpy as np
import pandas as pd

from twin.assays import student_t_residual
from twin.calibrate import describe_misfit, residual_trends
from twin.calibrate._misfit import MIN_READINGS, RESIDUAL_TREND_COLUMNS, Z_SYSTEMATIC


def observations(rng, runs=36, days=10, shift=None, jitter_h=0.0):
    """A calibration's observation table of standard-normal residuals; ``shift`` maps
    ``(variable, day)`` to a mean added to every run's residual there."""
    rows = []
    for variable in ("viable_cells", "viability", "glucose_mM"):
        for day in range(1, days + 1):
            offset = (shift or {}).get((variable, day), 0.0)
            times = 24.0 * day + rng.uniform(-jitter_h, jitter_h, runs)
            for run, time_h in enumerate(times):
                rows.append(
                    {
                        "run_id": f"R{run:03d}",
                        "time_h": time_h,
                        "variable": variable,
                        "scaled_residual": offset + rng.standard_normal(),
                        "censored": False,
                    }
                )
    return pd.DataFrame(rows)


def test_noise_alone_is_flagged_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    flagged = bins = 0
    for _ in range(100):
        trends = residual_trends(observations(rng))
        flagged += int(trends["systematic"].sum())
        bins += len(trends)
    # |z| > 3 for a standard normal: 0.27 %; 3000 bins give about 8 flags.
    assert flagged / bins < 0.006, flagged


def test_a_miss_every_run_shares_is_flagged_where_it_is():
    rng = np.random.default_rng(1)
    table = observations(rng, shift={("viability", 2): -0.9, ("viable_cells", 9): 0.8})
    trends = residual_trends(table)
    flagged = trends.loc[trends["systematic"], ["variable", "time_h"]]
    assert set(map(tuple, flagged.to_numpy())) == {("viability", 48.0), ("viable_cells", 216.0)}
    row = trends.set_index(["variable", "time_h"]).loc[("viability", 48.0)]
    assert row["readings"] == 36
    assert row["z"] == row["mean_scaled_residual"] * 6.0
    assert row["mean_scaled_residual"] < -Z_SYSTEMATIC / 6.0
    line = describe_misfit(trends)
    assert line.startswith("systematic misfit in 2 assay-day(s)")
    assert "viability -" in line and "at 48 h (36 readings)" in line


def test_readings_bin_by_day_censored_ones_left_out_and_few_never_flagged():
    rng = np.random.default_rng(2)
    table = observations(rng, runs=MIN_READINGS - 1, shift={("glucose_mM", 3): 5.0}, jitter_h=6)
    censored = table.index[(table["variable"] == "glucose_mM")][:2]
    table.loc[censored, "censored"] = True
    trends = residual_trends(table)
    assert set(trends["time_h"]) == {24.0 * d for d in range(1, 11)}  # jittered +-6 h
    glucose = trends.set_index(["variable", "time_h"]).loc[("glucose_mM", 24.0)]
    assert glucose["readings"] == MIN_READINGS - 1 - 2
    # A 5-SD miss, but on fewer readings than the minimum: not judged.
    assert not trends["systematic"].any()
    assert describe_misfit(trends) is None


def test_an_empty_or_older_table_gives_an_empty_trend():
    empty = pd.DataFrame(columns=["run_id", "time_h", "variable", "scaled_residual"])
    trends = residual_trends(empty)
    assert trends.empty and list(trends.columns) == list(RESIDUAL_TREND_COLUMNS)
    assert describe_misfit(trends) is None
    older = observations(np.random.default_rng(3)).drop(columns="censored")
    assert residual_trends(older)["readings"].sum() == len(older)


def test_the_trend_averages_the_plain_miss_not_the_student_t_residual():
    """Under Student-t residuals the likelihood's residual shrinks large misses; the trend is
    taken of the standardized miss, so a shared 2-SD miss reads as 2 SDs, not less."""
    rng = np.random.default_rng(4)
    table = observations(rng, shift={("viability", 5): 2.0})
    table["standardized_residual"] = table["scaled_residual"]
    table["scaled_residual"] = np.asarray(
        student_t_residual(table["scaled_residual"].to_numpy(), 3.0)
    )
    day5 = residual_trends(table).set_index(["variable", "time_h"]).loc[("viability", 120.0)]
    expected = table.query("variable == 'viability' and time_h == 120.0")["standardized_residual"]
    assert day5["mean_scaled_residual"] == expected.mean()
    shrunk = residual_trends(table.drop(columns="standardized_residual"))  # an older table
    assert shrunk.set_index(["variable", "time_h"]).loc[("viability", 120.0), "z"] < day5["z"]
