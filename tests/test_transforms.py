"""``simulate`` under JAX transforms: grad / jacfwd, vmap, jit (no retracing), padding, and a
failed solve reported as data.

Expensive compiles live in module-scoped fixtures. Every plain run uses one compiled
``simulate`` (24 event slots, 17 save times, tight tolerances), shared with the other test files.
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tree_allclose

from twin import ModelStructure, SolverSettings, default_parameters, observables, simulate
from twin.kinetics import PARAMETER_NAMES, from_unconstrained, to_unconstrained
from twin.process import (
    OPERATION_CODE,
    ExchangeStep,
    FeedStep,
    Recipe,
    pad_schedule,
    stack_schedules,
)

N_SLOTS = 24
STRUCTURE = ModelStructure()
TIGHT = SolverSettings(rtol=1e-10, atol=1e-12)  # adjoint="recursive" (the default)
TIGHT_FORWARD = dataclasses.replace(TIGHT, adjoint="forward")
SAVE_TIMES = jnp.linspace(0.0, 192.0, 17)

# ------------------------------------------------------------------ derivatives

# Transduction and one exchange at times no other event shares, so that moving them keeps the
# event order (and the derivative in their time is an ordinary one).
GRAD_RECIPE = Recipe(
    transduction_time_h=30.0,
    exchanges=[ExchangeStep(110.0, 0.5), ExchangeStep(134.0, 0.5), ExchangeStep(158.0, 0.5)],
)
GRAD_SCHEDULE = pad_schedule(GRAD_RECIPE.schedule(), N_SLOTS)
_operations = np.asarray(GRAD_SCHEDULE.operation)
_times = np.asarray(GRAD_SCHEDULE.time_h)
I_TRANSDUCE = int(np.flatnonzero(_operations == OPERATION_CODE["transduce"])[0])
I_EXCHANGE = int(np.flatnonzero((_operations == OPERATION_CODE["exchange"]) & (_times == 134.0))[0])
# process values: transduce moi, exchange fraction, transduce time, exchange time
PROCESS_NAMES = ("moi", "fraction", "transduction_time_h", "exchange_time_h")
PROCESS0 = jnp.array(
    [
        GRAD_SCHEDULE.moi[I_TRANSDUCE],
        GRAD_SCHEDULE.fraction[I_EXCHANGE],
        GRAD_SCHEDULE.time_h[I_TRANSDUCE],
        GRAD_SCHEDULE.time_h[I_EXCHANGE],
    ]
)
PROCESS_STEPS = np.array([1e-3, 1e-4, 1e-3, 1e-3])  # central-difference steps
PARAMETER_STEP = 1e-4  # on the unconstrained scale
U0 = to_unconstrained(default_parameters())


def with_process(schedule, process):
    moi, fraction, t_transduce, t_exchange = process
    return eqx.tree_at(
        lambda s: (s.moi, s.fraction, s.time_h),
        schedule,
        (
            schedule.moi.at[I_TRANSDUCE].set(moi),
            schedule.fraction.at[I_EXCHANGE].set(fraction),
            schedule.time_h.at[I_TRANSDUCE].set(t_transduce).at[I_EXCHANGE].set(t_exchange),
        ),
    )


def log_car_pos_at_end(u, process, solver=TIGHT):
    """log(viable CAR+ cells) at the end of the run: the scalar we differentiate."""
    params = from_unconstrained(u)
    trajectory = simulate(
        params, with_process(GRAD_SCHEDULE, process), SAVE_TIMES, STRUCTURE, solver
    )
    return jnp.log(observables(trajectory.end_state)["viable_car_pos_cells"])


@pytest.fixture(scope="module")
def finite_differences():
    """Central differences of the scalar (each evaluation reuses the compiled ``simulate``)."""
    d_params = {}
    for name in PARAMETER_NAMES:
        x = getattr(U0, name)

        def at(value, name=name):
            return float(
                log_car_pos_at_end(eqx.tree_at(lambda u: getattr(u, name), U0, value), PROCESS0)
            )

        d_params[name] = (at(x + PARAMETER_STEP) - at(x - PARAMETER_STEP)) / (2 * PARAMETER_STEP)
    d_process = []
    for i, h in enumerate(PROCESS_STEPS):
        up = float(log_car_pos_at_end(U0, PROCESS0.at[i].add(h)))
        down = float(log_car_pos_at_end(U0, PROCESS0.at[i].add(-h)))
        d_process.append((up - down) / (2 * h))
    return d_params, np.array(d_process)


@pytest.fixture(scope="module")
def forward_mode_gradient():
    jacobian = jax.jit(
        jax.jacfwd(lambda u, q: log_car_pos_at_end(u, q, TIGHT_FORWARD), argnums=(0, 1))
    )
    return jacobian(U0, PROCESS0)


@pytest.fixture(scope="module")
def reverse_mode_gradient():
    gradient = jax.jit(jax.grad(lambda u, q: log_car_pos_at_end(u, q, TIGHT), argnums=(0, 1)))
    return gradient(U0, PROCESS0)


def assert_derivatives_match(gradient, finite_differences):
    d_params, d_process = finite_differences
    g_params, g_process = gradient
    for name in PARAMETER_NAMES:
        ad, fd = float(getattr(g_params, name)), d_params[name]
        # rtol 1e-4; the absolute floor only matters for the exactly-zero derivatives (e.g.
        # seed_memory_like_fraction, lysis_rate_per_h, differentiation_*)
        assert abs(ad - fd) <= 1e-4 * abs(fd) + 1e-8, (name, ad, fd)
    for name, ad, fd in zip(PROCESS_NAMES, np.asarray(g_process), d_process, strict=True):
        assert abs(ad - fd) <= 1e-4 * abs(fd), (name, ad, fd)
    # the scalar does depend on the process values and the growth kinetics
    assert np.all(np.abs(d_process) > 1e-3)
    assert abs(d_params["max_growth_rate_per_h"]) > 1e-2


def test_forward_mode_jacfwd_matches_finite_differences(forward_mode_gradient, finite_differences):
    assert_derivatives_match(forward_mode_gradient, finite_differences)


@pytest.mark.slow  # compiling the reverse pass through the recursive checkpointing takes ~45 s
def test_recursive_adjoint_grad_matches_finite_differences(
    reverse_mode_gradient, forward_mode_gradient, finite_differences
):
    assert_derivatives_match(reverse_mode_gradient, finite_differences)
    assert tree_allclose(reverse_mode_gradient, forward_mode_gradient, rtol=1e-8, atol=1e-12)


def test_solver_settings_validate_the_adjoint():
    with pytest.raises(ValueError, match="adjoint"):
        SolverSettings(adjoint="backsolve")


# ------------------------------------------------------------------ vmap and jit

BATCH_RECIPES = [
    Recipe(),  # 17 events
    Recipe(  # 7 events
        moi=2.0,
        exchanges=[],
        feeds=[FeedStep(72.0, 150.0)],
        sample_times_h=[96.0, 192.0],
        harvest_time_h=200.0,
    ),
    Recipe(  # 24 events
        seed_cells=7.0e7,
        moi=8.0,
        transduction_time_h=40.0,
        exchanges=[ExchangeStep(t, 0.4) for t in (100.0, 124.0, 148.0, 172.0)],
        feeds=[FeedStep(50.0, 50.0), FeedStep(76.0, 100.0), FeedStep(90.0, 150.0)],
        sample_times_h=[12.0 * k for k in range(1, 14)],
        harvest_time_h=216.0,
    ),
]
BATCH_PARAMS = [
    default_parameters(),
    default_parameters(max_growth_rate_per_h=0.04, vector_half_life_h=20.0),
    default_parameters(activation_lag_h=40.0, susceptible_fraction=0.6),
]


def stack_params(params):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *params)


@pytest.fixture(scope="module")
def batched_simulate():
    """A jitted, vmapped simulate that counts (and at most allows one) traces."""
    traces = []

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def run(params, schedules, save_times):
        traces.append(None)  # a Python side effect: runs only while tracing
        return jax.vmap(lambda p, s: simulate(p, s, save_times, STRUCTURE, TIGHT))(
            params, schedules
        )

    return run, traces


def test_batch_recipes_have_different_lengths():
    lengths = [r.schedule().n_events for r in BATCH_RECIPES]
    assert len(set(lengths)) == len(lengths)
    assert max(lengths) == N_SLOTS  # so the per-recipe loop reuses the shared compile


def test_vmap_over_mixed_recipes_equals_loop(batched_simulate):
    run, _ = batched_simulate
    schedules = [r.schedule() for r in BATCH_RECIPES]
    batch = stack_schedules(schedules)
    assert batch.time_h.shape == (len(schedules), N_SLOTS)
    batched = run(stack_params(BATCH_PARAMS), batch, SAVE_TIMES)
    assert np.all(np.asarray(batched.success))
    for i, (params, schedule) in enumerate(zip(BATCH_PARAMS, schedules, strict=True)):
        single = simulate(params, pad_schedule(schedule, N_SLOTS), SAVE_TIMES, STRUCTURE, TIGHT)
        assert bool(single.success)
        one = jax.tree.map(lambda x, i=i: x[i], batched)
        assert tree_allclose(one, single, rtol=1e-9, atol=1e-12), i


def test_jit_does_not_retrace_for_new_values(batched_simulate):
    run, traces = batched_simulate
    batch = stack_schedules([r.schedule() for r in BATCH_RECIPES])
    first = run(stack_params(BATCH_PARAMS), batch, SAVE_TIMES)
    n_traces = len(traces)
    assert n_traces == 1
    # new values, same shapes and dtypes: kinetic parameters, event values, event times, saves
    new_params = jax.tree.map(lambda x: 1.01 * x, stack_params(BATCH_PARAMS))
    new_recipes = [
        dataclasses.replace(r, moi=1.5 * r.moi, transduction_time_h=r.transduction_time_h + 2.0)
        for r in BATCH_RECIPES
    ]
    new_batch = stack_schedules([r.schedule() for r in new_recipes])
    assert new_batch.time_h.shape == batch.time_h.shape
    second = run(new_params, new_batch, SAVE_TIMES + 0.5)
    assert len(traces) == n_traces  # no retrace
    assert not np.allclose(np.asarray(first.end_state.vector), np.asarray(second.end_state.vector))


def test_padding_does_not_change_the_result():
    schedule = Recipe().schedule()
    assert schedule.n_events < N_SLOTS
    padded = pad_schedule(schedule, N_SLOTS)
    assert np.all(np.asarray(padded.operation[schedule.n_events :]) == OPERATION_CODE["noop"])
    params = default_parameters()
    plain = simulate(params, schedule, SAVE_TIMES, STRUCTURE, TIGHT)
    longer = simulate(params, padded, SAVE_TIMES, STRUCTURE, TIGHT)
    assert bool(plain.success) and bool(longer.success)
    # Step attempts are counted per slot: padding adds (empty) slots to that count.
    np.testing.assert_array_equal(longer.step_attempts[plain.step_attempts.size :], 0)
    plain, longer = (
        eqx.tree_at(lambda t: t.step_attempts, t, replace=jnp.zeros(0, int))
        for t in (plain, longer)
    )
    assert tree_allclose(plain, longer, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ failures are data


def test_step_budget_exhausted_is_reported_not_raised():
    trajectory = simulate(
        default_parameters(),
        pad_schedule(Recipe().schedule(), N_SLOTS),
        SAVE_TIMES,
        STRUCTURE,
        SolverSettings(max_steps=2),
    )
    jax.block_until_ready(trajectory)
    assert trajectory.success.shape == ()
    assert not bool(trajectory.success)


def test_stiff_parameters_fail_softly():
    """An activation lag of ~1e-7 h makes the lag chain far too stiff for Tsit5 in 4096 steps."""
    few_events = Recipe(exchanges=[], feeds=[], sample_times_h=[])  # two long segments
    trajectory = simulate(
        default_parameters(activation_lag_h=1e-7),
        pad_schedule(few_events.schedule(), N_SLOTS),
        SAVE_TIMES,
        STRUCTURE,
        TIGHT,
    )
    assert not bool(trajectory.success)
