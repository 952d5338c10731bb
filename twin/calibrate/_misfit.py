"""Systematic misfit in time: where a fit's residuals share a sign across runs.

A well-specified model leaves each reading's standardized residual (observed minus fitted, in noise
SDs) centred on 0 and independent of culture time. When a rate law has the wrong form, every
run misses the same way at the same age. On the mismatch bench's ``signal`` plant, averaged
over the 36 training runs with each donor's own effects, the fitted viable count was 8 % high
at 24 h, 9 % low at 120 h and 15 % high at 240 h, the fitted viability 0.28 logit high at 48 h
and 0.25 low at 216 h. Averaging the residuals over the runs, per assay and day, shows it:
the mean of ``n`` independent standard residuals has SD ``1/sqrt(n)``, so a mean beyond
``Z_SYSTEMATIC/sqrt(n)`` is not noise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Bin width (h): daily samples fall one to a bin.
TIME_BIN_H = 24.0
# |mean| x sqrt(n) beyond this flags a bin: about 0.2 false flags in 70 bins of a good fit.
Z_SYSTEMATIC = 3.0
# Fewest readings a bin is judged on.
MIN_READINGS = 5
RESIDUAL_TREND_COLUMNS = (
    "variable",
    "time_h",
    "readings",
    "mean_scaled_residual",
    "z",
    "systematic",
)


def standardized_residuals(observations: pd.DataFrame) -> pd.Series:
    """Each reading's miss (observed minus fitted on the assay scale, in noise SDs): the
    ``standardized_residual`` column of a calibration's table. A table written before that
    column existed has only ``scaled_residual``, the same thing unless the fit used
    Student-t residuals (which shrink large misses)."""
    if "standardized_residual" in observations:
        return observations["standardized_residual"]
    return observations["scaled_residual"]


def residual_trends(observations: pd.DataFrame, time_bin_h: float = TIME_BIN_H) -> pd.DataFrame:
    """Per assay and time bin (centres at multiples of ``time_bin_h``): how many uncensored
    readings, their mean standardized residual (:func:`standardized_residuals`; the column
    keeps its first name, ``mean_scaled_residual``), ``z`` = mean x sqrt(readings), and
    ``systematic`` (``|z| > Z_SYSTEMATIC`` with at least ``MIN_READINGS`` readings).
    ``observations`` is a calibration's table (``variable``, ``time_h``, the residuals,
    ``censored``)."""
    # A table without ``censored`` (written before censoring) has no censored readings.
    censored = observations.get("censored", pd.Series(False, index=observations.index))
    uncensored = observations.loc[~censored.astype(bool)]
    binned = uncensored.assign(
        time_h=np.round(uncensored["time_h"].to_numpy(float) / time_bin_h) * time_bin_h,
        residual=standardized_residuals(uncensored),
    )
    grouped = binned.groupby(["variable", "time_h"], sort=True)["residual"]
    table = grouped.agg(readings="size", mean_scaled_residual="mean").reset_index()
    table["z"] = table["mean_scaled_residual"] * np.sqrt(table["readings"])
    table["systematic"] = (table["z"].abs() > Z_SYSTEMATIC) & (table["readings"] >= MIN_READINGS)
    return table.loc[:, list(RESIDUAL_TREND_COLUMNS)]


def describe_misfit(trends: pd.DataFrame, most: int = 4) -> str | None:
    """One line naming the largest systematic misfits (``None`` if there is none)."""
    flagged = trends.loc[trends["systematic"]]
    if flagged.empty:
        return None
    worst = flagged.reindex(flagged["z"].abs().sort_values(ascending=False).index).head(most)
    parts = [
        f"{row.variable} {row.mean_scaled_residual:+.2f} SD at {row.time_h:g} h "
        f"({row.readings} readings)"
        for row in worst.itertuples(index=False)
    ]
    more = len(flagged) - len(worst)
    return (
        f"systematic misfit in {len(flagged)} assay-day(s) (residual_trends.csv): "
        + "; ".join(parts)
        + (f"; and {more} more" if more > 0 else "")
        + ". The runs miss the same way on average there, beyond their noise: a rate law's "
        "form, or a parameter held fixed, may be wrong (fit.select, fit.fitted; "
        "docs/modelling.md)"
    )
