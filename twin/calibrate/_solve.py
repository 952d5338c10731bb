"""Levenberg-Marquardt on the block-structured residuals, from several starts.

A small dedicated Levenberg-Marquardt loop rather than ``optimistix.LevenbergMarquardt``. Each
iteration evaluates the residuals at the trial point and, only if the step is accepted, the
Jacobian assembled from per-run blocks (:func:`~._model.residuals_and_jacobian`, six to eight
times the cost of the residuals), so a rejected step costs a fraction of an accepted one; the loop
keeps the Jacobian at the optimum for the Laplace approximation. Measured on 36 runs / 12 donors
(``experiments/benchmark_calibration.py``): optimistix on the same structured residuals (a
``custom_jvp``) needed 51 steps to the same optimum where this loop needs 18, at a similar
cost per step, and the Jacobian at its optimum would have to be computed (and compiled) again.

Damping follows Nielsen (1999), with the damping term scaled by the prior precision: the trust
region is an ellipsoid measured in prior SDs, independent of the current Jacobian, and the first
step is damped as if the prior were twice as tight. (Marquardt's ``diag(J^T J)`` scaling
zig-zagged for 60+ steps on the misspecified example dataset, where a weakly identified fraction
sits near 1; prior scaling converged in 19, and in 18 on the 36-run benchmark, where
``diag(J^T J)`` took 24.) A step is accepted when the objective drops by a positive fraction of
the drop the quadratic model predicts. The fit has converged when the Gauss-Newton decrement
``0.5 g^T (J^T J)^-1 g`` (the improvement the local quadratic model still promises, in
objective units) is below ``decrement_tol``.
"""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int
from tqdm import tqdm

from ._checkpoint import checkpointed, fingerprint
from ._config import CalibrationConfig
from ._model import (
    ModelSpec,
    ObjectiveData,
    prior_scales,
    residuals_and_jacobian,
    residuals_and_success,
)


class LMOptions(eqx.Module):
    """Settings of the Levenberg-Marquardt loop (dynamic: changing them does not recompile).

    - ``max_steps``: budget of trial points (each costs one Jacobian of every run); 0 just
      evaluates the residuals, Jacobian and gradient at the start.
    - ``decrement_tol``: convergence when the Gauss-Newton decrement is below this
      (objective units: one datum one noise SD off contributes 0.5), or below
      ``decrement_tol_relative`` times the objective (0: off), a floor for large objectives
      whose last digits the ODE solver's tolerance no longer resolves.
    - ``initial_damping``: the first damping factor, relative to the prior precision.
    """

    max_steps: int = 60
    decrement_tol: float = 1.0e-4
    initial_damping: float = 1.0
    decrement_tol_relative: float = 0.0

    @classmethod
    def from_config(cls, config: CalibrationConfig) -> LMOptions:
        """The loop settings a calibration config (``fit.*``) asks for."""
        return cls(
            max_steps=config.max_steps,
            decrement_tol=config.decrement_tol,
            decrement_tol_relative=config.decrement_tol_relative,
        )

    def threshold(self, r: Float[Array, " residuals"]) -> Float[Array, ""]:
        """The decrement below which a fit at residuals ``r`` has converged."""
        return jnp.maximum(self.decrement_tol, self.decrement_tol_relative * 0.5 * (r @ r))


class LMResult(eqx.Module):
    """The outcome of one start (add a leading ``starts`` axis when vmapped).

    ``residuals`` and ``jacobian`` are at ``x``; ``run_success`` flags the runs whose solve
    succeeded there; ``steps`` counts trial points, ``accepted_steps`` the accepted ones and
    ``failed_evaluations`` the points (start included) where some run's ODE solve failed.
    """

    x: Float[Array, " unknowns"]
    objective: Float[Array, ""]
    gradient_norm: Float[Array, ""]  # max-norm of J^T r
    decrement: Float[Array, ""]
    steps: Int[Array, ""]
    accepted_steps: Int[Array, ""]
    failed_evaluations: Int[Array, ""]
    converged: Bool[Array, ""]
    residuals: Float[Array, " residuals"]
    jacobian: Float[Array, "residuals unknowns"]
    run_success: Bool[Array, " runs"]


class _State(eqx.Module):
    x: Float[Array, " unknowns"]  # the last accepted point, with its r, J and run success
    r: Float[Array, " residuals"]
    jacobian: Float[Array, "residuals unknowns"]
    run_success: Bool[Array, " runs"]
    trial: Float[Array, " unknowns"]  # the point to evaluate next
    predicted: Float[Array, ""]  # the objective decrease the quadratic model predicts there
    damping: Float[Array, ""]
    growth: Float[Array, ""]  # Nielsen's nu
    first: Bool[Array, ""]  # nothing evaluated yet: the trial is the start, accepted as is
    steps: Int[Array, ""]
    accepted_steps: Int[Array, ""]
    failed_evaluations: Int[Array, ""]


def _gauss_newton(r, jacobian):
    """Gradient, Gauss-Newton Hessian and decrement ``0.5 g^T H^-1 g`` (H is positive definite:
    every unknown has a prior row)."""
    gradient = jacobian.T @ r
    hessian = jacobian.T @ jacobian
    factor = jax.scipy.linalg.cho_factor(hessian)
    decrement = 0.5 * gradient @ jax.scipy.linalg.cho_solve(factor, gradient)
    return gradient, hessian, decrement


def levenberg_marquardt(
    x0: Float[Array, " unknowns"], data: ObjectiveData, spec: ModelSpec, options: LMOptions
) -> LMResult:
    """Minimize ``0.5 |r(x)|^2`` from ``x0`` (pure; ``jit``/``vmap`` it).

    The start is evaluated by the loop's first pass, so the program holds one copy of the
    expensive residual-and-Jacobian evaluation (it dominates compile time).
    """
    n_residuals = data.arrays.observed.size + x0.size  # assay residuals, then one prior each
    prior_precision = prior_scales(data.prior, spec.layout) ** -2
    init = _State(
        x=x0,
        r=jnp.zeros(n_residuals, x0.dtype),
        jacobian=jnp.zeros((n_residuals, x0.size), x0.dtype),
        run_success=jnp.zeros(data.arrays.n_runs, bool),
        trial=x0,
        predicted=jnp.asarray(0.0, x0.dtype),
        damping=jnp.asarray(options.initial_damping, x0.dtype),
        growth=jnp.asarray(2.0, x0.dtype),
        first=jnp.asarray(True),
        steps=jnp.asarray(0),
        accepted_steps=jnp.asarray(0),
        failed_evaluations=jnp.asarray(0),
    )

    def keep_going(state: _State):
        _, _, decrement = _gauss_newton(state.r, state.jacobian)
        return state.first | (
            (decrement > options.threshold(state.r))
            & (state.steps < options.max_steps)
            & (state.damping < 1e16)
        )

    def step(state: _State) -> _State:
        # Residuals first; the Jacobian (several times their cost) only where the step is accepted.
        r, ok = residuals_and_success(state.trial, data, spec)
        actual = 0.5 * (state.r @ state.r - r @ r)
        ratio = actual / state.predicted
        accept = state.first | (jnp.isfinite(actual) & (state.predicted > 0) & (ratio > 1e-4))
        shrink = jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3)
        damping = jnp.where(accept, state.damping * shrink, state.damping * state.growth)
        damping = jnp.where(state.first, state.damping, damping)
        x = jnp.where(accept, state.trial, state.x)
        r = jnp.where(accept, r, state.r)
        jacobian = jax.lax.cond(
            accept,
            lambda: residuals_and_jacobian(state.trial, data, spec)[1],
            lambda: state.jacobian,
        )

        gradient, hessian, _ = _gauss_newton(r, jacobian)
        delta = -jnp.linalg.solve(hessian + damping * jnp.diag(prior_precision), gradient)
        evaluated = (~state.first).astype(int)
        return _State(
            x=x,
            r=r,
            jacobian=jacobian,
            run_success=jnp.where(accept, ok, state.run_success),
            trial=x + delta,
            predicted=-(gradient @ delta + 0.5 * delta @ hessian @ delta),
            damping=damping,
            growth=jnp.where(accept, 2.0, 2.0 * state.growth),
            first=jnp.asarray(False),
            steps=state.steps + evaluated,
            accepted_steps=state.accepted_steps + evaluated * accept.astype(int),
            failed_evaluations=state.failed_evaluations + (~jnp.all(ok)).astype(int),
        )

    final = jax.lax.while_loop(keep_going, step, init)
    gradient, _, decrement = _gauss_newton(final.r, final.jacobian)
    return LMResult(
        x=final.x,
        objective=0.5 * final.r @ final.r,
        gradient_norm=jnp.max(jnp.abs(gradient)),
        decrement=decrement,
        steps=final.steps,
        accepted_steps=final.accepted_steps,
        failed_evaluations=final.failed_evaluations,
        converged=decrement <= options.threshold(final.r),
        residuals=final.r,
        jacobian=final.jacobian,
        run_success=final.run_success,
    )


fit_one = jax.jit(levenberg_marquardt, static_argnames="spec")
"""Compiled :func:`levenberg_marquardt` (once per data shape and model spec)."""


def draw_starts(
    key: jax.Array, mean: np.ndarray, sd: np.ndarray, n_effects: int, n_starts: int, spread: float
) -> np.ndarray:
    """Starting points ``[n_starts, unknowns]``: the prior mean first, then the prior mean plus
    ``spread`` prior SDs times a standard normal draw; donor effects start at zero."""
    z = np.array(jax.random.normal(key, (n_starts, mean.size)))
    z[0] = 0.0
    population = mean[None, :] + spread * sd[None, :] * z
    return np.concatenate([population, np.zeros((n_starts, n_effects))], axis=1)


def multistart(
    starts: np.ndarray,
    data: ObjectiveData,
    spec: ModelSpec,
    options: LMOptions,
    *,
    description: str = "fit",
    progress: bool = True,
) -> list[tuple[LMResult, float]]:
    """Fit from each start in turn (one compiled function; a progress bar over the starts).

    Starts run one after another rather than vmapped: a vmapped loop runs every start for as
    many steps as the slowest, with every run's ODE solve as slow as the stiffest. Measured on
    36 runs, 4 starts vmapped: one start stalled for the full 60 steps, so all four ran 60
    (240 start-steps, 400 s), where in turn they need 15 + 14 + 60 + 22 = 111 steps; the runs
    axis already fills the 2 cores, so vmapping starts gains no parallelism.

    **Returns:** each start's result (NumPy leaves) and wall time (s).
    """
    outcomes = []
    for x0 in tqdm(starts, desc=description, unit="start", disable=not progress, leave=False):

        def fit(x0=x0):
            began = time.perf_counter()
            result = jax.tree.map(np.asarray, fit_one(jnp.asarray(x0), data, spec, options))
            return result, time.perf_counter() - began

        # Resumable: a finished start is read back from its checkpoint (see _checkpoint.py).
        key = lambda x0=x0: fingerprint(x0, data, spec, options)  # noqa: E731
        outcomes.append(checkpointed(fit, key, LMResult))
    return outcomes
