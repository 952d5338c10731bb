"""Failures as data and property-based checks of the solver (Hypothesis).

All solves share one compile with tests/test_conservation.py (same slot count, save times,
structure and solver settings): in a full run this module adds only the solves themselves.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from twin import SolverSettings, default_parameters, observables, simulate
from twin.process import Downstream, ExchangeStep, FeedStep, Recipe, pad_schedule
from twin.simulate import SolveResult, result_names
from twin.trajectories import trajectory_dataset

N_SLOTS = 24
TIGHT = SolverSettings(rtol=1e-10, atol=1e-12)
SAVE_TIMES = np.linspace(0.0, 192.0, 17)
# A transduction rate 1e7 times the default makes the transduction stiff for the explicit
# solver: the step budget runs out in the segment after the transduction at 24 h.
STIFF = default_parameters(transduction_rate_mL_per_TU_h=0.1)


def solve(params, recipe: Recipe):
    schedule = pad_schedule(recipe.schedule(), N_SLOTS)
    trajectory = simulate(params, schedule, jnp.asarray(SAVE_TIMES), solver=TIGHT)
    return schedule, jax.tree.map(np.asarray, trajectory)


def invariant(state):
    """Cells seeded (millions, viable + dead): conserved across growth, death and events."""
    return state.viable + state.dead + state.lysed + state.removed - state.born


@pytest.fixture(scope="module")
def failed():
    return solve(STIFF, Recipe())


def test_a_failed_solve_says_why_and_is_not_continued(failed):
    schedule, trajectory = failed
    assert not bool(trajectory.success)
    assert str(result_names(trajectory.result)) == "max_steps_reached"
    assert "maximum number of solver steps" in SolveResult[trajectory.result]
    viable = observables(trajectory.states)["viable_cells"]
    before = SAVE_TIMES <= 24.0  # saves up to the transduction's: the culture before it
    assert np.all(np.isfinite(viable[before]))
    assert np.all(np.isnan(viable[~before]))  # never continued from where the solve stopped
    assert all(np.all(np.isnan(leaf)) for leaf in jax.tree.leaves(trajectory.end_state))


def test_trajectory_file_of_a_failed_solve_holds_no_plausible_numbers(failed):
    schedule, trajectory = failed
    dataset = trajectory_dataset(trajectory, schedule, Downstream())
    assert dataset.attrs["solver_result"] == "max_steps_reached"
    assert float(dataset["solver_success"]) == 0.0
    for name in ("car_pos_fraction", "vcn_per_cell", "viable_cells"):
        assert np.all(np.isnan(dataset[name].values[SAVE_TIMES > 24.0])), name
    for name in ("harvest_car_pos_fraction", "harvest_vcn_per_cell", "doses"):
        assert np.isnan(float(dataset[name])), name
    assert float(dataset["conforming"]) == 0.0


@pytest.mark.slow  # a compile of its own (the vmapped solve)
def test_failed_and_successful_runs_batch_together():
    """Under vmap a failed run neither delays nor changes the others (read as data)."""
    schedule = pad_schedule(Recipe().schedule(), N_SLOTS)
    params = jax.tree.map(lambda a, b: jnp.stack([a, b]), default_parameters(), STIFF)
    batch = jax.vmap(lambda p: simulate(p, schedule, jnp.asarray(SAVE_TIMES), solver=TIGHT))(params)
    assert list(result_names(batch.result)) == ["successful", "max_steps_reached"]
    _, alone = solve(default_parameters(), Recipe())
    np.testing.assert_allclose(
        np.asarray(batch.states.viable[0]), alone.states.viable, rtol=1e-12, atol=0
    )


def test_same_inputs_give_bit_identical_results():
    _, first = solve(default_parameters(), Recipe())
    _, second = solve(default_parameters(), Recipe())
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second), strict=True):
        assert np.array_equal(a, b, equal_nan=True)


SAMPLE_GRID_H = (24.0, 48.0, 72.0, 96.0, 120.0, 144.0, 168.0)


@st.composite
def cases(draw):
    """A valid random recipe (fits the cartridge and N_SLOTS) and perturbed parameters."""
    transduction_h = draw(st.floats(6.0, 48.0))
    n_feeds = draw(st.integers(0, 2))
    feed_times = sorted(draw(st.lists(st.floats(50.0, 150.0), min_size=n_feeds, max_size=n_feeds)))
    feeds = [FeedStep(t, draw(st.floats(10.0, 250.0))) for t in feed_times]
    n_exchanges = draw(st.integers(0, 2))
    times = sorted(draw(st.lists(st.floats(60.0, 180.0), min_size=n_exchanges, max_size=2)))
    exchanges = [ExchangeStep(t, draw(st.floats(0.1, 0.9))) for t in times]
    recipe = Recipe(
        seed_cells=draw(st.floats(2.0e7, 3.0e8)),
        seed_viability=draw(st.floats(0.6, 0.99)),
        seed_volume_ml=draw(st.floats(50.0, 150.0)),
        transduction_time_h=transduction_h,
        moi=draw(st.floats(0.0, 10.0)),
        feeds=feeds,
        exchanges=exchanges,
        sample_times_h=draw(st.lists(st.sampled_from(SAMPLE_GRID_H), unique=True, max_size=7)),
        sample_volume_ml=draw(st.floats(0.5, 3.0)),
        harvest_time_h=192.0,
    )

    def factor():
        return float(np.exp(draw(st.floats(np.log(0.3), np.log(3.0)))))

    base = default_parameters()
    params = default_parameters(
        max_growth_rate_per_h=float(base.max_growth_rate_per_h) * factor(),
        base_death_rate_per_h=float(base.base_death_rate_per_h) * factor(),
        lysis_rate_per_h=float(base.lysis_rate_per_h) * factor(),
        transduction_rate_mL_per_TU_h=float(base.transduction_rate_mL_per_TU_h) * factor(),
        glucose_per_new_cell_pmol=float(base.glucose_per_new_cell_pmol) * factor(),
    )
    return recipe, params


# Few examples, derandomized (the same ones in CI every time), one compile for all of them.
@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases())
def test_random_valid_recipes_stay_physical_or_are_marked_failed(case):
    recipe, params = case
    _, trajectory = solve(params, recipe)
    states = (trajectory.states, trajectory.end_state)
    if not bool(trajectory.success):  # a marked failure: the numbers after it are NaN
        assert str(result_names(trajectory.result)) != "successful"
        assert all(np.all(np.isnan(leaf)) for leaf in jax.tree.leaves(trajectory.end_state))
        return
    seeded = recipe.seed_cells / 1e6 / recipe.seed_viability
    for state in states:
        for leaf in jax.tree.leaves(state):
            assert np.all(np.isfinite(leaf))
            assert np.min(leaf) >= -1e-9 * seeded  # no negative cell counts (or volumes)
        np.testing.assert_allclose(invariant(state), seeded, rtol=1e-7)  # cells conserved
    obs = observables(trajectory.states)
    assert np.all((obs["car_pos_fraction"] >= 0) & (obs["car_pos_fraction"] <= 1 + 1e-12))
    transduced = obs["car_pos_fraction"] * obs["viable_cells"] > 1.0  # at least one cell
    vcn = obs["vcn_per_transduced_cell"][transduced]
    assert np.all(vcn >= 1 - 1e-9)  # a transduced cell carries at least one copy
