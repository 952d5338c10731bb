"""Robust recipe optimization: maximize P(batch conforms) over a donor population.

    python experiments/optimize.py                              # defaults: configs/optimize.yaml
    python experiments/optimize.py optimize.steps=60 optimize.n_donors=32

Gradient search (Adam through the twin, forward mode, multi-start) and a Sobol baseline with
the same simulation budget and the same vector-use limit (``optimize.max_vector_TU_ratio``)
both search on the same training donors; the start recipe and both results are then
evaluated, exactly (pass/fail), on fresh donors of the twin and on fresh donors of a process the
twin has not seen (``holdout``; by default the example dataset's generator). With a
calibration, the decisions' boxes are narrowed to what its run data covered
(``optimize.data_guard=restrict``) and any proposal that leaves those ranges is reported as
extrapolating. Writes into the run directory:

- ``optimized_recipe.yaml``: the gradient result as a Hydra recipe config (header
  ``defaults: [recipe_schema, _self_]``); the same file as ``recipe/optimized.yaml``, so
  ``python experiments/simulate.py --config-dir <run dir> recipe=optimized`` runs it as is,
  and it can be copied into ``configs/recipe/``.
- ``optimized_run/``: a run-data folder (RUN_DATA.md; ``runs.csv``, ``events.csv``,
  ``measurements.csv`` without rows) holding the recipe as run ``optimized``.
- ``comparison.csv`` (printed; the twin's fresh donors), ``holdout.csv`` (printed; the unseen
  process), ``decisions.csv`` (values, bounds, covered data ranges and flags), ``pareto.csv``,
  ``convergence.png``, ``pareto.png``, ``search.json`` (budgets, timings, vector limit,
  extrapolation and other notes), ``resolved_config.yaml`` and ``provenance.json``.
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
from twin._cli import exit_on_input_error, resolve_user_path
from twin.data import RunData, read_run_data, write_run_data
from twin.forecast._io import calibration_from_path
from twin.kinetics import PARAMETER_NAMES, PARAMETER_TABLE, default_parameters
from twin.optimize import (  # importing registers the `optimize` and `holdout` schemas
    OBJECTIVES,
    DonorPopulation,
    Prices,
    RobustProblem,
    bootstrap_interval,
    covered_ranges,
    decision_space,
    evaluate,
    gradient_search,
    non_dominated,
    objective_score,
    outside_ranges,
    pareto_sweep,
    population_from_calibration,
    restrict_to_ranges,
    sobol_search,
)
from twin.plots import save_figure
from twin.process import EVENT_FIELDS, recipe_values, recipe_with_values
from twin.provenance import write_provenance

matplotlib.use("Agg")
jax.config.update("jax_enable_x64", True)

DATA_GUARDS = ("restrict", "flag")
HOLDOUT_CHUNK = 64  # donors per compiled call on the unseen process


def _population(cfg: DictConfig, params, structure):
    """The donor population and model structure: from ``calibration`` (a calibration.nc or its
    run directory) when given, else ``model.parameters`` with ``optimize.donor_sd``."""
    if cfg.calibration is None:
        return DonorPopulation(params, dict(cfg.optimize.donor_sd)), structure
    calibration = calibration_from_path(cfg.calibration)
    return population_from_calibration(calibration), calibration.structure


def _coverage(cfg: DictConfig) -> tuple[dict[str, tuple[float, float]], str]:
    """The decision ranges the calibration data covered, and where they came from: the runs of
    ``optimize.data_dir`` if set, else the calibration's own runs in its config's ``data_dir``;
    ``optimize.data_ranges`` add to (and override) them."""
    opt = cfg.optimize
    ranges: dict[str, tuple[float, float]] = {}
    source = "none (no calibration data: nothing can be checked for extrapolation)"
    folder, run_ids = None, None
    if opt.data_dir is not None:
        folder = resolve_user_path(str(opt.data_dir))
        if not folder.is_dir():
            raise TwinInputError(f"optimize.data_dir={str(opt.data_dir)!r}: no folder at {folder}")
    elif cfg.calibration is not None:
        calibration = calibration_from_path(cfg.calibration)
        stored = yaml.safe_load(calibration.config or "") or {}
        run_ids = calibration.run_ids
        if stored.get("data_dir") is None:
            source = "unknown: the calibration records no data_dir (set optimize.data_dir)"
        else:
            folder = resolve_user_path(str(stored["data_dir"]))
            if not folder.is_dir():
                source = f"unknown: the calibration's data_dir {folder} is gone"
                source += " (set optimize.data_dir)"
                folder = None
    if folder is not None:
        data = read_run_data(folder)
        if run_ids is not None:
            run_ids = [r for r in run_ids if r in set(data.run_ids)]
        ranges = covered_ranges(data, run_ids)
        count = len(data.run_ids) if run_ids is None else len(run_ids)
        source = f"{folder} ({count} runs)"
    for name, pair in opt.data_ranges.items():
        ranges[name] = (float(pair[0]), float(pair[1]))
    if opt.data_ranges:
        source += f"; optimize.data_ranges for {sorted(opt.data_ranges)}"
    return ranges, source


def _holdout(cfg: DictConfig, params, structure):
    """The unseen process of ``holdout``: ``(population, structure)``, or ``None`` without one."""
    h = cfg.get("holdout")
    if h is None:
        return None
    values = {name: float(getattr(params, name)) for name in PARAMETER_NAMES}
    for name, value in h.parameters.items():
        if name not in values:
            raise TwinInputError(f"holdout.parameters.{name}: not a kinetic parameter")
        spec = next(s for s in PARAMETER_TABLE if s.name == name)
        ok = math.isfinite(value) and (value > 0 if spec.transform == "log" else 0 < value < 1)
        if not ok:
            domain = "> 0" if spec.transform == "log" else "in (0, 1)"
            raise TwinInputError(f"holdout.parameters.{name}={value!r}: must be {domain}")
        values[name] = float(value)
    for name, sd in h.donor_sd.items():
        if name not in values:
            raise TwinInputError(f"holdout.donor_sd.{name}: not a kinetic parameter")
        if not sd >= 0:
            raise TwinInputError(f"holdout.donor_sd.{name}={sd!r}: must be >= 0")
    if not h.n_donors >= 1:
        raise TwinInputError(f"holdout.n_donors={h.n_donors!r}: must be >= 1")
    try:
        holdout_structure = dataclasses.replace(structure, **dict(h.structure))
    except (TypeError, ValueError) as error:
        raise TwinInputError(f"holdout.structure={dict(h.structure)!r}: {error}") from None
    population = DonorPopulation(default_parameters(**values), dict(h.donor_sd))
    return population, holdout_structure


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
    ratio = opt.max_vector_TU_ratio
    if ratio is not None and not (math.isfinite(ratio) and ratio > 0):
        raise TwinInputError(f"optimize.max_vector_TU_ratio={ratio!r}: must be > 0 or null")
    if opt.data_guard not in DATA_GUARDS:
        raise TwinInputError(
            f"optimize.data_guard={opt.data_guard!r}: choose from {list(DATA_GUARDS)}"
        )
    for name, pair in opt.data_ranges.items():
        if name not in opt.decisions or len(pair) != 2 or not pair[0] <= pair[1]:
            raise TwinInputError(
                f"optimize.data_ranges.{name}={list(pair)!r}: expected [low, high] of a decision"
            )
    try:
        return Prices(**opt.prices)
    except ValueError as error:
        raise TwinInputError(f"optimize.{error}") from None


def _summary(
    name: str, out: dict, reference: dict, objective: str, rng, n_boot: int, extra: dict
) -> dict:
    """One row of a comparison table: ``out`` (per-donor outcomes) against ``reference`` (the
    start recipe's on the same donors; the P difference is paired, donor by donor)."""
    p_low, p_high = bootstrap_interval(out["conforming"], rng, n_boot=n_boot)
    gain = out["conforming"] - reference["conforming"]
    g_low, g_high = bootstrap_interval(gain, rng, n_boot=n_boot)
    y = out["product_viable_car_pos_cells"]
    y_low, y_high = bootstrap_interval(y, rng, n_boot=n_boot)
    return {
        "recipe": name,
        "p_conforming": out["conforming"].mean(),
        "p_conforming_90_low": p_low,
        "p_conforming_90_high": p_high,
        "p_gain_vs_default": gain.mean(),
        "p_gain_90_low": g_low,
        "p_gain_90_high": g_high,
        "viable_car_pos_cells": y.mean(),
        "viable_car_pos_cells_90_low": y_low,
        "viable_car_pos_cells_90_high": y_high,
        "conforming_doses": out["conforming_doses"].mean(),
        f"objective_{objective}": float(objective_score(out, objective, exact=True)),
        "cost_usd": out["cost"].mean(),
        "vector_TU": out["vector_TU"].mean(),
        "vector_vs_default": out["vector_TU"].mean() / reference["vector_TU"].mean(),
        "medium_mL": out["medium_mL"].mean(),
        "solver_success": out["success"].mean(),
        **extra,
    }


def _recipe_yaml(recipe, warnings: list[str] = ()) -> str:
    body = yaml.safe_dump(dataclasses.asdict(recipe), sort_keys=False)
    header = "# Written by experiments/optimize.py (twin.optimize): the optimized recipe.\n"
    header += "".join(f"# WARNING: {line}\n" for line in warnings)
    return header + "defaults:\n  - recipe_schema\n  - _self_\n\n" + body


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


def _decision_table(space, values, start_values, data_ranges, held) -> pd.DataFrame:
    edges = space.edges(values)
    outside = outside_ranges(values, data_ranges, space.names)
    rows = []
    for name, low, high in zip(space.names, space.low, space.high, strict=True):
        covered = data_ranges.get(name, (math.nan, math.nan))
        rows.append(
            {
                "decision": name,
                "start": " ".join(f"{v:.6g}" for v in np.atleast_1d(start_values[name])),
                "optimized": " ".join(f"{v:.6g}" for v in np.atleast_1d(values[name])),
                "low": low,
                "high": high,
                "at_edge": edges[name],
                "data_low": covered[0],
                "data_high": covered[1],
                "outside_data_range": name in outside,
                "note": outside.get(name, ""),
            }
        )
    for name, reason in held.items():
        covered = data_ranges.get(name, (math.nan, math.nan))
        x = " ".join(f"{v:.6g}" for v in np.atleast_1d(start_values[name]))
        rows.append(
            {
                "decision": name,
                "start": x,
                "optimized": x,
                "low": math.nan,
                "high": math.nan,
                "at_edge": "held",
                "data_low": covered[0],
                "data_high": covered[1],
                "outside_data_range": False,
                "note": reason,
            }
        )
    return pd.DataFrame(rows)


def _plot_convergence(gradient, sobol, per_evaluation, sense):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, losses in enumerate(gradient.history):
        sims = per_evaluation * (np.arange(len(losses)) + 1 + i * len(losses))
        ax.plot(sims, sense * losses, lw=1.2, label=f"gradient start {i} (smooth)")
    sobol_losses = sobol.history[0]  # NaN: over the vector limit
    sims = (np.arange(len(sobol_losses)) + 1) * (sobol.simulations / len(sobol_losses))
    best = np.fmin.accumulate(sobol_losses)
    ax.plot(sims, sense * best, "k--", label="Sobol best feasible (exact)")
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


def _chunks(donors, size: int) -> list:
    n = int(np.shape(donors.activation_lag_h)[0])
    return [jax.tree.map(lambda x, i=i: x[i : i + size], donors) for i in range(0, n, size)]


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Optimize, write the outputs into ``out_dir`` and return ``{"comparison": table,
    "holdout": table or None, "notes": [line, ...]}``."""
    params, structure, solver = twin_config.model_from_config(cfg.model)
    recipe = twin_config.recipe_from_config(cfg.recipe)
    downstream = twin_config.downstream_from_config(cfg.downstream)
    prices = _settings(cfg)
    holdout = _holdout(cfg, params, structure)
    population, structure = _population(cfg, params, structure)
    opt = cfg.optimize
    data_ranges, data_source = _coverage(cfg)
    bounds = {name: (b.low, b.high) for name, b in opt.decisions.items()}
    held: dict[str, str] = {}
    if opt.data_guard == "restrict":
        bounds, held = restrict_to_ranges(bounds, recipe_values(recipe), data_ranges)
        if not bounds:
            raise TwinInputError(
                f"optimize.data_guard={opt.data_guard!r}: the calibration data leave no decision "
                "free to move (set optimize.data_guard=flag to search the boxes anyway)"
            )
    space = decision_space(recipe, bounds, trust_radius=opt.trust_radius)

    def robust_problem(process_structure):
        """The search's problem on the twin's process, or on the unseen one (holdout)."""
        return RobustProblem(
            space,
            downstream,
            prices,
            objective=opt.objective,
            temperature=opt.temperature,
            structure=process_structure,
            solver=solver,
        )

    problem = robust_problem(structure)
    n = opt.n_donors
    donors = population.sample(jax.random.PRNGKey(opt.seed), n)
    n_chunks = math.ceil(opt.n_eval_donors / n)
    fresh = population.sample(jax.random.PRNGKey(opt.seed + 1), n_chunks * n)
    chunks = _chunks(fresh, n)

    z0 = space.start()
    began = time.perf_counter()
    start_training = problem.outcomes(z0, donors)
    compile_forward_s = time.perf_counter() - began
    began = time.perf_counter()
    problem.loss_and_gradient(z0, donors)
    compile_gradient_s = time.perf_counter() - began
    start_vector = float(start_training["vector_TU"].mean())
    ratio = opt.max_vector_TU_ratio
    max_vector = None if ratio is None else ratio * start_vector

    rng = np.random.default_rng(opt.seed)
    starts = np.concatenate([z0[None], space.from_unit_cube(rng.random((opt.starts - 1, len(z0))))])
    gradient = gradient_search(
        problem,
        donors,
        starts,
        steps=opt.steps,
        learning_rate=opt.learning_rate,
        max_vector_TU=max_vector,
    )
    sobol = sobol_search(
        problem, donors, gradient.simulations, seed=opt.seed, max_vector_TU=max_vector
    )

    searches = {"gradient": gradient, "sobol": sobol}
    results = {"default": z0, "gradient": gradient.z, "sobol": sobol.z}
    outside = {
        name: outside_ranges(space.to_values(z), data_ranges, space.names)
        for name, z in results.items()
    }
    flags = {}
    for name in results:
        training_vector = searches[name].vector_TU if name in searches else start_vector
        flags[name] = {
            "vector_TU_training": training_vector,
            "vector_limit_met": max_vector is None or training_vector <= max_vector,
            "extrapolates": bool(outside[name]),
            "outside_data": "; ".join(outside[name].values()),
        }

    boot = np.random.default_rng(opt.seed + 1)
    fresh_out = {name: evaluate(problem, z, chunks) for name, z in results.items()}
    comparison = pd.DataFrame(
        [
            _summary(k, v, fresh_out["default"], opt.objective, boot, opt.n_bootstrap, flags[k])
            for k, v in fresh_out.items()
        ]
    )

    holdout_table, holdout_s = None, math.nan
    if holdout is not None:
        began = time.perf_counter()
        holdout_population, holdout_structure = holdout
        holdout_problem = robust_problem(holdout_structure)
        size = min(int(cfg.holdout.n_donors), HOLDOUT_CHUNK)
        n_holdout = math.ceil(cfg.holdout.n_donors / size) * size
        holdout_donors = holdout_population.sample(jax.random.PRNGKey(cfg.holdout.seed), n_holdout)
        holdout_chunks = _chunks(holdout_donors, size)
        holdout_out = {
            name: evaluate(holdout_problem, z, holdout_chunks) for name, z in results.items()
        }
        holdout_table = pd.DataFrame(
            [
                _summary(
                    k, v, holdout_out["default"], opt.objective, boot, opt.n_bootstrap, flags[k]
                )
                for k, v in holdout_out.items()
            ]
        )
        holdout_s = time.perf_counter() - began

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
        max_vector_TU=max_vector,
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
                "vector_TU": out["vector_TU"].mean(),
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
    decisions = _decision_table(space, values, recipe_values(recipe), data_ranges, held)

    notes = [f"decision coverage: {data_source}; data_guard={opt.data_guard}"]
    notes += [f"held: {reason}" for reason in held.values()]
    if max_vector is None:
        notes.append("vector limit: none (optimize.max_vector_TU_ratio=null)")
    else:
        notes.append(
            f"vector limit: mean {max_vector:.4g} TU over the training donors "
            f"({ratio:g} x the start recipe's); "
            + ", ".join(
                f"{name} {r.vector_TU:.4g} TU "
                + ("(met)" if flags[name]["vector_limit_met"] else "(NOT met)")
                for name, r in searches.items()
            )
        )
    for name in ("gradient", "sobol"):
        if outside[name]:
            notes.append(
                f"EXTRAPOLATES: the {name} recipe leaves the calibration data's ranges: "
                + "; ".join(outside[name].values())
            )
    if not data_ranges:
        notes.append("extrapolation: not checked (no covered ranges known)")
    elif not (outside["gradient"] or outside["sobol"]):
        notes.append("extrapolation: none (both proposals stay inside the calibration data)")
    warnings = [
        f"extrapolates beyond the calibration data: {note}" for note in outside["gradient"].values()
    ]

    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir, cfg, seed=opt.seed)
    text = _recipe_yaml(optimized, warnings)
    for path in (out_dir / "optimized_recipe.yaml", out_dir / "recipe" / "optimized.yaml"):
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    write_run_data(_run_data(optimized, cfg.cartridge_capacity_ml), out_dir / "optimized_run")
    tables = {"comparison": comparison, "decisions": decisions, "pareto": pareto}
    if holdout_table is not None:
        tables["holdout"] = holdout_table
    for name, frame in tables.items():
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
        "decisions": list(space.names),
        "held_decisions": held,
        "decision_dimension": space.dimension,
        "budget_rule": "objective evaluation = n_donors simulations; gradient = n_donors x (1 + D)",
        "max_vector_TU": max_vector,
        "start_vector_TU_training": start_vector,
        "gradient": {
            "simulations": gradient.simulations,
            "seconds": gradient.seconds,
            "best_smooth_loss": gradient.loss,
            "vector_TU_training": gradient.vector_TU,
            "feasible": gradient.feasible,
            "evaluated_feasible": gradient.evaluated_feasible,
        },
        "sobol": {
            "simulations": sobol.simulations,
            "points": len(sobol.history[0]),
            "seconds": sobol.seconds,
            "best_exact_loss": sobol.loss,
            "vector_TU_training": sobol.vector_TU,
            "feasible": sobol.feasible,
            "evaluated_feasible": sobol.evaluated_feasible,
        },
        "holdout": None
        if holdout is None
        else {"description": cfg.holdout.description, "seconds": holdout_s},
        "compile_forward_s": compile_forward_s,
        "compile_gradient_s": compile_gradient_s,
        "notes": notes,
    }
    with atomic_path(out_dir / "search.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    return {"comparison": comparison, "holdout": holdout_table, "notes": notes}


_PRINTED = [
    "recipe",
    "p_conforming",
    "p_conforming_90_low",
    "p_conforming_90_high",
    "p_gain_vs_default",
    "p_gain_90_low",
    "p_gain_90_high",
    "viable_car_pos_cells",
    "cost_usd",
    "vector_TU",
    "vector_vs_default",
    "vector_limit_met",
    "extrapolates",
]


@hydra.main(config_path="../configs", config_name="optimize", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_input_error(cfg):
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        began = time.perf_counter()
        report = run(cfg, out_dir)
        with pd.option_context("display.width", 250, "display.max_columns", 30):
            fmt = {"float_format": lambda x: f"{x:.4g}", "index": False}
            print("twin, fresh donors (comparison.csv):")
            print(report["comparison"][_PRINTED].to_string(**fmt))
            if report["holdout"] is not None:
                print(f"unseen process: {cfg.holdout.description} (holdout.csv):")
                print(report["holdout"][_PRINTED].to_string(**fmt))
        for line in report["notes"]:
            print(line)
        print(f"run time: {time.perf_counter() - began:.0f} s; outputs: {out_dir}")


if __name__ == "__main__":
    main()
