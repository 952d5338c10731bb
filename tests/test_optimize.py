"""Robust recipe optimization (twin.optimize): transforms, surrogates, gradients, outputs.

The fast tests share one small problem (4 donors, 2 decisions) and its two compiles (forward
outcomes and forward-mode gradient); the end-to-end experiment run is marked slow.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

import twin
from twin import TwinInputError
from twin.optimize import (
    DonorPopulation,
    Prices,
    RobustProblem,
    decision_space,
    gradient_search,
    non_dominated,
    release_margins,
    screen_starts,
    smooth_conformance,
    sobol_points,
    sobol_search,
)
from twin.process import Downstream, Recipe, pad_schedule, product, schedule_from_values

REPO_ROOT = Path(__file__).resolve().parents[1]
DONOR_SD = {
    "max_growth_rate_per_h": 0.15,
    "activation_efficiency": 0.5,
    "susceptible_fraction": 0.4,
}
BOUNDS = {
    "seed_cells": (5e7, 2e8),
    "transduction_delay_h": (12.0, 48.0),
    "moi": (1.0, 15.0),
    "exchange_fraction": (0.2, 0.9),
    "exchange_time_h": (100.0, 180.0),
    "medium_il2_IU_per_mL": (20.0, 300.0),
    "harvest_time_h": (180.0, 264.0),
}


# --- decision space ------------------------------------------------------------------------------


@pytest.mark.parametrize("radius", [None, 0.3])
def test_transform_respects_bounds_and_round_trips(radius):
    space = decision_space(Recipe(), BOUNDS, trust_radius=radius)
    rng = np.random.default_rng(0)
    for z in rng.normal(scale=8.0, size=(50, space.dimension)):
        values = space.to_values(jnp.asarray(z))
        for name, (low, high) in BOUNDS.items():
            x = np.atleast_1d(np.asarray(values[name]))
            assert np.all((x >= low) & (x <= high)), name
        assert np.all(np.diff(np.asarray(values["exchange_time_h"])) > 0)
    # Away from saturated logits (where the map is flat), z -> values -> z is exact.
    for z in rng.normal(scale=2.0, size=(50, space.dimension)):
        values = space.to_values(jnp.asarray(z))
        np.testing.assert_allclose(space.to_unconstrained(values), z, rtol=1e-9, atol=1e-9)
    start = space.to_values(jnp.asarray(space.start()))
    np.testing.assert_allclose(start["moi"], Recipe().moi, rtol=1e-12)
    np.testing.assert_allclose(start["exchange_time_h"], [120.0, 144.0, 168.0], rtol=1e-12)


def test_trust_region_limits_the_move_from_the_start():
    space = decision_space(Recipe(), {"moi": (1.0, 15.0)}, trust_radius=0.1)
    for z in (-50.0, 50.0):
        moi = float(space.to_values(jnp.array([z]))["moi"])
        assert abs(moi - 5.0) <= 0.1 * 14.0 + 1e-9
    assert space.edges(space.to_values(jnp.array([50.0])))["moi"] == "trust_region"


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ({"mois": (1.0, 2.0)}, "optimize.decisions.mois: not a decision value"),
        ({"moi": (6.0, 10.0)}, "optimize.decisions.moi=[6, 10]: the start recipe's value"),
        ({"moi": (3.0, 2.0)}, "optimize.decisions.moi=[3, 2]: expected 0 <= low < high"),
        ({"exchange_fraction": (0.1, 1.5)}, "optimize.decisions.exchange_fraction=[0.1, 1.5]"),
        ({"exchange_time_h": (100.0, 200.0)}, "optimize.decisions.exchange_time_h: high=200"),
    ],
)
def test_bad_bounds_name_the_config_key(bounds, message):
    with pytest.raises(TwinInputError, match=None) as error:
        decision_space(Recipe(), bounds)
    assert str(error.value).startswith(message), str(error.value)


# --- surrogate ----------------------------------------------------------------------------------


def _random_harvests(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "viable_cells": jnp.asarray(10 ** rng.uniform(7.5, 9.5, n)),
        "viability": jnp.asarray(rng.uniform(0.6, 0.99, n)),
        "car_pos_fraction": jnp.asarray(rng.uniform(0.05, 0.5, n)),
        "vcn_per_transduced_cell": jnp.asarray(rng.uniform(1.0, 8.0, n)),
    }


def test_margins_agree_with_release_checks():
    harvest, downstream = _random_harvests(), Downstream()
    released = product(harvest, downstream)
    margins = release_margins(harvest, released, downstream)
    for check, flag in (
        ("viability", "passes_viability"),
        ("car_pos", "passes_car_pos"),
        ("vcn", "passes_vcn"),
        ("dose", "passes_dose"),
    ):
        np.testing.assert_array_equal(np.asarray(margins[check] >= 0), np.asarray(released[flag]))


def test_surrogate_tends_to_exact_pass_fail_as_temperature_falls():
    harvest, downstream = _random_harvests(), Downstream()
    released = product(harvest, downstream)
    exact = np.asarray(released["conforming"], float)
    assert 0.1 < exact.mean() < 0.9  # both outcomes present
    errors = [
        np.abs(np.asarray(smooth_conformance(harvest, released, downstream, t)) - exact).mean()
        for t in (1.0, 0.1, 0.01, 1e-4)
    ]
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 1e-3


def test_non_dominated_points():
    p = np.array([0.9, 0.8, 0.95, 0.7])
    cost = np.array([10.0, 12.0, 20.0, 9.0])
    np.testing.assert_array_equal(non_dominated(p, cost), [True, False, True, True])


def test_population_covariance_widens_the_donors():
    population = DonorPopulation(twin.default_parameters(), {"max_growth_rate_per_h": 0.1})
    n = len(twin.PARAMETER_TABLE)
    wide = DonorPopulation(population.parameters, population.donor_sd, 0.04 * np.eye(n))
    key = jax.random.PRNGKey(0)
    sd = np.std(np.log(population.sample(key, 2000).max_growth_rate_per_h))
    sd_wide = np.std(np.log(wide.sample(key, 2000).max_growth_rate_per_h))
    assert abs(sd - 0.1) < 0.01
    assert abs(sd_wide - np.hypot(0.1, 0.2)) < 0.015


# --- the problem: gradients and search (one shared compile) --------------------------------------


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    from twin.optimize import read_start_events, recipe_events

    # The start is a batch record (the default recipe, transduced at 30 h), as a user's would be.
    path = tmp_path_factory.mktemp("record") / "events.csv"
    recipe_events(Recipe(transduction_time_h=30.0), "B1").to_csv(path, index=False)
    start = read_start_events(path).recipe
    assert start == Recipe(transduction_time_h=30.0)
    space = decision_space(
        start,
        {"moi": (1.0, 15.0), "harvest_time_h": (150.0, 260.0)},
        trust_radius=0.5,
    )
    # A demanding dose makes P(conforming) ~ 0.5 at the start: the surrogate has a slope.
    downstream = Downstream(dose_car_pos_cells=4e8)
    population = DonorPopulation(twin.default_parameters(), DONOR_SD)
    donors = population.sample(jax.random.PRNGKey(3), 4)
    return RobustProblem(space, downstream, Prices(), temperature=0.3), donors


def test_objective_gradient_matches_finite_differences(problem):
    problem, donors = problem
    z = problem.space.start() + np.array([0.3, -0.2])
    _, gradient, _ = problem.loss_and_gradient(z, donors, 0.1, 4e4)
    step = 1e-4
    for i in range(2):
        dz = np.zeros(2)
        dz[i] = step

        def loss(zz):  # the same compiled function's value: one compile for the whole test
            return problem.loss_and_gradient(zz, donors, 0.1, 4e4)[0]

        finite = (loss(z + dz) - loss(z - dz)) / (2 * step)
        np.testing.assert_allclose(gradient[i], finite, rtol=1e-3, atol=1e-7)


def test_gradient_search_improves_on_the_recorded_start(problem):
    problem, donors = problem
    z0 = problem.space.start()
    start_loss, _, _ = problem.loss_and_gradient(z0, donors)
    result = gradient_search(problem, donors, z0[None], steps=8, learning_rate=0.3)
    assert result.loss < start_loss - 0.01, (start_loss, result.history)
    assert result.simulations == 8 * 4 * 3


def test_vector_limit_holds_for_the_gradient_result(problem):
    problem, donors = problem
    z0 = problem.space.start()
    start_vector = problem.outcomes(z0, donors)["vector_TU"].mean()
    # A random start with a high MOI begins over the limit: the penalty must bring it back.
    high_moi = problem.space.to_unconstrained({"moi": 7.0, "harvest_time_h": 200.0})
    free = gradient_search(problem, donors, high_moi[None], steps=8, learning_rate=0.3)
    assert free.vector_TU > 1.2 * start_vector  # the limit binds here
    limited = gradient_search(
        problem, donors, high_moi[None], steps=8, learning_rate=0.3, max_vector_TU=start_vector
    )
    assert limited.feasible and 0 < limited.evaluated_feasible < 8, limited
    assert limited.vector_TU <= start_vector
    # The reported figure is the point's: re-simulated, it meets the limit.
    assert problem.outcomes(limited.z, donors)["vector_TU"].mean() <= start_vector


def test_sobol_filters_points_over_the_vector_limit(problem):
    problem, donors = problem
    z0 = problem.space.start()
    start_vector = problem.outcomes(z0, donors)["vector_TU"].mean()
    result = sobol_search(problem, donors, 4 * 16, seed=0, max_vector_TU=start_vector)
    assert result.feasible and result.vector_TU <= start_vector
    # Vector use is MOI x cells at transduction (fixed here): a point is feasible iff its
    # MOI is at most the start's (5 TU/cell).
    sampler_points = len(result.history[0])
    assert sampler_points == 16
    losses = result.history[0]
    assert np.isfinite(losses[0])  # the start recipe is feasible
    assert 0 < np.isnan(losses).sum() < sampler_points
    assert result.evaluated_feasible == np.isfinite(losses).sum()
    chosen_moi = float(problem.space.to_values(jnp.asarray(result.z))["moi"])
    assert chosen_moi <= 5.0 + 1e-9
    unlimited = sobol_search(problem, donors, 4 * 16, seed=0)
    assert np.all(np.isfinite(unlimited.history[0]))
    assert unlimited.loss <= result.loss


def test_screen_is_the_baselines_prefix_and_picks_by_the_smooth_loss(problem):
    problem, donors = problem
    screen = sobol_points(problem, 8, seed=0)
    # One scrambled sequence per seed: the screen is the first points the baseline scores.
    np.testing.assert_array_equal(screen, sobol_points(problem, 16, seed=0)[:8])
    np.testing.assert_array_equal(screen[0], problem.space.start())
    picks, simulations = screen_starts(problem, donors, 8, 3, seed=0)
    assert simulations == 7 * 4  # the start recipe is not re-scored
    smooth = [problem.loss_and_gradient(z, donors)[0] for z in screen[1:]]
    best = np.argsort(smooth)[:3]
    np.testing.assert_array_equal(picks, screen[1:][best])


# --- outputs ------------------------------------------------------------------------------------


def _optimized_output(tmp_path):
    """The recipe file and batch record twin.optimize writes, for a moved recipe."""
    from twin.optimize import recipe_events, recipe_yaml

    recipe = Recipe()
    space = decision_space(recipe, BOUNDS, trust_radius=0.5)
    z = space.start() + np.linspace(-0.7, 0.9, space.dimension)
    values = space.to_values(jnp.asarray(z))
    optimized = twin.process.recipe_with_values(recipe, values)
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "optimized.yaml").write_text(recipe_yaml(optimized))
    folder = tmp_path / "optimized_run"
    folder.mkdir()
    recipe_events(optimized, "optimized").to_csv(folder / "events.csv", index=False)
    (folder / "runs.csv").write_text("run_id,donor_id\noptimized,virtual\n")
    (folder / "measurements.csv").write_text("run_id,time_h,variable,value\n")
    return recipe, values


def test_optimized_recipe_composes_to_the_optimum_schedule(tmp_path):
    import twin.config as twin_config

    base, values = _optimized_output(tmp_path)
    configs = tmp_path / "configs"
    shutil.copytree(REPO_ROOT / "configs", configs)
    shutil.copy(tmp_path / "recipe" / "optimized.yaml", configs / "recipe" / "optimized.yaml")
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose(config_name="simulate", overrides=["recipe=optimized"])
    recipe = twin_config.recipe_from_config(cfg.recipe)
    traced = schedule_from_values(base, values)
    checked = pad_schedule(recipe.schedule(capacity_ml=1000.0), traced.n_events)
    live = np.asarray(traced.operation) != 0
    for field in ("time_h", "operation", "cells", "moi", "fraction", "il2_IU_per_mL", "volume_ml"):
        np.testing.assert_allclose(
            np.asarray(getattr(traced, field))[live],
            np.asarray(getattr(checked, field))[: live.sum()],
            rtol=1e-12,
            err_msg=field,
        )


def test_optimized_events_read_back(tmp_path):
    base, values = _optimized_output(tmp_path)
    data = twin.data.read_run_data(tmp_path / "optimized_run")
    assert data.run_ids == ["optimized"]
    events = data.events_for("optimized")
    transduce = next(e for e in events if e.operation == "transduce")
    np.testing.assert_allclose(transduce.moi, float(values["moi"]), rtol=1e-12)
    harvest = next(e for e in events if e.operation == "harvest")
    np.testing.assert_allclose(harvest.time_h, float(values["harvest_time_h"]), rtol=1e-12)


@pytest.mark.slow
def test_experiment_runs_and_its_recipe_simulates(tmp_path):
    run_dir = tmp_path / "run"
    small = [
        f"hydra.run.dir={run_dir}",
        "optimize.n_donors=4",
        "optimize.n_eval_donors=8",
        "optimize.starts=2",
        "optimize.steps=3",
        "optimize.pareto_cost_weights=[0.0,1.0]",
        "optimize.pareto_steps=2",
        "optimize.n_bootstrap=50",
        "holdout.n_donors=8",
    ]
    script = REPO_ROOT / "experiments" / "optimize.py"
    result = subprocess.run(
        [sys.executable, str(script), *small], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    for name in (
        "comparison.csv",
        "holdout.csv",
        "decisions.csv",
        "pareto.csv",
        "convergence.png",
        "pareto.png",
        "search.json",
    ):
        assert (run_dir / name).is_file(), name
    for table in ("comparison", "holdout"):
        frame = pd.read_csv(run_dir / f"{table}.csv")
        assert list(frame["recipe"]) == ["start", "gradient", "sobol"]
        assert frame["vector_limit_met"].all()
    assert "unseen process" in result.stdout and "vector limit" in result.stdout
    twin.data.read_events_file(run_dir / "optimized_events.csv")
    simulate = REPO_ROOT / "experiments" / "simulate.py"
    result = subprocess.run(
        [
            sys.executable,
            str(simulate),
            f"--config-dir={run_dir}",
            "recipe=optimized",
            f"hydra.run.dir={tmp_path / 'sim'}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr


def test_population_comes_from_a_calibration(tmp_path):
    from test_forecast import known_calibration

    from twin.calibrate import write_calibration
    from twin.forecast._io import calibration_from_path
    from twin.optimize import population_from_calibration

    sys.path.insert(0, str(REPO_ROOT / "experiments"))
    try:
        import optimize as experiment
    finally:
        sys.path.pop(0)
    calibration = known_calibration()
    write_calibration(calibration, tmp_path / "calibration.nc")
    loaded = calibration_from_path(str(tmp_path))
    assert loaded.structure == calibration.structure
    population = population_from_calibration(loaded)
    expected = population_from_calibration(calibration)
    assert dict(population.donor_sd) == dict(expected.donor_sd)
    np.testing.assert_allclose(population.covariance, expected.covariance)
    donors = population.sample(jax.random.PRNGKey(0), 256)
    # Only the donor-level parameters and the fitted ones vary; the rest stay fixed (up to
    # the covariance's 1e-12 jitter).
    assert np.ptp(np.log(np.asarray(donors.max_growth_rate_per_h))) > 0.1
    assert np.ptp(np.log(np.asarray(donors.lysis_rate_per_h))) < 1e-4

    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="optimize", overrides=[f"calibration={tmp_path / 'missing'}"])
    with pytest.raises(TwinInputError, match="no calibration file"):
        experiment.run(cfg, tmp_path / "out")
