"""Figures of a calibration: fits per run, residuals by assay, parameter intervals, profiles."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd

from ..assays import ASSAY_SCALES, MEASURED_VARIABLES
from ..data import MEASUREMENT_UNITS
from ._misfit import residual_trends, standardized_residuals
from ._result import Calibration


def plot_fits(
    calibration: Calibration, variable: str, bands: pd.DataFrame | None = None
) -> plt.Figure:
    """Observed (points) and fitted (line) ``variable`` per run, one small panel per run,
    titled ``run (donor)``. With ``bands`` (:func:`~twin.calibrate.fit_bands`) the line is the
    fitted trajectory on a dense grid, with the 90 % band of what would be measured; without,
    the fit at the observation times only. Readings at or below the assay's detection limit
    (censored) are drawn as down-triangles at the limit; log-scale assays use a symmetric-log
    axis, linear below the limit, so that readings of 0 stay on the plot."""
    rows = calibration.observations[calibration.observations["variable"] == variable]
    runs = list(calibration.run_ids)
    n_cols = math.ceil(math.sqrt(len(runs)))
    n_rows = math.ceil(len(runs) / n_cols)
    # Fixed margins in inches rather than a layout engine: the panels are alike, and constrained
    # layout measured every tick label of every panel (half the time of a 36-panel figure).
    panel_w, panel_h, gap_w, gap_h = 2.0, 1.5, 0.2, 0.35
    left, right, bottom, top = 0.75, 1.9, 0.55, 0.2
    width = left + n_cols * panel_w + (n_cols - 1) * gap_w + right
    height = bottom + n_rows * panel_h + (n_rows - 1) * gap_h + top
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(width, height),
        sharex=True,
        sharey=True,
        squeeze=False,
        gridspec_kw={
            "left": left / width,
            "right": 1 - right / width,
            "bottom": bottom / height,
            "top": 1 - top / height,
            "wspace": gap_w / panel_w,
            "hspace": gap_h / panel_h,
        },
    )
    log_scale = ASSAY_SCALES[variable][0] == "log"
    limit = calibration.likelihood.censoring_limit(variable) if log_scale else 0.0
    linear_below = max(limit, ASSAY_SCALES[variable][1])
    is_censored = rows["censored"].astype(bool) if "censored" in rows else rows["observed"] < 0
    for ax, run_id, donor in zip(axes.ravel(), runs, calibration.run_donor_ids, strict=False):
        mine = rows["run_id"] == run_id
        seen = rows[mine].sort_values("time_h")
        below = rows[mine & is_censored]
        above = rows[mine & ~is_censored]
        if bands is None:
            ax.plot(
                seen["time_h"], seen["predicted"], "-", color="tab:blue", lw=1.2, label="fitted"
            )
        else:
            curve = bands[(bands["run_id"] == run_id) & (bands["variable"] == variable)]
            ax.fill_between(
                curve["time_h"],
                curve["lower_90"],
                curve["upper_90"],
                color="tab:blue",
                alpha=0.2,
                lw=0,
                label="90 % of measurements",
            )
            ax.plot(curve["time_h"], curve["fitted"], "-", color="tab:blue", lw=1.2, label="fitted")
        ax.plot(
            above["time_h"], above["observed"], "o", color="k", ms=2.5, mfc="none", label="measured"
        )
        if len(below):
            ax.plot(
                below["time_h"],
                np.full(len(below), max(limit, ASSAY_SCALES[variable][1])),
                "v",
                color="tab:red",
                ms=3,
                label="below detection limit",
            )
        ax.set_title(f"{run_id} ({donor})", fontsize=7)
        ax.tick_params(labelsize=6)
        if log_scale:
            ax.set_yscale("symlog", linthresh=linear_below, linscale=0.3)
    for ax in axes.ravel()[len(runs) :]:
        ax.set_visible(False)
    unit = MEASUREMENT_UNITS[variable]
    fig.supxlabel("time since seed (h)", fontsize=8, y=0.15 / height, va="bottom")
    fig.supylabel(
        f"{variable} ({unit})" if unit != "1" else variable, fontsize=8, x=0.1 / width, ha="left"
    )
    handles = {}
    for ax in axes.ravel()[: len(runs)]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    labels = list(handles)
    fig.legend(
        [handles[k] for k in labels],
        labels,
        loc="upper right",
        bbox_to_anchor=(1 - 0.05 / width, 1 - top / height),
        fontsize=7,
    )
    return fig


def plot_residuals(calibration: Calibration) -> plt.Figure:
    """The likelihood's scaled residuals by assay (left), and the misses (observed - fitted,
    in noise SDs) against time with their mean over runs per day (right;
    :func:`~._misfit.residual_trends`)."""
    observations = calibration.observations
    present = [v for v in MEASURED_VARIABLES if (observations["variable"] == v).any()]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    groups = [observations.loc[observations["variable"] == v, "scaled_residual"] for v in present]
    left.boxplot(groups, tick_labels=present, showfliers=True)
    left.axhline(0.0, color="0.5", lw=0.8)
    for level in (-2.0, 2.0):
        left.axhline(level, color="0.7", lw=0.8, ls="--")
    left.set_ylabel("scaled residual (noise SDs)")
    left.tick_params(axis="x", labelrotation=30, labelsize=8)
    rms = [float(np.sqrt(np.mean(g**2))) for g in groups]
    left.set_title("by assay (RMS: " + ", ".join(f"{r:.2f}" for r in rms) + ")", fontsize=9)
    trends = residual_trends(observations)
    for v in present:
        chosen = observations["variable"] == v
        (dots,) = right.plot(
            observations.loc[chosen, "time_h"],
            standardized_residuals(observations.loc[chosen]),
            ".",
            ms=3,
            alpha=0.4,
            label=v,
        )
        # The mean over runs per day: a line away from 0 is a misfit every run shares.
        mean = trends.loc[trends["variable"] == v]
        colour = dots.get_color()
        right.plot(mean["time_h"], mean["mean_scaled_residual"], "-", color=colour, lw=1.5)
        flagged = mean.loc[mean["systematic"]]
        right.plot(flagged["time_h"], flagged["mean_scaled_residual"], "o", color=colour, ms=6)
    right.axhline(0.0, color="0.5", lw=0.8)
    right.set_xlabel("time since seed (h)")
    right.set_title(
        "against time (lines: mean over runs per day; circles: systematic misfit)", fontsize=9
    )
    right.legend(fontsize=7, markerscale=2)
    return fig


def plot_parameter_intervals(calibration: Calibration) -> plt.Figure:
    """Prior (grey) and posterior (blue) 95 % intervals of each fitted parameter in natural
    units on a log axis; parameters the data do not identify are marked."""
    summary = calibration.summary()
    fig, axes = plt.subplots(
        len(summary), 1, figsize=(7, 0.65 * len(summary) + 1), constrained_layout=True
    )
    for ax, row in zip(np.atleast_1d(axes), summary.itertuples(index=False), strict=True):
        ax.plot([row.prior_lower_95, row.prior_upper_95], [1, 1], color="0.6", lw=5)
        ax.plot([row.prior], [1], "|", color="0.3", ms=12)
        ax.plot([row.lower_95, row.upper_95], [0, 0], color="tab:blue", lw=5)
        ax.plot([row.estimate], [0], "o", color="navy", ms=4)
        ax.set_xscale("log")
        low, high = ax.get_xlim()
        ticks = np.geomspace(low, high, 6)[1:-1]
        ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_ylim(-0.8, 1.8)
        ax.set_yticks([])
        flag = "" if row.identified else "  (prior-dominated)"
        ax.set_title(f"{row.parameter} [{row.unit}]{flag}", fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
    fig.suptitle("95 % intervals: prior (grey, top) and posterior (blue, bottom)", fontsize=9)
    return fig


def plot_profiles(calibration: Calibration) -> plt.Figure:
    """Profile objective ``2 (objective - best)`` of each profiled parameter, with the 95 %
    chi-square threshold and the Laplace approximation's quadratic for comparison."""
    profiles = calibration.profiles
    names = list(dict.fromkeys(profiles["parameter"]))
    fig, axes = plt.subplots(
        1, len(names), figsize=(3.5 * len(names), 3.2), squeeze=False, constrained_layout=True
    )
    sd = np.sqrt(np.diag(calibration.covariance))
    for ax, name in zip(axes.ravel(), names, strict=True):
        group = profiles[profiles["parameter"] == name].sort_values("value_unconstrained")
        k = calibration.fitted.index(name)
        u = group["value_unconstrained"].to_numpy()
        deviance = 2.0 * (group["objective"].to_numpy() - calibration.objective)
        ax.plot(group["value"], deviance, "o-", ms=3, label="profile")
        ax.plot(group["value"], ((u - calibration.estimate[k]) / sd[k]) ** 2, "--", label="Laplace")
        ax.axhline(3.841458820694124, color="0.5", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_title(name, fontsize=8)
        ax.set_ylabel("2 x objective increase", fontsize=8)
        ax.legend(fontsize=7)
    return fig
