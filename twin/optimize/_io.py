"""The files of an optimization: the recipe to run, its batch record, tables and figures.

Machine files (CSV, JSON) hold full precision and are tidy: one value per cell, booleans
written one way (``True``/``False``). The recipe a user runs (``optimized_recipe.yaml``) holds
the values the optimizer moved at a resolution a platform can be set to (:data:`RESOLUTION`),
and says so in its header; everything it did not move stays exactly as the start had it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import yaml

from .._atomic import atomic_path
from ..data import COLUMNS
from ..process import DESIGN_VALUES, EVENT_FIELDS, Recipe, recipe_values, recipe_with_values
from ._space import DecisionSpace

if TYPE_CHECKING:
    from ._optimize import Optimization

# Resolution of the user-facing recipe, per decision value (its unit).
RESOLUTION: dict[str, float] = {
    "seed_cells": 1e6,
    "seed_volume_ml": 1.0,
    "transduction_delay_h": 0.5,
    "moi": 0.1,
    "medium_il2_IU_per_mL": 1.0,
    "harvest_time_h": 0.5,
    "exchange_time_h": 0.5,
    "exchange_fraction": 0.01,
    "feed_time_h": 0.5,
    "feed_volume_ml": 1.0,
}


def recipe_events(recipe: Recipe, run_id: str = "optimized") -> pd.DataFrame:
    """A recipe's batch record: the events table of RUN_DATA.md (one run, ``run_id``), numbers
    at full precision, NaN where a column does not apply."""
    rows = [
        {
            "run_id": run_id,
            "time_h": float(event.time_h),
            "operation": event.operation,
            **{f: _number(event.value(f)) for f in EVENT_FIELDS},
        }
        for event in recipe.events()
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS["events"]))


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def rounded_recipe(start: Recipe, space: DecisionSpace, values: Mapping[str, object]) -> Recipe:
    """``start`` with the decision ``values``, each entry ``space`` moved rounded to
    :data:`RESOLUTION` and kept inside its box (a value rounded out of the box steps back one
    grid point); entries equal to the start's (unmoved) stay exactly as they are."""
    out = {k: np.array(v, float) for k, v in values.items()}
    for name, low, high in zip(space.names, space.low, space.high, strict=True):
        step = RESOLUTION[name]
        x = np.atleast_1d(out[name])
        if name == "transduction_delay_h":  # round the clock time of the transduction
            r = np.round((start.activation_time_h + x) / step) * step - start.activation_time_h
        else:
            r = np.round(x / step) * step
        r = np.where(r > high, r - step, r)
        r = np.where(r < low, r + step, r)
        # Drop the float noise of the grid (3.4000000000000004), keep unmoved entries exact.
        r = np.round(r, max(0, -math.floor(math.log10(step))))
        x0 = np.atleast_1d(np.asarray(recipe_values(start)[name], float))
        r = np.where(np.isclose(x, x0, rtol=1e-9, atol=0.0), x0, r)
        out[name] = r.reshape(np.shape(out[name]))
    return recipe_with_values(start, out)


def recipe_yaml(recipe: Recipe, header: list[str] = (), warnings: list[str] = ()) -> str:
    """A recipe as a Hydra recipe config (``defaults: [recipe_schema, _self_]``)."""
    body = yaml.safe_dump(dataclasses.asdict(recipe), sort_keys=False)
    text = "# Written by twin.optimize (experiments/optimize.py): the optimized recipe.\n"
    text += "".join(f"# {line}\n" for line in header)
    text += "".join(f"# WARNING: {line}\n" for line in warnings)
    return text + "defaults:\n  - recipe_schema\n  - _self_\n\n" + body


def _resolution_note(result: Optimization) -> list[str]:
    moved = [f"{name} to {RESOLUTION[name]:g} {_unit(name)}" for name in result.space.names]
    return [
        f"Start: {result.start_label}.",
        "Values the optimizer moved are rounded for use: " + ", ".join(moved) + ";",
        "everything else is as the start had it. optimized_events.csv and decisions.csv hold",
        "the optimum at full precision.",
    ]


def _unit(name: str) -> str:
    return {"h after activation": "h"}.get(DESIGN_VALUES[name], DESIGN_VALUES[name])


def _plot_convergence(result: Optimization):
    """Two panels, each on its own axis: the gradient search's smooth surrogate (what it
    descends) and the Sobol baseline's exact objective (pass/fail); the two are different
    quantities and are never drawn on one axis."""
    import matplotlib.pyplot as plt

    opt = result.settings
    per_evaluation = result.gradient.simulations // (opt.starts * opt.steps)
    sense = 1.0 if opt.objective == "cost_per_conforming_dose" else -1.0
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), sharey=False)
    for i, losses in enumerate(result.gradient.history):
        sims = per_evaluation * (np.arange(len(losses)) + 1 + i * len(losses))
        left.plot(sims, sense * losses, lw=1.2, label=f"start {i}")
    left.set_title("Gradient search: smooth surrogate")
    left.set_ylabel(f"smooth surrogate of {opt.objective}\n(training donors, each evaluation)")
    sobol = result.sobol.history[0]  # NaN: over the vector limit
    sims = (np.arange(len(sobol)) + 1) * (result.sobol.simulations / len(sobol))
    right.plot(sims, sense * np.fmin.accumulate(sobol), "k-", label="best feasible so far")
    right.set_title("Sobol baseline: exact objective")
    right.set_ylabel(f"exact {opt.objective}\n(training donors, pass/fail)")
    for ax in (left, right):
        ax.set_xlabel("simulated batches used")
        ax.legend(fontsize=8)
    fig.suptitle(
        "Search convergence at an equal simulation budget (the final comparison, on fresh "
        "donors and exact, is comparison.csv)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def _plot_pareto(frame: pd.DataFrame):
    """P(conforming) against cost: every evaluated point by how it was found, filled if no
    other point beats it (non-dominated, joined by a line), open if one does."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    styles = {"start": "s", "gradient": "^", "sobol": "v", "sweep": "o"}
    labels = {"sweep": "cost-weighted sweep"}
    colours = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    front_mask = frame["non_dominated"].to_numpy(bool)
    for kind, marker in styles.items():
        colour = next(colours)
        rows = (frame["kind"] == kind).to_numpy()
        label = labels.get(kind, kind)
        for mask, face in ((rows & front_mask, colour), (rows & ~front_mask, "none")):
            if mask.any():
                ax.scatter(
                    frame["cost_usd"][mask],
                    frame["p_conforming"][mask],
                    marker=marker,
                    facecolors=face,
                    edgecolors=colour,
                    label=label if face != "none" or not (rows & front_mask).any() else None,
                )
    front = frame[front_mask].sort_values("cost_usd")
    ax.plot(front["cost_usd"], front["p_conforming"], "k-", lw=0.8, label="non-dominated front")
    ax.scatter([], [], marker="o", facecolors="none", edgecolors="0.4", label="open: dominated")
    ax.set_xlabel("expected cost of goods per batch (USD)")
    ax.set_ylabel("P(conforming), fresh donors of the twin")
    ax.set_title("P(conforming) against cost")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _json_safe(value):
    """``value`` with non-finite floats as ``null`` (strict JSON) and NumPy scalars as Python."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_optimization(result: Optimization, out_dir: str | Path) -> dict[str, Path]:
    """Write the files of ``result`` into ``out_dir`` (each atomically):

    - ``optimized_recipe.yaml`` (and the same as ``recipe/optimized.yaml``, so
      ``python experiments/simulate.py --config-dir OUT recipe=optimized`` runs it): the recipe
      to run, moved values at :data:`RESOLUTION`;
    - ``optimized_events.csv``: the optimum's batch record (RUN_DATA.md events, one run,
      ``run_id`` = ``optimized``), full precision;
    - ``comparison.csv`` (fresh donors of the twin), ``<process>.csv`` per other process
      (e.g. ``holdout.csv``), ``decisions.csv``, ``pareto.csv``, ``search.json``,
      ``convergence.png``, ``pareto.png``.

    **Returns:** name -> path of each file written.
    """
    from ..plots import save_figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    rounded = rounded_recipe(result.start, result.space, result.values)
    text = recipe_yaml(rounded, _resolution_note(result), result.warnings)
    for path in (out / "optimized_recipe.yaml", out / "recipe" / "optimized.yaml"):
        with atomic_path(path) as tmp:
            tmp.write_text(text)
        written[str(path.relative_to(out))] = path
    tables = {
        "optimized_events": recipe_events(result.optimized, "optimized"),
        "comparison": result.comparison,
        **result.evaluations,
        "decisions": result.decisions,
        "pareto": result.pareto,
    }
    for name, frame in tables.items():
        path = out / f"{name}.csv"
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
        written[path.name] = path
    path = out / "search.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_json_safe(result.record), indent=2, allow_nan=False))
    written[path.name] = path
    for name, figure in (
        ("convergence.png", _plot_convergence(result)),
        ("pareto.png", _plot_pareto(result.pareto)),
    ):
        save_figure(figure, out / name)
        written[name] = out / name
    return written
