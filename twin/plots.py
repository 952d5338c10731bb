"""Figures used by the experiments and notebooks (matplotlib, no display needed)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.layout_engine import ConstrainedLayoutEngine

EVENT_COLOURS = {
    "activate": "tab:green",
    "transduce": "tab:purple",
    "exchange": "tab:blue",
    "feed": "tab:cyan",
    "sample": "0.8",
    "harvest": "tab:red",
}

# (panel, variable, label, axis) for the batch figure; axis "right" uses a twin y-axis.
_PANELS = (
    (0, "viable_cells", "viable cells", "left"),
    (0, "viable_car_pos_cells", "viable CAR+ cells", "left"),
    (1, "viability", "viability", "left"),
    (1, "memory_like_fraction", "memory-like fraction", "left"),
    (2, "glucose_mM", "glucose (mM)", "left"),
    (2, "lactate_mM", "lactate (mM)", "left"),
    (2, "il2_IU_per_mL", "IL-2 (IU/mL)", "right"),
    (3, "car_pos_fraction", "CAR+ fraction", "left"),
    (3, "vcn_per_cell", "VCN per cell", "right"),
    (3, "vcn_per_transduced_cell", "VCN per transduced cell", "right"),
)
_TITLES = ("Cells", "Viability and phenotype", "Metabolites and IL-2", "Transduction")
# Observables of the CAR transgene: not drawn before the first transduction (they are 0, or
# 0/0 for VCN per transduced cell, and on a log axis would draw a cliff that is not data).
TRANSGENE_VARIABLES = frozenset(
    {"viable_car_pos_cells", "car_pos_fraction", "vcn_per_cell", "vcn_per_transduced_cell"}
)


def plot_batch(
    dataset: xr.Dataset, measurements: pd.DataFrame | None = None, *, title: str | None = None
) -> plt.Figure:
    """Four panels of one batch (cells, viability, metabolites, %CAR+/VCN) with event markers.

    ``measurements`` (long format: ``time_h, variable, value``, as in measurements.csv) are
    overlaid as open circles on the matching curves. Transgene observables
    (:data:`TRANSGENE_VARIABLES`) start at the first transduction.
    """
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True, constrained_layout=True)
    axes = axes.ravel()
    right_axes = {}
    colours = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3)
    t = dataset["time_h"].values
    transduced = t > transduction_time_h(dataset)  # at it, no cell carries the transgene yet
    for panel, name, label, side in _PANELS:
        ax = axes[panel]
        if side == "right":
            if panel not in right_axes:
                right_axes[panel] = axes[panel].twinx()
            ax = right_axes[panel]
        colour = next(colours)
        values = dataset[name].values
        if name in TRANSGENE_VARIABLES:
            values = np.where(transduced, values, np.nan)
        ax.plot(t, values, color=colour, label=label)
        if measurements is not None:
            seen = measurements[measurements["variable"] == name]
            if len(seen):
                ax.plot(seen["time_h"], seen["value"], "o", color=colour, ms=4, mfc="none")
    axes[0].set_yscale("log")
    axes[0].set_ylim(bottom=0.01 * float(dataset["viable_cells"].max()))
    axes[0].set_ylabel("cells")
    axes[1].set_ylabel("fraction")
    axes[1].set_ylim(0, 1.02)
    axes[2].set_ylabel("mM")
    right_axes[2].set_ylabel("IU/mL")
    axes[3].set_ylabel("CAR+ fraction")
    right_axes[3].set_ylabel("copies per cell")
    for panel, ax in enumerate(axes):
        ax.set_title(_TITLES[panel])
        handles, labels = ax.get_legend_handles_labels()
        if panel in right_axes:
            h2, l2 = right_axes[panel].get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        ax.legend(handles, labels, fontsize=8, loc="best")
        _mark_events(ax, dataset)
    for ax in axes[2:]:
        ax.set_xlabel("time since seed (h)")
    measured = measurements is not None and len(measurements) > 0
    event_legend(fig, measured=measured)
    if title:
        fig.suptitle(title)
    return fig


def transduction_time_h(dataset: xr.Dataset) -> float:
    """Time of the batch's first transduction (h since seed); +inf if it has none."""
    if "event_time_h" not in dataset:
        return -np.inf  # no events recorded: draw everything
    times = dataset["event_time_h"].values[dataset["operation"].values == "transduce"]
    return float(times.min()) if times.size else np.inf


def _mark_events(ax: plt.Axes, dataset: xr.Dataset) -> None:
    if "event_time_h" not in dataset:
        return
    for time_h, operation in zip(
        dataset["event_time_h"].values, dataset["operation"].values, strict=True
    ):
        colour = EVENT_COLOURS.get(str(operation))
        if colour is not None:
            ax.axvline(float(time_h), color=colour, lw=0.8, ls="--", alpha=0.7, zorder=0)


def event_legend(fig: plt.Figure, measured: bool = False) -> None:
    """A figure-level legend of the event marker colours (and of the measurement markers,
    open circles in the colour of their curve, when ``measured``)."""
    handles = [plt.Line2D([], [], color=c, ls="--", label=op) for op, c in EVENT_COLOURS.items()]
    if measured:
        handles.append(
            plt.Line2D([], [], marker="o", ls="none", color="0.3", mfc="none", label="measured")
        )
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8)


def with_note(fig: plt.Figure, note: str) -> plt.Figure:
    """``fig`` headed by ``note`` (e.g. a multirun job's overrides), if any."""
    if note:
        fig.suptitle(note, fontsize=9)
        if not isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine):
            fig.tight_layout(rect=(0.0, 0.0, 1.0, 0.95))  # (constrained layout makes room)
    return fig


def save_figure(fig: plt.Figure, path, dpi: int = 110) -> None:
    """Save atomically and close."""
    from ._atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=str(path).rsplit(".", 1)[-1])
    plt.close(fig)
