"""Forecast figures: fan charts per run and the backtest's predicted-vs-observed plot."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from ._forecast import Forecast
from ._predictive import FORECAST_VARIABLES

# variable -> (panel title, y-axis label with unit, scale)
_LABELS = {
    "viable_cells": ("viable cells", "viable cells (cells)", "log"),
    "viability": ("viability", "viability (fraction)", "linear"),
    "car_pos_fraction": ("CAR+ fraction", "CAR+ fraction (fraction of viable)", "linear"),
    "vcn_per_cell": ("VCN per cell", "vector copies per cell", "linear"),
    "viable_car_pos_cells": ("viable CAR+ cells", "viable CAR+ cells (cells)", "log"),
}
# Transgene observables: not drawn before the run's transduction (no CAR+ cells exist).
_TRANSGENE = frozenset({"car_pos_fraction", "vcn_per_cell", "viable_car_pos_cells"})


def plot_fan_chart(
    forecast: Forecast,
    run_index: int,
    seen: pd.DataFrame | None = None,
    held_out: pd.DataFrame | None = None,
) -> plt.Figure:
    """One run's forecast: median, 50 % and 90 % bands of what would be measured, with the
    measurements used (filled) and any held-out ones (open), "now", the planned harvest and
    the advised one. Transgene observables start at the transduction; a finished run's chart
    ends at its recorded harvest."""
    run = forecast.runs.iloc[run_index]
    t = forecast.time_h[run_index]
    until = run.get("advice_until_h", t[-1])
    shown = t <= until
    # Strictly after: at the transduction itself no cell carries the transgene yet.
    transduced = t > run.get("transduction_time_h", -np.inf)  # NaN (none): nothing drawn
    fig, axes = plt.subplots(1, len(FORECAST_VARIABLES), figsize=(18, 4.2), constrained_layout=True)
    for ax, variable in zip(axes, FORECAST_VARIABLES, strict=True):
        keep = shown & transduced if variable in _TRANSGENE else shown
        q = np.where(keep[:, None], forecast.quantiles[variable][run_index], np.nan)
        ax.fill_between(t, q[:, 0], q[:, 4], color="tab:blue", alpha=0.2, lw=0)
        ax.fill_between(t, q[:, 1], q[:, 3], color="tab:blue", alpha=0.35, lw=0)
        ax.plot(t, q[:, 2], color="tab:blue", lw=1.5)
        for frame, fill, colour in ((seen, "k", "k"), (held_out, "none", "tab:red")):
            points = _points(frame, run["run_id"], variable)
            if points is not None:
                ax.plot(points[0], points[1], "o", color=colour, ms=4, mfc=fill)
        ax.axvline(run["now_h"], color="0.3", ls=":", lw=1)
        ax.axvline(run["planned_harvest_time_h"], color="tab:red", ls="--", lw=1)
        ax.axvline(run["recommended_harvest_time_h"], color="tab:green", ls="-.", lw=1)
        title, ylabel, scale = _LABELS[variable]
        ax.set_yscale(scale)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("time since seed (h)")
        ax.set_xlim(0.0, 1.03 * float(t[shown][-1]))  # room for the lines at the end
    fig.legend(
        handles=_legend_handles(held_out is not None and not held_out.empty),
        loc="outside lower center",
        ncol=8,
        fontsize=8,
    )
    harvest = "recorded harvest" if run.get("finished", False) else "planned harvest"
    fig.suptitle(
        f"{run['run_id']} (donor {run['donor_id']}): now {run['now_h']:g} h, "
        f"{harvest} {run['planned_harvest_time_h']:g} h, "
        f"advised {run['recommended_harvest_time_h']:g} h; "
        f"P(conforming) at {harvest} {run['p_conforming_at_planned']:.2f}"
    )
    return fig


def _legend_handles(held_out: bool) -> list:
    line = plt.Line2D
    handles = [
        Patch(color="tab:blue", alpha=0.2, lw=0, label="90 % interval (what would be measured)"),
        Patch(color="tab:blue", alpha=0.45, lw=0, label="50 % interval"),
        line([], [], color="tab:blue", lw=1.5, label="median"),
        line([], [], marker="o", ls="none", color="k", ms=4, label="measured (used)"),
    ]
    if held_out:
        handles.append(
            line([], [], marker="o", ls="none", color="tab:red", mfc="none", ms=4, label="held out")
        )
    return handles + [
        line([], [], color="0.3", ls=":", lw=1, label="now (last measurement)"),
        line([], [], color="tab:red", ls="--", lw=1, label="planned / recorded harvest"),
        line([], [], color="tab:green", ls="-.", lw=1, label="advised harvest"),
    ]


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
    ax.set_xlabel("observed viable CAR+ cells at harvest (cells)")
    ax.set_ylabel("forecast, median and 90 % interval (cells)")
    mre = results["relative_error"].mean()
    ax.set_title(f"MRE {100 * mre:.1f} %, coverage {100 * covered.mean():.0f} % (n={len(results)})")
    ax.legend(fontsize=8)
    return fig
