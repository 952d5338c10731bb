"""``SolverSettings(loop="events")``: one adaptive loop per run that crosses its own events.

Its accuracy against the independent reference solver is checked in
``test_reference_solver.py`` (both loops). Here: a run's answer does not depend on the other
runs of its ``vmap`` batch (finished and failed runs are frozen, not stepped on), failures are
marked as the segment solver marks them, derivatives (in kinetic parameters and in event
times) match central differences, and the step statistics add up.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from twin import SolverSettings, default_parameters, observables, simulate
from twin.process import Recipe, pad_schedule, recipe_values, schedule_from_values, stack_schedules
from twin.simulate import lockstep_efficiency, result_names

EVENTS = SolverSettings(loop="events")
SAVE_TIMES = jnp.array([30.0, 96.0, 150.0])
N_SLOTS = 24


def _case(moi, growth, harvest_h):
    recipe = dataclasses.replace(Recipe(), moi=moi, harvest_time_h=harvest_h)
    params = default_parameters(max_growth_rate_per_h=growth)
    return params, pad_schedule(recipe.schedule(), N_SLOTS)


# Different pace per run: a slow-growing, an average and a fast, glucose-depleting culture.
CASES = [_case(2.0, 0.02, 200.0), _case(5.0, 0.035, 240.0), _case(9.0, 0.06, 264.0)]


def _batch(cases):
    params = jax.tree.map(lambda *x: jnp.stack(x), *[p for p, _ in cases])
    schedules = stack_schedules([s for _, s in cases])
    return params, schedules


@pytest.fixture(scope="module")
def batched():
    params, schedules = _batch(CASES)
    run = jax.jit(jax.vmap(lambda p, s: simulate(p, s, SAVE_TIMES, solver=EVENTS)))
    return run(params, schedules)


def _run(trajectories, i):
    return jax.tree.map(lambda x: x[i], trajectories)


def test_each_run_of_a_batch_gets_what_it_gets_alone(batched):
    for i, (params, schedule) in enumerate(CASES):
        alone = simulate(params, schedule, SAVE_TIMES, solver=EVENTS)
        in_batch = _run(batched, i)
        assert bool(alone.success) and bool(in_batch.success)
        assert int(in_batch.accepted_steps) == int(alone.accepted_steps)
        # Rounding differs between the batched and the single program (seen: 3e-7 of a
        # value of 6e-9, i.e. 2e-15 absolute, in a glucose-depleted culture); a run stepped on
        # while it should have been frozen would be off by the solver's tolerance (1e-6
        # relative, 1e-8 absolute) or more.
        for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(in_batch), strict=True):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-7, atol=1e-13)


def test_runs_take_their_own_number_of_steps_and_efficiency_counts_them(batched):
    accepted = np.asarray(batched.accepted_steps)
    attempts = np.asarray(batched.step_attempts)
    assert len(set(accepted.tolist())) == 3  # the runs did not step in lockstep
    assert np.all(attempts.sum(axis=1) >= accepted)
    expected = accepted.mean() / attempts.sum(axis=1).max()
    assert lockstep_efficiency(batched, "events") == pytest.approx(expected)
    assert 0 < expected <= 1


def test_step_budget_failure_is_marked_like_the_segment_solver():
    params, schedule = CASES[1]
    results = {}
    for loop in ("segments", "events"):
        solver = SolverSettings(max_steps=8, loop=loop)
        trajectory = simulate(params, schedule, SAVE_TIMES, solver=solver)
        results[loop] = str(result_names(trajectory.result))
        assert np.all(np.isnan(np.asarray(jax.tree.leaves(trajectory.end_state)[0])))
        assert np.isnan(np.asarray(observables(trajectory.states)["viable_cells"])[-1])
    assert results == {"segments": "max_steps_reached", "events": "max_steps_reached"}


def test_a_failed_run_does_not_disturb_the_others():
    """A run with a non-finite parameter is marked failed in the batch; the others keep their
    answers to rounding."""
    bad_params = default_parameters(max_growth_rate_per_h=jnp.nan)
    cases = [CASES[0], (bad_params, CASES[0][1]), CASES[2]]
    params, schedules = _batch(cases)
    batch = jax.vmap(lambda p, s: simulate(p, s, SAVE_TIMES, solver=EVENTS))(params, schedules)
    assert np.asarray(batch.success).tolist() == [True, False, True]
    assert np.all(np.isnan(np.asarray(observables(_run(batch, 1).states)["viable_cells"])))
    for i in (0, 2):
        alone = simulate(*cases[i], SAVE_TIMES, solver=EVENTS)
        np.testing.assert_allclose(
            np.asarray(observables(_run(batch, i).end_state)["viable_cells"]),
            np.asarray(observables(alone.end_state)["viable_cells"]),
            rtol=1e-8,
        )


def _harvest_viable(theta, solver):
    """Viable cells at harvest as a function of (growth rate, harvest time)."""
    growth, harvest_h = theta
    recipe = Recipe()
    values = recipe_values(recipe)
    values["harvest_time_h"] = harvest_h
    schedule = schedule_from_values(recipe, values)
    params = default_parameters(max_growth_rate_per_h=growth)
    end = simulate(params, schedule, SAVE_TIMES, solver=solver).end_state
    return observables(end)["viable_cells"] / 1e9


def test_forward_mode_derivatives_match_central_differences():
    """In a kinetic parameter and in an event time (the harvest), at tight tolerances."""
    solver = SolverSettings(rtol=1e-10, atol=1e-12, loop="events", adjoint="forward")
    theta = jnp.array([0.035, 230.0])
    f = jax.jit(lambda th: _harvest_viable(th, solver))
    gradient = np.asarray(jax.jacfwd(f)(theta))
    for i, h in enumerate([1e-6, 1e-3]):
        step = np.zeros(2)
        step[i] = h
        central = (float(f(theta + step)) - float(f(theta - step))) / (2 * h)
        assert gradient[i] == pytest.approx(central, rel=1e-5), i


@pytest.mark.slow  # one more compile (checkpointed reverse mode)
def test_reverse_mode_gradient_equals_forward_mode():
    theta = jnp.array([0.035, 230.0])
    forward = SolverSettings(loop="events", adjoint="forward")
    reverse = SolverSettings(loop="events", adjoint="recursive")
    g_forward = jax.jacfwd(lambda th: _harvest_viable(th, forward))(theta)
    g_reverse = jax.grad(lambda th: _harvest_viable(th, reverse))(theta)
    np.testing.assert_allclose(np.asarray(g_reverse), np.asarray(g_forward), rtol=1e-8)
