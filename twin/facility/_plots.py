"""Facility figures: a Shuttle's Gantt chart, utilization per module, throughput vs demand."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def plot_gantt(
    batches: pd.DataFrame,
    module_log: pd.DataFrame,
    *,
    shuttle: int,
    start_day: float,
    days: float,
    bays_per_shuttle: int,
    module_units: dict[str, tuple[int, int]],
) -> plt.Figure:
    """Bays (one row each: the batch's occupancy) and module units (their operations) of one
    Shuttle over ``[start_day, start_day + days)``. ``module_units``: name -> (first unit
    number of this Shuttle, unit count)."""
    t0, t1 = 24.0 * start_day, 24.0 * (start_day + days)
    rows = [f"bay {b}" for b in range(bays_per_shuttle)]
    for name, (first, count) in module_units.items():
        rows += [f"{name} {u - first}" for u in range(first, first + count)]
    fig, ax = plt.subplots(figsize=(12, 0.28 * len(rows) + 1.5))
    here = batches[batches["shuttle"] == shuttle]
    colours = plt.get_cmap("tab20")
    for _, b in here.iterrows():
        start = b["bay_start_h"]
        end = b["fill_finish_end_h"] if np.isfinite(b["fill_finish_end_h"]) else t1
        if end < t0 or start > t1:
            continue
        ax.broken_barh(
            [(start / 24.0, (end - start) / 24.0)],
            (int(b["bay"]) - 0.4, 0.8),
            color=colours(int(b["batch_id"]) % 20),
        )
    row = bays_per_shuttle
    for name, (first, count) in module_units.items():
        log = module_log[
            (module_log["module"] == name)
            & module_log["unit"].between(first, first + count - 1)
            & (module_log["end_h"] >= t0)
            & (module_log["start_h"] <= t1)
        ]
        for _, op in log.iterrows():
            colour = "black" if op["operation"] == "repair" else colours(int(op["batch_id"]) % 20)
            ax.broken_barh(
                [(op["start_h"] / 24.0, max(op["end_h"] - op["start_h"], 0.02) / 24.0)],
                (row + op["unit"] - first - 0.4, 0.8),
                color=colour,
            )
        row += count
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(start_day, start_day + days)
    ax.set_xlabel("day")
    ax.set_title(f"Shuttle {shuttle}: bays (batches, one colour each) and modules (repairs black)")
    fig.tight_layout()
    return fig


def plot_utilization(summary: dict) -> plt.Figure:
    """Busy and down fractions per module, with the bays'."""
    busy = {"bays": summary["bay_utilization"], **summary["module_utilization"]}
    down = {"bays": 0.0, **summary["module_downtime"]}
    names = list(busy)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(names, [busy[n] for n in names], label="busy")
    ax.bar(names, [down[n] for n in names], bottom=[busy[n] for n in names], label="repair")
    ax.set_ylabel("fraction of unit time")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"utilization (bottleneck: {summary['bottleneck']})")
    ax.legend()
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def plot_demand(sweep: pd.DataFrame, capacity_per_week: float | None = None) -> plt.Figure:
    """Throughput and turnaround against demand (from :func:`demand_sweep`)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(sweep["arrivals_per_week"], sweep["finished_per_week"], "o-", label="finished")
    a.plot(sweep["arrivals_per_week"], sweep["arrivals_per_week"], ":", c="grey", label="demand")
    if capacity_per_week:
        a.axhline(capacity_per_week, ls="--", c="k", lw=0.8, label="bay-cycle bound")
    a.set_xlabel("demand (batches/week)")
    a.set_ylabel("batches finished / week")
    a.legend()
    b.plot(sweep["arrivals_per_week"], sweep["median_turnaround_days"], "o-", label="median")
    b.plot(sweep["arrivals_per_week"], sweep["p95_turnaround_days"], "s--", label="95th pct")
    b.set_xlabel("demand (batches/week)")
    b.set_ylabel("arrival to release (days)")
    b.legend()
    fig.tight_layout()
    return fig
