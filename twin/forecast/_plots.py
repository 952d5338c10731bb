"""Forecast figures: fan charts per run and the backtest's predicted-vs-observed plot."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ._forecast import Forecast
from ._predictive import FORECAST_VARIABLES

_LABELS = {
    "viable_cells": ("viable cells", "log"),
    "viability": ("viability", "linear"),
    "car_pos_fraction": ("CAR+ fraction", "linear"),
    "vcn_per_cell": ("VCN per cell", "linear"),
    "viable_car_pos_cells": ("viable CAR+ cells", "log"),
}


def plot_fan_chart(
    forecast: Forecast,
    run_index: int,
    seen: pd.DataFrame | None = None,
    held_out: pd.DataFrame | None = None,
) -> plt.Figure:
    """One run's forecast: median, 50 % and 90 % bands of what would be measured, with the
    measurements used (filled) and any held-out ones (open), "now" and the planned harvest."""
    run = forecast.runs.iloc[run_index]
    t = forecast.time_h[run_index]
    fig, axes = plt.subplots(1, len(FORECAST_VARIABLES), figsize=(18, 3.6), constrained_layout=True)
    for ax, variable in zip(axes, FORECAST_VARIABLES, strict=True):
        q = forecast.quantiles[variable][run_index]
        ax.fill_between(t, q[:, 0], q[:, 4], color="tab:blue", alpha=0.2, lw=0, label="90 %")
        ax.fill_between(t, q[:, 1], q[:, 3], color="tab:blue", alpha=0.35, lw=0, label="50 %")
        ax.plot(t, q[:, 2], color="tab:blue", lw=1.5, label="median")
        for frame, style in ((seen, "ko"), (held_out, "ro")):
            points = _points(frame, run["run_id"], variable)
            if points is not None:
                fill = "k" if frame is seen else "none"
                ax.plot(points[0], points[1], style, ms=4, mfc=fill, label=None)
        ax.axvline(run["now_h"], color="0.3", ls=":", lw=1)
        ax.axvline(run["planned_harvest_time_h"], color="tab:red", ls="--", lw=1)
        ax.axvline(run["recommended_harvest_time_h"], color="tab:green", ls="-.", lw=1)
        label, scale = _LABELS[variable]
        ax.set_yscale(scale)
        ax.set_title(label)
        ax.set_xlabel("time since seed (h)")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(
        f"{run['run_id']} (donor {run['donor_id']}): now {run['now_h']:g} h, "
        f"planned harvest {run['planned_harvest_time_h']:g} h (red), "
        f"advised {run['recommended_harvest_time_h']:g} h (green), "
        f"P(conforming) {run['p_conforming_at_planned']:.2f}"
    )
    return fig


def _points(frame: pd.DataFrame | None, run_id: str, variable: str):
    if frame is None or frame.empty:
        return None
    rows = frame[frame["run_id"] == run_id]
    if variable == "viable_car_pos_cells":
        wide = rows.pivot_table(index="time_h", columns="variable", values="value")
        if not {"viable_cells", "car_pos_fraction"} <= set(wide.columns):
            return None
        product = (wide["viable_cells"] * wide["car_pos_fraction"]).dropna()
        return product.index.to_numpy(), product.to_numpy()
    rows = rows[rows["variable"] == variable]
    return (rows["time_h"].to_numpy(), rows["value"].to_numpy()) if len(rows) else None


def plot_backtest(results: pd.DataFrame) -> plt.Figure:
    """Predicted (median, 90 % interval) vs observed viable CAR+ cells at harvest."""
    fig, ax = plt.subplots(figsize=(5.5, 5), constrained_layout=True)
    observed = results["observed"].to_numpy()
    median = results["median"].to_numpy()
    errors = np.vstack([median - results["lower_90"], results["upper_90"] - median])
    covered = results["covered"].to_numpy(bool)
    for mask, colour, label in (
        (covered, "tab:blue", "inside 90 %"),
        (~covered, "tab:red", "outside"),
    ):
        ax.errorbar(
            observed[mask],
            median[mask],
            yerr=errors[:, mask],
            fmt="o",
            color=colour,
            ms=4,
            capsize=2,
            label=label,
        )
    low, high = min(observed.min(), median.min()) * 0.8, max(observed.max(), median.max()) * 1.2
    ax.plot([low, high], [low, high], "k--", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("observed viable CAR+ cells at harvest")
    ax.set_ylabel("forecast (median, 90 % interval)")
    mre = results["relative_error"].mean()
    ax.set_title(f"MRE {100 * mre:.1f} %, coverage {100 * covered.mean():.0f} % (n={len(results)})")
    ax.legend(fontsize=8)
    return fig
