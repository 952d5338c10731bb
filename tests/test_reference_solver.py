"""``simulate`` against an independent reference: scipy's DOP853 in a plain Python event loop.

The reference shares only the model (``culture_vector_field``, the jump maps and the schedule)
with ``simulate``; the event loop, the save-time convention (a save at t is the culture just
before the events at t; t = 0 is the freshly seeded culture; after the end: NaN) and the ODE
solver are written here from the documentation.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy.integrate import solve_ivp

from twin import ModelStructure, SolverSettings, default_parameters, observables, simulate
from twin.kinetics import culture_vector_field, empty_state
from twin.process import (
    EVENT_FIELDS,
    JUMP_MAPS,
    OPERATION_CODE,
    EventValues,
    ExchangeStep,
    FeedStep,
    Recipe,
    pad_schedule,
)

N_SLOTS = 24
TIGHT = SolverSettings(rtol=1e-10, atol=1e-12)
STRUCTURE = ModelStructure()
SAVE_TIMES = np.linspace(0.0, 192.0, 17)
REFERENCE_RTOL, REFERENCE_ATOL = 1e-12, 1e-14
MAX_RELATIVE_DIFFERENCE = 1e-5

CASES = {
    "default": (Recipe(), default_parameters()),
    # other MOI, exchanges and feeds, an earlier harvest (the last save time lies beyond it)
    # and some non-default kinetics
    "other": (
        Recipe(
            seed_cells=6.0e7,
            seed_viability=0.85,
            moi=9.0,
            transduction_time_h=36.0,
            activation_time_h=4.0,
            exchanges=[ExchangeStep(90.0, 0.25), ExchangeStep(132.0, 0.8)],
            feeds=[FeedStep(60.0, 80.0), FeedStep(100.0, 250.0)],
            sample_times_h=[20.0, 36.0, 60.0, 108.0, 150.0, 180.0],
            sample_volume_ml=2.5,
            harvest_time_h=180.0,
        ),
        default_parameters(
            vector_half_life_h=20.0,
            transduction_rate_mL_per_TU_h=2.0e-8,
            max_growth_rate_per_h=0.045,
            lactate_inhibition_mM=25.0,
        ),
    ),
}


class ReferenceSolver:
    """Flat-vector wrapper of the vector field for scipy, and the event loop."""

    def __init__(self, structure: ModelStructure):
        _, self.unravel = ravel_pytree(empty_state(structure))
        self.structure = structure

        @jax.jit
        def rhs(t, y, params):
            return ravel_pytree(culture_vector_field(t, self.unravel(y), params))[0]

        self._rhs = rhs
        self.evaluations = 0

    def _integrate(self, state, t0, t1, params):
        y0, _ = ravel_pytree(state)

        def fun(t, y):
            self.evaluations += 1
            return np.asarray(self._rhs(t, y, params))

        solution = solve_ivp(
            fun,
            (t0, t1),
            np.asarray(y0),
            method="DOP853",
            rtol=REFERENCE_RTOL,
            atol=REFERENCE_ATOL,
        )
        assert solution.success, solution.message
        return self.unravel(jnp.asarray(solution.y[:, -1]))

    def run(self, params, schedule, save_times):
        """(states at save_times as a list (None = after the end), state at the end)."""
        times = np.asarray(schedule.time_h)
        operations = np.asarray(schedule.operation)
        columns = {f: np.asarray(getattr(schedule, f)) for f in EVENT_FIELDS}
        event_times = sorted(set(times.tolist()))
        saved = [None] * len(save_times)
        state = empty_state(self.structure)
        for k, t_event in enumerate(event_times):
            for j, t in enumerate(save_times):
                if t == t_event and t > 0:  # just before the events at t
                    saved[j] = state
            for i in np.flatnonzero(times == t_event):  # the events at t, in schedule order
                values = EventValues(
                    time_h=jnp.asarray(times[i]),
                    **{f: jnp.asarray(columns[f][i]) for f in EVENT_FIELDS},
                )
                state = JUMP_MAPS[int(operations[i])](state, values, params)
                if operations[i] == OPERATION_CODE["seed"]:
                    for j, t in enumerate(save_times):
                        if t == 0.0:
                            saved[j] = state
            if k == len(event_times) - 1:
                break
            t_next = event_times[k + 1]
            inside = [(j, t) for j, t in enumerate(save_times) if t_event < t < t_next]
            t_from = t_event
            for j, t in inside:
                state = self._integrate(state, t_from, t, params)
                saved[j] = state
                t_from = t
            state = self._integrate(state, t_from, t_next, params)
        return saved, state


@pytest.fixture(scope="module")
def reference():
    return ReferenceSolver(STRUCTURE)


@pytest.fixture(scope="module")
def reference_runs(reference):
    """The reference solve of each case, computed once for both solver loops."""
    runs = {}
    for name, (recipe, params) in CASES.items():
        schedule = pad_schedule(recipe.schedule(), N_SLOTS)
        runs[name] = (schedule, *reference.run(params, schedule, SAVE_TIMES))
    return runs


# Both loops of SolverSettings: per segment (lockstep under vmap) and per run (twin._event_loop).
@pytest.fixture(
    scope="module", params=[(c, loop) for c in CASES for loop in ("segments", "events")], ids=str
)
def case(request, reference_runs):
    name, loop = request.param
    recipe, params = CASES[name]
    schedule, saved, end = reference_runs[name]
    solver = dataclasses.replace(TIGHT, loop=loop)
    trajectory = simulate(params, schedule, jnp.asarray(SAVE_TIMES), STRUCTURE, solver)
    return name, recipe, trajectory, saved, end


def assert_close(actual, expected, what):
    """Relative difference <= MAX_RELATIVE_DIFFERENCE; exact zeros must be matched exactly."""
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    zero = expected == 0.0
    assert np.all(actual[zero] == 0.0), (what, actual[zero])
    relative = np.abs(actual[~zero] - expected[~zero]) / np.abs(expected[~zero])
    assert np.all(relative <= MAX_RELATIVE_DIFFERENCE), (what, relative.max())
    return relative.max(initial=0.0)


def test_simulate_succeeds(case):
    _, _, trajectory, _, _ = case
    assert bool(trajectory.success)


def test_observables_at_save_times_match_reference(case):
    _, recipe, trajectory, saved, _ = case
    jax_obs = observables(trajectory.states)
    inside = [j for j, s in enumerate(saved) if s is not None]
    beyond = [j for j, s in enumerate(saved) if s is None]
    assert inside and all(SAVE_TIMES[j] > recipe.harvest_time_h for j in beyond)
    reference_obs = [observables(saved[j]) for j in inside]
    for name, values in jax_obs.items():
        expected = np.array([float(obs[name]) for obs in reference_obs])
        assert_close(np.asarray(values)[inside], expected, name)
    # save times after the schedule's end are NaN in every state component
    for path, leaf in jax.tree_util.tree_leaves_with_path(trajectory.states):
        assert np.all(np.isnan(np.asarray(leaf)[beyond])), jax.tree_util.keystr(path)


@pytest.mark.parametrize(
    "case", [("other", "segments"), ("other", "events")], indirect=True
)  # its last save time is after the end
def test_observables_after_the_end_are_nan(case):
    _, recipe, trajectory, _, _ = case
    beyond = recipe.harvest_time_h < SAVE_TIMES
    assert beyond.any()
    for observable, values in observables(trajectory.states).items():
        assert np.all(np.isnan(np.asarray(values)[beyond])), observable


def test_observables_at_end_match_reference(case):
    _, _, trajectory, _, end = case
    jax_obs = observables(trajectory.end_state)
    reference_obs = observables(end)
    for name in jax_obs:
        assert_close(jax_obs[name], reference_obs[name], name)


def test_full_state_matches_reference(case):
    """Every state component (not only the observables) at the save times and at the end."""
    _, _, trajectory, saved, end = case
    for j, state in enumerate(saved):
        if state is None:
            continue
        jax_state = jax.tree.map(lambda x, j=j: x[j], trajectory.states)
        assert_close(ravel_pytree(jax_state)[0], ravel_pytree(state)[0], f"state at {j}")
    assert_close(ravel_pytree(trajectory.end_state)[0], ravel_pytree(end)[0], "end state")
