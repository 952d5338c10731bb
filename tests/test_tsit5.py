"""``StackedTsit5`` against diffrax's own ``Tsit5``: the same method with another data layout, so
the same accepted steps and the same answers to rounding, values and forward-mode derivatives."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from twin import Recipe, SolverSettings, default_parameters, simulate
from twin._tsit5 import StackedTsit5
from twin.process import pad_schedule


def _lotka_volterra(t, y, args):
    prey, predator = y["prey"], y["predator"]
    return {
        "prey": args[0] * prey - prey * predator.sum(-1, keepdims=True),
        "predator": predator * (prey - args[1]) + 0.1 * jnp.sin(t),
    }


def _solve(solver, args):
    y0 = {"prey": jnp.array([1.5]), "predator": jnp.array([0.4, 0.6])}
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(_lotka_volterra),
        solver,
        0.0,
        15.0,
        0.1,
        y0,
        args=args,
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-10),
        adjoint=diffrax.ForwardMode(),
    )
    return solution.ys, solution.stats["num_accepted_steps"], solution.stats["num_rejected_steps"]


def test_same_steps_and_solution_as_diffrax_tsit5():
    args = jnp.array([1.1, 0.9])
    ours, ours_accepted, ours_rejected = _solve(StackedTsit5(), args)
    theirs, accepted, rejected = _solve(diffrax.Tsit5(), args)
    assert int(ours_accepted) == int(accepted) > 50  # a non-trivial solve, step for step
    assert int(ours_rejected) == int(rejected)
    for name in ("prey", "predator"):
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-11)


def test_forward_mode_derivatives_match_diffrax_tsit5():
    def end(solver):
        return jax.jacfwd(lambda a: _solve(solver, a)[0]["predator"])(jnp.array([1.1, 0.9]))

    np.testing.assert_allclose(end(StackedTsit5()), end(diffrax.Tsit5()), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("made_jump", [True, False])
def test_step_after_a_jump_reevaluates_the_first_stage(made_jump):
    """A jump changes the state at ``t0``: the carried first-same-as-last derivative is stale
    and must be recomputed, as in diffrax's Tsit5."""
    term = diffrax.ODETerm(lambda t, y, args: -y)
    solver = StackedTsit5()
    stale = solver.init(term, 0.0, 1.0, jnp.array([5.0]), None)  # derivative before the jump
    y0 = jnp.array([1.0])
    y1, *_ = solver.step(term, 0.0, 0.1, y0, None, stale, jnp.asarray(made_jump))
    if made_jump:
        np.testing.assert_allclose(y1, np.exp(-0.1), rtol=1e-7)
    else:  # proves the flag matters: the stale derivative gives another answer
        assert abs(float(y1[0]) - np.exp(-0.1)) > 1e-2


def test_simulate_matches_diffrax_tsit5():
    schedule = pad_schedule(Recipe().schedule(), 24)
    save_times_h = jnp.linspace(0.0, 190.0, 12)

    def trajectory(solver):
        settings = SolverSettings(solver=solver)
        run = simulate(default_parameters(), schedule, save_times_h, solver=settings)
        return ravel_pytree(run.states)[0]

    ours, theirs = trajectory("tsit5"), trajectory("diffrax_tsit5")
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)
