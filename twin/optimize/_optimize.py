"""One call for the whole optimization stage: :func:`optimize_recipe`.

From a start recipe (the twin's recipe config, or a recorded batch via
:func:`~twin.optimize.read_start_events`) and a donor population (a calibration's), it narrows
the decisions to what the calibration data covered, searches with gradients (Adam, multi-start)
and with a Sobol baseline on one simulation budget and one vector-use limit, evaluates the start
and both results exactly on fresh donors of the twin and on any other process given (a variant
of the twin, or any callable that runs a batch record), sweeps P(conforming) against cost, and
returns everything as an :class:`Optimization`; :func:`~twin.optimize.write_optimization` writes
its files.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np
import pandas as pd

from .._errors import TwinInputError
from ..calibrate import Calibration
from ..kinetics import KineticParameters, ModelStructure
from ..process import Downstream, Recipe, recipe_values, recipe_with_values
from ..simulate import SolverSettings
from ._config import OptimizeConfig
from ._coverage import outside_ranges, restrict_to_ranges
from ._io import recipe_events
from ._objective import objective_score
from ._pareto import non_dominated, pareto_sweep
from ._population import DonorPopulation, population_from_calibration
from ._problem import RobustProblem
from ._processes import EventsProcess, TwinVariantProcess
from ._search import (
    SearchResult,
    bootstrap_interval,
    evaluate,
    gradient_search,
    screen_starts,
    sobol_search,
)
from ._space import DecisionSpace, decision_space

# Donors per compiled call when evaluating on another variant of the twin.
VARIANT_CHUNK = 64


@dataclasses.dataclass(frozen=True)
class Optimization:
    """What :func:`optimize_recipe` found.

    **Fields:**

    - ``start``: the start recipe (a recorded batch's, or the recipe config's) and
      ``start_label`` saying which; ``optimized``: the gradient result as a recipe (full
      precision); ``values``: its decision values (:data:`~twin.process.DESIGN_VALUES` units).
    - ``space``: the decision space searched; ``held``: decisions held at the start, with why;
      ``data_ranges``: what the calibration data covered (decision -> ``(low, high)``).
    - ``points``: ``z`` of ``start``, ``gradient`` and ``sobol``; ``gradient``, ``sobol``: the
      searches (:class:`SearchResult`).
    - ``comparison``: the start and both results on fresh donors of the twin, one row each;
      ``evaluations``: per other process (by its ``name``), the same table there.
    - ``decisions``: one row per decision entry (start, optimized, box, covered range, flags);
      ``pareto``: P(conforming) and cost of the start, the results and the cost-weighted sweep.
    - ``notes``: readable lines (coverage, vector limit, extrapolation, warnings);
      ``warnings``: those a user of the recipe must see; ``record``: budgets and timings.
    """

    settings: OptimizeConfig
    downstream: Downstream
    start: Recipe
    start_label: str
    optimized: Recipe
    values: dict[str, np.ndarray]
    space: DecisionSpace
    held: dict[str, str]
    data_ranges: dict[str, tuple[float, float]]
    points: dict[str, np.ndarray]
    gradient: SearchResult
    sobol: SearchResult
    comparison: pd.DataFrame
    evaluations: dict[str, pd.DataFrame]
    decisions: pd.DataFrame
    pareto: pd.DataFrame
    notes: list[str]
    warnings: list[str]
    record: dict
    capacity_ml: float | None = None


def optimize_recipe(
    population: Calibration | DonorPopulation,
    start: Recipe,
    settings: OptimizeConfig,
    *,
    downstream: Downstream,
    structure: ModelStructure | None = None,
    solver: SolverSettings = SolverSettings(),
    data_ranges: Mapping[str, tuple[float, float]] | None = None,
    data_source: str = "not given",
    processes: Sequence[TwinVariantProcess | EventsProcess] = (),
    start_label: str = "start recipe",
    capacity_ml: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> Optimization:
    """Optimize ``start``'s decisions (``settings.decisions``) for the objective
    ``settings.objective``, robustly over the donors of ``population``.

    **Arguments:**

    - ``population``: a :class:`~twin.calibrate.Calibration` (its population, donor SDs,
      uncertainty and model structure) or a :class:`DonorPopulation`.
    - ``start``: the start recipe; every decision starts at its value, and everything the
      decisions do not move stays as it is.
    - ``settings``: the ``optimize`` config (boxes, search budgets, limits, seeds).
    - ``downstream``: release specification and dose; ``structure`` (default: the
      calibration's, else the twin's default) and ``solver``: the model.
    - ``data_ranges``: decision -> ``(low, high)`` the calibration data covered (see
      :func:`covered_ranges`); ``settings.data_guard="restrict"`` keeps the search inside.
      ``data_source`` says where they came from.
    - ``processes``: other processes to evaluate the start and the results on.
    - ``capacity_ml``: cartridge capacity, to check the optimized recipe's volumes.
    - ``progress``: called with one line per stage.

    **Raises:** :class:`~twin.TwinInputError` if no decision can move.
    """
    say = progress or (lambda line: None)
    if isinstance(population, Calibration):
        structure = population.structure if structure is None else structure
        population = population_from_calibration(population)
    structure = ModelStructure() if structure is None else structure
    opt = settings
    ranges = {k: (float(v[0]), float(v[1])) for k, v in (data_ranges or {}).items()}
    for name, pair in opt.data_ranges.items():
        ranges[name] = (float(pair[0]), float(pair[1]))
    start_values = {k: np.asarray(v) for k, v in recipe_values(start).items()}
    bounds, held = _free_decisions(opt, start_values, ranges)
    if not bounds:
        raise TwinInputError(
            "optimize.decisions: no decision is free to move from the start "
            f"({'; '.join(held.values())}); with data_guard=restrict, set "
            "optimize.data_guard=flag to search the boxes anyway"
        )
    space = decision_space(start, bounds, trust_radius=opt.trust_radius)
    problem = _problem(space, downstream, opt, structure, solver)
    n = opt.n_donors
    donors = population.sample(jax.random.PRNGKey(opt.seed), n)
    n_chunks = math.ceil(opt.n_eval_donors / n)
    chunks = _chunks(population.sample(jax.random.PRNGKey(opt.seed + 1), n_chunks * n), n)

    z0, z_search = space.start(), space.search_start()
    say(f"optimize: {space.dimension} decision entries ({', '.join(space.names)}), {n} donors")
    began = time.perf_counter()
    start_training = problem.outcomes(z0, donors)
    compile_forward_s = time.perf_counter() - began
    began = time.perf_counter()
    start_loss, _, _ = problem.loss_and_gradient(z0, donors)  # the start's own smooth loss
    compile_gradient_s = time.perf_counter() - began
    say(f"compiled outcomes in {compile_forward_s:.0f} s, gradients in {compile_gradient_s:.0f} s")
    start_vector = float(start_training["vector_TU"].mean())
    ratio = opt.max_vector_TU_ratio
    max_vector = None if ratio is None else ratio * start_vector

    began = time.perf_counter()
    if opt.screen_points and opt.starts > 1:
        picks, screen_simulations = screen_starts(
            problem,
            donors,
            opt.screen_points,
            opt.starts - 1,
            seed=opt.seed,
            max_vector_TU=max_vector,
        )
    else:
        rng = np.random.default_rng(opt.seed)
        picks, screen_simulations = space.from_unit_cube(rng.random((opt.starts - 1, len(z0)))), 0
    starts = np.concatenate([z_search[None], picks])
    gradient = gradient_search(
        problem,
        donors,
        starts,
        steps=opt.steps,
        learning_rate=opt.learning_rate,
        max_vector_TU=max_vector,
    )
    # The screen is part of the gradient search's budget, so the baseline gets it too.
    gradient = dataclasses.replace(
        gradient,
        simulations=gradient.simulations + screen_simulations,
        seconds=time.perf_counter() - began,
    )
    how = f"the best of {opt.screen_points} Sobol points" if screen_simulations else "random"
    say(
        f"gradient search: {opt.starts} starts (the start recipe, {how}) x {opt.steps} steps "
        f"in {gradient.seconds:.0f} s"
    )
    sobol = sobol_search(
        problem, donors, gradient.simulations, seed=opt.seed, max_vector_TU=max_vector
    )
    say(f"Sobol baseline: {len(sobol.history[0])} points in {sobol.seconds:.0f} s")
    searches = {"gradient": gradient, "sobol": sobol}
    points = {"start": z0, "gradient": gradient.z, "sobol": sobol.z}
    outside = {
        name: outside_ranges(space.to_values(z), ranges, space.names) for name, z in points.items()
    }
    flags = {}
    for name in points:
        vector = searches[name].vector_TU if name in searches else start_vector
        flags[name] = {
            "vector_TU_training": vector,
            "vector_limit_met": max_vector is None or vector <= max_vector,
            "extrapolates": bool(outside[name]),
            "outside_data": "; ".join(outside[name].values()),
        }

    boot = np.random.default_rng(opt.seed + 1)
    fresh = {name: evaluate(problem, z, chunks) for name, z in points.items()}
    comparison = _table(fresh, opt, boot, flags)
    say(f"evaluated on {n_chunks * n} fresh donors of the twin")

    evaluations, timings = {}, {}
    recipes = {name: recipe_with_values(start, space.to_values(z)) for name, z in points.items()}
    for process in processes:
        began = time.perf_counter()
        if isinstance(process, TwinVariantProcess):
            variant = _problem(space, downstream, opt, process.structure, solver)
            size = min(process.n_donors, VARIANT_CHUNK)
            count = math.ceil(process.n_donors / size) * size
            variant_chunks = _chunks(
                process.population.sample(jax.random.PRNGKey(process.seed), count), size
            )
            out = {name: evaluate(variant, z, variant_chunks) for name, z in points.items()}
        else:
            out = {
                name: process.outcomes(recipe_events(recipe, run_id=name), downstream)
                for name, recipe in recipes.items()
            }
        evaluations[process.name] = _table(out, opt, boot, flags)
        timings[process.name] = time.perf_counter() - began
        say(f"evaluated on {process.description} in {timings[process.name]:.0f} s")

    pareto = _pareto_table(
        problem, downstream, opt, structure, solver, donors, chunks, fresh, points, max_vector
    )
    say(f"Pareto sweep: {len(opt.pareto_cost_weights)} cost weights")

    values = {k: np.asarray(v) for k, v in space.to_values(gradient.z).items()}
    optimized = recipe_with_values(start, values)
    if capacity_ml is not None:
        optimized.events(capacity_ml=capacity_ml)  # raises naming recipe.* if volumes overflow
    decisions = _decision_table(space, values, start_values, ranges, held, opt.bounds)

    notes = [f"start: {start_label}", f"decision coverage: {data_source}"]
    notes[-1] += f"; data_guard={opt.data_guard}"
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
    if not ranges:
        notes.append("extrapolation: not checked (no covered ranges known)")
    elif not (outside["gradient"] or outside["sobol"]):
        notes.append("extrapolation: none (both proposals stay inside the calibration data)")
    warnings = [
        f"extrapolates beyond the calibration data: {note}" for note in outside["gradient"].values()
    ]
    record = {
        "objective": opt.objective,
        "start": start_label,
        "decisions": list(space.names),
        "held_decisions": held,
        "decision_dimension": space.dimension,
        "budget_rule": (
            "objective evaluation = n_donors simulations; gradient = n_donors x (1 + D); the "
            "start screen is charged to the gradient search"
        ),
        "max_vector_TU": max_vector,
        "start_vector_TU_training": start_vector,
        "start_smooth_loss_training": start_loss,
        "gradient": {
            **_search_record(gradient, "best_smooth_loss"),
            "screen_points": opt.screen_points,
            "screen_simulations": screen_simulations,
        },
        "sobol": {**_search_record(sobol, "best_exact_loss"), "points": len(sobol.history[0])},
        "evaluations": {
            p.name: {"description": p.description, "seconds": timings[p.name]} for p in processes
        },
        "compile_forward_s": compile_forward_s,
        "compile_gradient_s": compile_gradient_s,
        "notes": notes,
    }
    return Optimization(
        settings=opt,
        downstream=downstream,
        start=start,
        start_label=start_label,
        optimized=optimized,
        values=values,
        space=space,
        held=held,
        data_ranges=ranges,
        points=points,
        gradient=gradient,
        sobol=sobol,
        comparison=comparison,
        evaluations=evaluations,
        decisions=decisions,
        pareto=pareto,
        notes=notes,
        warnings=warnings,
        record=record,
        capacity_ml=capacity_ml,
    )


def _free_decisions(
    opt: OptimizeConfig,
    start: Mapping[str, np.ndarray],
    ranges: Mapping[str, tuple[float, float]],
) -> tuple[dict[str, tuple[float, float]], dict[str, str]]:
    """The boxes of the decisions that can move, and why the others are held at the start:
    no such steps in the start (e.g. a record without exchanges), a start value outside the
    configured box, or (``data_guard=restrict``) no room inside the calibration data's range."""
    bounds, held = {}, {}
    for name, (low, high) in opt.bounds.items():
        x0 = np.atleast_1d(np.asarray(start[name], float)) if name in start else None
        if x0 is not None and x0.size == 0:
            held[name] = f"{name} held: the start has no such steps"
        elif x0 is not None and not np.all((low <= x0) & (x0 <= high)):
            shown = " ".join(f"{v:.4g}" for v in x0)
            held[name] = (
                f"{name} held at the start's value {shown}: outside "
                f"optimize.decisions.{name}=[{low:g}, {high:g}]"
            )
        else:
            bounds[name] = (low, high)
    if opt.data_guard == "restrict":
        bounds, more = restrict_to_ranges(bounds, start, ranges)
        held.update(more)
    return bounds, held


def _problem(space, downstream, opt, structure, solver) -> RobustProblem:
    return RobustProblem(
        space,
        downstream,
        opt.prices,
        objective=opt.objective,
        temperature=opt.temperature,
        structure=structure,
        solver=solver,
    )


def _chunks(donors: KineticParameters, size: int) -> list[KineticParameters]:
    n = int(np.shape(donors.activation_lag_h)[0])
    return [jax.tree.map(lambda x, i=i: x[i : i + size], donors) for i in range(0, n, size)]


def _search_record(result: SearchResult, loss_name: str) -> dict:
    return {
        "simulations": result.simulations,
        "seconds": result.seconds,
        loss_name: result.loss,
        "vector_TU_training": result.vector_TU,
        "feasible": result.feasible,
        "evaluated_feasible": result.evaluated_feasible,
    }


def _table(outcomes: dict, opt: OptimizeConfig, rng, flags: dict) -> pd.DataFrame:
    """One row per recipe; the P differences are paired donor by donor with the start's."""
    reference = outcomes["start"]
    rows = []
    for name, out in outcomes.items():
        p_low, p_high = bootstrap_interval(out["conforming"], rng, n_boot=opt.n_bootstrap)
        gain = out["conforming"] - reference["conforming"]
        g_low, g_high = bootstrap_interval(gain, rng, n_boot=opt.n_bootstrap)
        y = out["product_viable_car_pos_cells"]
        y_low, y_high = bootstrap_interval(y, rng, n_boot=opt.n_bootstrap)
        has_cost = "cost" in out
        score = (
            float(objective_score(out, opt.objective, exact=True))
            if has_cost or opt.objective in ("p_conforming", "expected_conforming_doses")
            else math.nan
        )
        rows.append(
            {
                "recipe": name,
                "donors": len(out["conforming"]),
                "p_conforming": out["conforming"].mean(),
                "p_conforming_90_low": p_low,
                "p_conforming_90_high": p_high,
                "p_gain_vs_start": gain.mean(),
                "p_gain_90_low": g_low,
                "p_gain_90_high": g_high,
                "viable_car_pos_cells": y.mean(),
                "viable_car_pos_cells_90_low": y_low,
                "viable_car_pos_cells_90_high": y_high,
                "conforming_doses": out["conforming_doses"].mean(),
                f"objective_{opt.objective}": score,
                "cost_usd": out["cost"].mean() if has_cost else math.nan,
                "vector_TU": out["vector_TU"].mean() if has_cost else math.nan,
                "vector_vs_start": out["vector_TU"].mean() / reference["vector_TU"].mean()
                if has_cost
                else math.nan,
                "medium_mL": out["medium_mL"].mean() if has_cost else math.nan,
                "solver_success": out["success"].mean(),
                "failed_solves": int(np.sum(~np.asarray(out["success"], bool))),  # 0 stated
                **flags[name],
            }
        )
    return pd.DataFrame(rows)


def _pareto_table(
    problem, downstream, opt, structure, solver, donors, chunks, fresh, points, max_vector
) -> pd.DataFrame:
    """The start, both results and a cost-weighted sweep from the search start, on the fresh
    donors (tidy: one column per decision entry)."""
    space = problem.space
    pareto_problem = (
        problem
        if opt.objective == "p_conforming"
        else RobustProblem(
            space,
            downstream,
            opt.prices,
            temperature=opt.temperature,
            structure=structure,
            solver=solver,
        )
    )
    sweep = pareto_sweep(
        pareto_problem,
        donors,
        space.search_start(),
        list(opt.pareto_cost_weights),
        steps=opt.pareto_steps,
        learning_rate=opt.learning_rate,
        cost_scale=float(fresh["start"]["cost"].mean()),
        max_vector_TU=max_vector,
    )
    rows = [(name, math.nan, z) for name, z in points.items()]
    rows += [("sweep", w, r.z) for w, r in zip(opt.pareto_cost_weights, sweep, strict=True)]
    records = []
    for kind, weight, z in rows:
        out = fresh[kind] if kind in fresh else evaluate(pareto_problem, z, chunks)
        records.append(
            {
                "kind": kind,
                "cost_weight": weight,
                "p_conforming": out["conforming"].mean(),
                "cost_usd": out["cost"].mean(),
                "vector_TU": out["vector_TU"].mean(),
                **entry_columns(space, space.to_values(z)),
            }
        )
    frame = pd.DataFrame(records)
    frame["non_dominated"] = non_dominated(frame["p_conforming"], frame["cost_usd"])
    return frame


def entry_columns(space: DecisionSpace, values: Mapping[str, object]) -> dict[str, float]:
    """One column per decision entry: ``moi``, ``exchange_fraction_0``, ``..._1``, ..."""
    columns = {}
    for name, size in zip(space.names, space.sizes, strict=True):
        x = np.atleast_1d(np.asarray(values[name], float))
        if np.ndim(values[name]) == 0:
            columns[name] = float(x[0])
        else:
            columns.update({f"{name}_{i}": float(v) for i, v in enumerate(x[:size])})
    return columns


def _decision_table(space, values, start, ranges, held, boxes) -> pd.DataFrame:
    """One row per decision entry (tidy: no lists in cells)."""
    edges = space.edges(values)
    outside = outside_ranges(values, ranges, space.names)
    rows = []
    moved = dict(zip(space.names, zip(space.low, space.high, strict=True), strict=True))
    for name in [*space.names, *held]:
        covered = ranges.get(name, (math.nan, math.nan))
        x0 = np.atleast_1d(np.asarray(start[name], float))
        x = np.atleast_1d(np.asarray(values[name], float)) if name in moved else x0
        low, high = moved.get(name, boxes.get(name, (math.nan, math.nan)))
        for i, (a, b) in enumerate(zip(x0, x, strict=True)):
            rows.append(
                {
                    "decision": name,
                    "entry": i,
                    "start": a,
                    "optimized": b,
                    "low": low,
                    "high": high,
                    "status": (edges.get(name) or "free") if name in moved else "held",
                    "data_low": covered[0],
                    "data_high": covered[1],
                    "outside_data_range": name in outside,
                    "note": held.get(name, outside.get(name, "")),
                }
            )
    return pd.DataFrame(rows)
