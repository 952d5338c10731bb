"""Reading a finished sweep: response surfaces, the design space meeting specification, and
global sensitivity indices (SALib). Failed simulations never enter a mean as values: they are
left out of surfaces (counted), count as non-conforming in the design space, and stop a
sensitivity analysis with a clear error."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from .._errors import TwinInputError
from ._space import SweepSpace, salib_problem


def _space(ds: xr.Dataset) -> SweepSpace:
    box = ds.attrs["sweep"]["space"]
    return SweepSpace(
        tuple(box), tuple(v[0] for v in box.values()), tuple(v[1] for v in box.values())
    )


def point_outcome(ds: xr.Dataset, outcome: str) -> tuple[np.ndarray, np.ndarray]:
    """``(value, ok)`` per point: the outcome (a mean over donors when there are donors,
    failed donors left out) and whether it is a value (not a failed point)."""
    if outcome not in ds:
        names = [n for n in ds.data_vars if "point" in ds[n].dims]
        raise TwinInputError(f"outcome {outcome!r} is not in the sweep (choose from {names})")
    values = np.asarray(ds[outcome].values, float)
    if values.ndim == 1:
        ok = np.isfinite(values)
        if outcome not in ("p_conforming", "success_fraction") and values.dtype != bool:
            ok &= np.asarray(ds["success"].values)
        return values, ok
    success = np.asarray(ds["success"].values)
    with np.errstate(invalid="ignore"):
        mean = np.where(success, values, 0.0).sum(1) / success.sum(1)
    return mean, success.any(1)


def response_surface(
    ds: xr.Dataset,
    x: str,
    y: str,
    outcome: str,
    *,
    bins: int = 20,
    at: Mapping[str, float] | None = None,
) -> xr.DataArray:
    """Mean of ``outcome`` over bins of two swept names ``x`` and ``y``.

    Without ``at`` the mean runs over all other swept names (a marginal surface); with
    ``at`` (name -> value) only points within half a bin of those values count (a slice; on
    a grid, pick the grid's values). Bins without a successful point are NaN; the count of
    points per bin is the ``count`` coordinate.
    """
    space = _space(ds)
    for name in (x, y, *(at or {})):
        if name not in space.names:
            raise TwinInputError(f"{name!r} is not a swept name (swept: {list(space.names)})")
    value, ok = point_outcome(ds, outcome)
    keep = ok.copy()
    box = space.as_dict()
    for name, centre in (at or {}).items():
        width = (box[name][1] - box[name][0]) / bins
        keep &= np.abs(np.asarray(ds[name].values) - centre) <= width / 2 + 1e-12 * width
    edges, mean, count = _binned_mean(ds, x, y, value, keep, bins)
    centres = [(e[1:] + e[:-1]) / 2 for e in edges]
    return xr.DataArray(
        mean,
        dims=(x, y),
        coords={x: centres[0], y: centres[1], "count": ((x, y), count.astype(int))},
        name=outcome,
        attrs={"failed_points": int((~ok).sum()), "slice_at": dict(at or {})},
    )


def _binned_mean(
    ds: xr.Dataset, x: str, y: str, value: np.ndarray, keep: np.ndarray, bins: int
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """``(edges, mean, count)``: the mean of ``value`` over the points ``keep`` in
    ``bins x bins`` bins spanning the swept box of ``x`` and ``y`` (NaN where a bin is empty)."""
    box = _space(ds).as_dict()
    edges = [np.linspace(*box[n], bins + 1) for n in (x, y)]
    xs, ys = np.asarray(ds[x].values)[keep], np.asarray(ds[y].values)[keep]
    total, _, _ = np.histogram2d(xs, ys, bins=edges, weights=value[keep])
    count, _, _ = np.histogram2d(xs, ys, bins=edges)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
    return edges, mean, count


def design_space_region(ds: xr.Dataset, *, level: float = 0.9) -> tuple[xr.DataArray, dict]:
    """Which points meet specification: ``conforming`` (one simulation per point) or, with
    donors, ``p_conforming >= level`` (the robust design space). A failed simulation is a
    non-conforming batch. **Returns** ``(in_region along point, summary)``; the summary has
    the share of points inside and, per swept name, the range the region spans."""
    if not 0 < level <= 1:
        raise TwinInputError(f"sweep.robust_level={level!r}: must be in (0, 1]")
    if "donor" in ds.dims:
        inside = np.asarray(ds["p_conforming"].values) >= level
        rule = f"P(conforming over {ds.sizes['donor']} donors) >= {level:g}"
    else:
        inside = np.asarray(ds["conforming"].values, bool)
        rule = "conforming (one simulation per point)"
    space = _space(ds)
    summary: dict = {"rule": rule, "points": int(inside.size), "inside": int(inside.sum())}
    for name in space.names:
        values = np.asarray(ds[name].values)[inside]
        summary[name] = [float(values.min()), float(values.max())] if values.size else None
    region = xr.DataArray(inside, dims="point", coords={"point": ds["point"].values})
    return region, summary


def sensitivity_indices(ds: xr.Dataset, outcome: str) -> pd.DataFrame:
    """First-order and total Sobol indices (with 95 % confidence half-widths) of
    ``outcome`` per swept name, by SALib from a ``saltelli`` design.

    **Raises:** :class:`~twin.TwinInputError` for another design or failed points (the
    estimator needs every point of the Saltelli matrix).
    """
    from SALib.analyze import sobol as salib_sobol

    sweep = ds.attrs["sweep"]
    if sweep["design"] != "saltelli":
        raise TwinInputError(
            f"sensitivity indices need sweep.design=saltelli (this sweep: {sweep['design']!r})"
        )
    value, ok = point_outcome(ds, outcome)
    if not ok.all():
        raise TwinInputError(
            f"sensitivity of {outcome!r}: {int((~ok).sum())} point(s) failed to simulate; "
            "the Saltelli estimator needs every point (narrow sweep.space or raise "
            "model.solver.max_steps)"
        )
    result = salib_sobol.analyze(
        salib_problem(_space(ds)), value, calc_second_order=True, seed=sweep["seed"]
    )
    table = result.to_df()[:2]  # (total, first); second-order left out
    return pd.concat([table[1], table[0]], axis=1)


def plot_surface(surface: xr.DataArray, region: xr.DataArray | None = None) -> plt.Figure:
    """A response surface as a colour map (bins without a value left blank)."""
    x, y = surface.dims
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    mesh = ax.pcolormesh(surface[x], surface[y], surface.values.T, shading="nearest")
    fig.colorbar(mesh, ax=ax, label=surface.name)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    title = f"{surface.name}: mean over the other swept names"
    if surface.attrs.get("slice_at"):
        title = f"{surface.name} at " + ", ".join(
            f"{k}={v:g}" for k, v in surface.attrs["slice_at"].items()
        )
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_design_space(
    ds: xr.Dataset, region: xr.DataArray, x: str, y: str, rule: str, bins: int = 40
) -> plt.Figure:
    """The share of points meeting specification in bins of two swept names (over all
    points, so over the other swept names too): 1 where every point of a bin conforms.

    (Not a scatter of a subsample: every k-th point of a Sobol sequence covers only part of
    the box, and a 2-D scatter of a higher-dimensional design hides which points conform.)"""
    inside = np.asarray(region.values, float)
    edges, share, _ = _binned_mean(ds, x, y, inside, np.ones(inside.size, bool), bins)
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    mesh = ax.pcolormesh(edges[0], edges[1], share.T, cmap="Greens", vmin=0.0, vmax=1.0)
    fig.colorbar(mesh, ax=ax, label="share of points meeting specification")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    others = [n for n in _space(ds).names if n not in (x, y)]
    over = f"; over {', '.join(others)}" if others else ""
    ax.set_title(f"design space: {rule}{over}", fontsize=9)
    fig.tight_layout()
    return fig
