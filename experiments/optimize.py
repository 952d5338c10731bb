"""Robust recipe optimization: maximize P(batch conforms) over a donor population.

    python experiments/optimize.py                              # defaults: configs/optimize.yaml
    python experiments/optimize.py optimize.steps=60 optimize.n_donors=32

Gradient search (Adam through the twin, forward mode, multi-start) and a Sobol baseline with
the same simulation budget both search on the same training donors; the start recipe and both
results are then evaluated, exactly (pass/fail), on fresh donors. Writes into the run directory:

- ``optimized_recipe.yaml``: the gradient result as a Hydra recipe config (header
  ``defaults: [recipe_schema, _self_]``); the same file as ``recipe/optimized.yaml``, so
  ``python experiments/simulate.py --config-dir <run dir> recipe=optimized`` runs it as is,
  and it can be copied into ``configs/recipe/``.
- ``optimized_run/``: a run-data folder (RUN_DATA.md; ``runs.csv``, ``events.csv``,
  ``measurements.csv`` without rows) holding the recipe as run ``optimized``.
- ``comparison.csv`` (printed), ``decisions.csv`` (values, bounds and flags), ``pareto.csv``,
  ``convergence.png``, ``pareto.png``, ``search.json`` (budgets and timings),
  ``resolved_config.yaml`` and ``provenance.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import hydra
import jax
import matplotlib
import numpy as np
import pandas as pd
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import twin.config as twin_config
from twin import TwinInputError
from twin._atomic import atomic_path
from twin._cli import exit_on_input_error
from twin.data import RunData, write_run_data
from twin.forecast._io import calibration_from_path
from twin.optimize import (  # importing registers the `optimize` schema (optimize.yaml)
    OBJECTIVES,
    DonorPopulation,
    Prices,
    RobustProblem,
    bootstrap_interval,
    decision_space,
    evaluate,
    gradient_search,
    non_dominated,
    objective_score,
    pareto_sweep,
    population_from_calibration,
    sobol_search,
)
from twin.plots import save_figure
from twin.process import EVENT_FIELDS, recipe_with_values
from twin.provenance import write_provenance

matplotlib.use("Agg")
jax.config.update("jax_enable_x64", True)


def _population(cfg: DictConfig, params, structure):
    """The donor population and model structure: from ``calibration`` (a calibration.nc or its
    run directory) when given, else ``model.parameters`` with ``optimize.donor_sd``."""
    if cfg.calibration is None:
        return DonorPopulation(params, dict(cfg.optimize.donor_sd)), structure
    calibration = calibration_from_path(cfg.calibration)
    return population_from_calibration(calibration), calibration.structure


def _settings(cfg: DictConfig):
    opt = cfg.optimize
    if opt.objective not in OBJECTIVES:
        raise TwinInputError(
            f"optimize.objective={opt.objective!r}: choose from {list(OBJECTIVES)}"
        )
    for key in ("n_donors", "n_eval_donors", "starts", "steps", "pareto_steps", "n_bootstrap"):
        if not opt[key] >= 1:
            raise TwinInputError(f"optimize.{key}={opt[key]!r}: must be >= 1")
    for key in ("temperature", "learning_rate"):
        if not opt[key] > 0:
            raise TwinInputError(f"optimize.{key}={opt[key]!r}: must be > 0")
    for name, pair in opt.data_ranges.items():
        if name not in opt.decisions or len(pair) != 2 or not pair[0] <= pair[1]:
            raise TwinInputError(
                f"optimize.data_ranges.{name}={list(pair)!r}: expected [low, high] of a decision"
            )
    try:
        return Prices(**opt.prices)
    except ValueError as error:
        raise TwinInputError(f"optimize.{error}") from None


def _summary(name: str, out: dict, objective: str, rng, n_boot: int) -> dict:
    p_low, p_high = bootstrap_interval(out["conforming"], rng, n_boot=n_boot)
    y = out["product_viable_car_pos_cells"]
    y_low, y_high = bootstrap_interval(y, rng, n_boot=n_boot)
    return {
        "recipe": name,
        "p_conforming": out["conforming"].mean(),
        "p_conforming_90_low": p_low,
        "p_conforming_90_high": p_high,
        "viable_car_pos_cells": y.mean(),
        "viable_car_pos_cells_90_low": y_low,
        "viable_car_pos_cells_90_high": y_high,
        "conforming_doses": out["conforming_doses"].mean(),
        f"objective_{objective}": float(objective_score(out, objective, exact=True)),
        "cost_usd": out["cost"].mean(),
        "vector_TU": out["vector_TU"].mean(),
        "medium_mL": out["medium_mL"].mean(),
        "solver_success": out["success"].mean(),
    }


def _recipe_yaml(recipe) -> str:
    body = yaml.safe_dump(dataclasses.asdict(recipe), sort_keys=False)
    return (
        "# Written by experiments/optimize.py (twin.optimize): the optimized recipe.\n"
        "defaults:\n  - recipe_schema\n  - _self_\n\n" + body
    )


def _run_data(recipe, capacity_ml) -> RunData:
    rows = [
        {
            "run_id": "optimized",
            "time_h": event.time_h,
            "operation": event.operation,
            **{f: np.nan if event.value(f) is None else event.value(f) for f in EVENT_FIELDS},
        }
        for event in recipe.events(capacity_ml=capacity_ml)
    ]
    return RunData(
        runs=pd.DataFrame({"run_id": ["optimized"], "donor_id": ["virtual"]}),
        events=pd.DataFrame(rows),
        measurements=pd.DataFrame(columns=["run_id", "time_h", "variable", "value"]),
    )


def _decision_table(space, values, start_values, data_ranges) -> pd.DataFrame:
    edges = space.edges(values)
    rows = []
    for name, low, high in zip(space.names, space.low, space.high, strict=True):
        x = np.atleast_1d(np.asarray(values[name], float))
        covered = data_ranges.get(name)
        outside = covered is not None and bool(np.any((x < covered[0]) | (x > covered[1])))
        rows.append(
            {
                "decision": name,
                "start": " ".join(f"{v:.6g}" for v in np.atleast_1d(start_values[name])),
                "optimized": " ".join(f"{v:.6g}" for v in x),
                "low": low,
                "high": high,
                "at_edge": edges[name],
                "outside_data_range": outside,
            }
        )
    return pd.DataFrame(rows)


def _plot_convergence(gradient, sobol, per_evaluation, sense):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, losses in enumerate(gradient.history):
        sims = per_evaluation * (np.arange(len(losses)) + 1 + i * len(losses))
        ax.plot(sims, sense * losses, lw=1.2, label=f"gradient start {i} (smooth)")
    sobol_losses = sobol.history[0]
    sims = (np.arange(len(sobol_losses)) + 1) * (sobol.simulations / len(sobol_losses))
    ax.plot(sims, sense * np.minimum.accumulate(sobol_losses), "k--", label="Sobol best (exact)")
    ax.set_xlabel("simulations (batches) used")
    ax.set_ylabel("objective on training donors")
    ax.legend(fontsize=8)
    ax.set_title("Search convergence, equal simulation budget")
    return fig


def _plot_pareto(frame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for kind, style in (("pareto", "o"), ("default", "s"), ("gradient", "^"), ("sobol", "v")):
        rows = frame[frame["kind"] == kind]
        ax.scatter(rows["cost_usd"], rows["p_conforming"], marker=style, label=kind)
    front = frame[frame["non_dominated"]].sort_values("cost_usd")
    ax.plot(front["cost_usd"], front["p_conforming"], "k-", lw=0.8, label="non-dominated")
    ax.set_xlabel("expected cost of goods per batch (USD)")
    ax.set_ylabel("P(conforming), fresh donors")
    ax.legend(fontsize=8)
    return fig


def run(cfg: DictConfig, out_dir: Path) -> pd.DataFrame:
    """Optimize, write the outputs into ``out_dir`` and return the comparison table."""
    params, structure, solver = twin_config.model_from_config(cfg.model)
    recipe = twin_config.recipe_from_config(cfg.recipe)
    downstream = twin_config.downstream_from_config(cfg.downstream)
    population, structure = _population(cfg, params, structure)
    prices = _settings(cfg)
    opt = cfg.optimize
    bounds = {name: (b.low, b.high) for name, b in opt.decisions.items()}
    space = decision_space(recipe, bounds, trust_radius=opt.trust_radius)
    problem = RobustProblem(
        space,
        downstream,
        prices,
        objective=opt.objective,
        temperature=opt.temperature,
        structure=structure,
        solver=solver,
    )
    n = opt.n_donors
    donors = population.sample(jax.random.PRNGKey(opt.seed), n)
    n_chunks = math.ceil(opt.n_eval_donors / n)
    fresh = population.sample(jax.random.PRNGKey(opt.seed + 1), n_chunks * n)
    chunks = [jax.tree.map(lambda x, i=i: x[i * n : (i + 1) * n], fresh) for i in range(n_chunks)]

    z0 = space.start()
    began = time.perf_counter()
    problem.outcomes(z0, donors)
    compile_forward_s = time.perf_counter() - began
    began = time.perf_counter()
    problem.loss_and_gradient(z0, donors)
    compile_gradient_s = time.perf_counter() - began

    rng = np.random.default_rng(opt.seed)
    starts = np.concatenate([z0[None], space.from_unit_cube(rng.random((opt.starts - 1, len(z0))))])
    gradient = gradient_search(
        problem, donors, starts, steps=opt.steps, learning_rate=opt.learning_rate
    )
    sobol = sobol_search(problem, donors, gradient.simulations, seed=opt.seed)

    boot = np.random.default_rng(opt.seed + 1)
    results = {"default": z0, "gradient": gradient.z, "sobol": sobol.z}
    fresh_out = {name: evaluate(problem, z, chunks) for name, z in results.items()}
    comparison = pd.DataFrame(
        [_summary(k, v, opt.objective, boot, opt.n_bootstrap) for k, v in fresh_out.items()]
    )

    pareto_problem = (
        problem
        if opt.objective == "p_conforming"
        else RobustProblem(
            space,
            downstream,
            prices,
            temperature=opt.temperature,
            structure=structure,
            solver=solver,
        )
    )
    cost_scale = float(fresh_out["default"]["cost"].mean())
    sweep = pareto_sweep(
        pareto_problem,
        donors,
        z0,
        list(opt.pareto_cost_weights),
        steps=opt.pareto_steps,
        learning_rate=opt.learning_rate,
        cost_scale=cost_scale,
    )
    points = [
        ("default", math.nan, z0),
        ("gradient", math.nan, gradient.z),
        ("sobol", math.nan, sobol.z),
    ]
    points += [("pareto", w, r.z) for w, r in zip(opt.pareto_cost_weights, sweep, strict=True)]
    pareto_rows = []
    for kind, weight, z in points:
        out = fresh_out[kind] if kind in fresh_out else evaluate(pareto_problem, z, chunks)
        pareto_rows.append(
            {
                "kind": kind,
                "cost_weight": weight,
                "p_conforming": out["conforming"].mean(),
                "cost_usd": out["cost"].mean(),
                **{
                    k: np.asarray(v).tolist()
                    for k, v in space.to_values(z).items()
                    if k in space.names
                },
            }
        )
    pareto = pd.DataFrame(pareto_rows)
    pareto["non_dominated"] = non_dominated(pareto["p_conforming"], pareto["cost_usd"])

    values = space.to_values(gradient.z)
    optimized = recipe_with_values(recipe, values)
    decisions = _decision_table(
        space, values, space.to_values(z0), {k: list(v) for k, v in opt.data_ranges.items()}
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir, cfg, seed=opt.seed)
    text = _recipe_yaml(optimized)
    for path in (out_dir / "optimized_recipe.yaml", out_dir / "recipe" / "optimized.yaml"):
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    write_run_data(_run_data(optimized, cfg.cartridge_capacity_ml), out_dir / "optimized_run")
    for name, frame in (("comparison", comparison), ("decisions", decisions), ("pareto", pareto)):
        with atomic_path(out_dir / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
    sense = 1.0 if opt.objective == "cost_per_conforming_dose" else -1.0
    per_evaluation = gradient.simulations // (opt.starts * opt.steps)
    save_figure(
        _plot_convergence(gradient, sobol, per_evaluation, sense), out_dir / "convergence.png"
    )
    save_figure(_plot_pareto(pareto), out_dir / "pareto.png")
    record = {
        "objective": opt.objective,
        "decision_dimension": space.dimension,
        "budget_rule": "objective evaluation = n_donors simulations; gradient = n_donors x (1 + D)",
        "gradient": {
            "simulations": gradient.simulations,
            "seconds": gradient.seconds,
            "best_smooth_loss": gradient.loss,
        },
        "sobol": {
            "simulations": sobol.simulations,
            "points": len(sobol.history[0]),
            "seconds": sobol.seconds,
            "best_exact_loss": sobol.loss,
        },
        "compile_forward_s": compile_forward_s,
        "compile_gradient_s": compile_gradient_s,
    }
    with atomic_path(out_dir / "search.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    return comparison


@hydra.main(config_path="../configs", config_name="optimize", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_input_error():
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        began = time.perf_counter()
        comparison = run(cfg, out_dir)
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            print(comparison.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
        print(f"run time: {time.perf_counter() - began:.0f} s; outputs: {out_dir}")


if __name__ == "__main__":
    main()
