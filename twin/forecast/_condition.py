"""Condition each run's donor effects on the run's own measurements (the calibration is the prior).

For run ``r`` the unknowns are its donor-level effects ``b`` (estimation scale). The population
values stay at the calibration's estimate; the prior on ``b`` is the calibration's posterior of
that donor's effects when the donor was in the calibration data (and ``use_known_donors``), else
a new donor's ``N(0, omega^2)``. The MAP of ``b`` is found by a fixed number of
Levenberg-Marquardt steps on the whitened residuals ``[assay residuals / noise SD,
L^-1 (b - prior mean)]``, and its posterior covariance by the Laplace approximation
``(J^T J)^-1``. All runs are solved at once (``vmap``), with forward-mode Jacobians through the
ODE solve.

The loop is written out (a ``lax.scan`` of damped Gauss-Newton steps) rather than taken from
optimistix: with only a handful of unknowns it needs one forward-mode Jacobian (which brings
the residuals with it) per step, and it compiled in a fraction of the time (measured: optimistix's
``LevenbergMarquardt`` under ``vmap`` took 161 s to compile on the 2-core machine). Evaluating
only at each step's candidate (accepted or not) traces the ODE solve once: 20 signal-plant runs
conditioned in 28.8 s from cold (2.8 s again) against 49.3 s (4.4 s) when each step also
evaluated the candidate's residuals apart, with the same estimates to 3 decimals.
"""

from __future__ import annotations

import logging

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .._errors import TwinInputError
from ..assays import MEASURED_VARIABLES, student_t_residual
from ..calibrate import Calibration, CalibrationArrays
from ..calibrate._model import (
    ModelSpec,
    ParameterLayout,
    Prior,
    make_prior,
    map_runs_on_all_devices,
    run_residuals,
)

log = logging.getLogger(__name__)


class RunPosterior(eqx.Module):
    """Per run (leading axis): MAP donor effects, their covariance, and fit diagnostics."""

    effects: Float[Array, "runs donor_level"]
    covariance: Float[Array, "runs donor_level donor_level"]
    objective: Float[Array, " runs"]
    converged: Bool[Array, " runs"]
    solve_success: Bool[Array, " runs"]


def structure_run_level_sd(
    calibration: Calibration, run_level_sd: dict[str, float]
) -> dict[str, float]:
    """``run_level_sd`` without the form parameters the calibration's model structure never
    reads (e.g. ``growth_decline_floor`` of a calibration without the floor, one written
    before it existed), as calibration leaves them unfitted; says which, once."""
    unused = set(calibration.structure.unused_parameters)
    dropped = [name for name in run_level_sd if name in unused]
    if dropped:
        log.info(
            "forecast.run_level_sd: not conditioning %s: model structure %s does not use it",
            ", ".join(dropped),
            calibration.structure.describe(),
        )
    return {name: sd for name, sd in run_level_sd.items() if name not in unused}


def conditioned_positions(calibration: Calibration, run_level_sd: dict[str, float]) -> np.ndarray:
    """Positions within ``calibration.fitted`` of what each run conditions: the donor-level
    parameters, then those of ``run_level_sd`` (see :func:`effect_prior`).

    **Raises:** :class:`TwinInputError` for a name that is not fitted, already donor-level,
    or an SD that is not positive.
    """
    for name, sd in run_level_sd.items():
        if name not in calibration.fitted or name in calibration.donor_level:
            free = [n for n in calibration.fitted if n not in calibration.donor_level]
            raise TwinInputError(
                f"forecast.run_level_sd.{name}: not a fitted population-level parameter of "
                f"the calibration (choose from {free}; drop it with "
                f"'~forecast.run_level_sd.{name}')"
            )
        if not sd > 0:
            raise TwinInputError(f"forecast.run_level_sd.{name}={sd!r}: must be > 0")
    names = [*calibration.donor_level, *run_level_sd]
    return np.array([calibration.fitted.index(n) for n in names], dtype=int)


def effect_prior(
    calibration: Calibration,
    donor_ids: list[str],
    use_known_donors: bool,
    run_level_sd: dict[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Prior mean ``[runs, q + e]`` and covariance ``[runs, q + e, q + e]`` of each run's
    deviations from the population estimate, for the positions of
    :func:`conditioned_positions`.

    The ``q`` donor-level entries: the donor's calibrated effects (a known donor) or a new
    donor's ``N(0, omega^2)``. The ``e`` entries of ``run_level_sd``: parameters the
    calibration shares by all runs, let vary by run here with SD ``run_level_sd[name]`` on the
    estimation scale on top of the population uncertainty, a model-discrepancy allowance
    that lets a run's own data correct them (independent of the donor-level entries).
    """
    run_level_sd = run_level_sd or {}
    p, q, e = len(calibration.fitted), len(calibration.donor_level), len(run_level_sd)
    extra = conditioned_positions(calibration, run_level_sd)[q:]
    covariance = np.zeros((q + e, q + e))
    covariance[:q, :q] = np.diag(calibration.donor_sd**2)
    covariance[q:, q:] = calibration.covariance[np.ix_(extra, extra)] + np.diag(
        np.asarray(list(run_level_sd.values()), float) ** 2
    )
    means = np.zeros((len(donor_ids), q + e))
    covariances = np.broadcast_to(covariance, (len(donor_ids), q + e, q + e)).copy()
    for i, donor in enumerate(donor_ids):
        if use_known_donors and donor in calibration.donor_ids:
            d = calibration.donor_ids.index(donor)
            block = slice(p + d * q, p + (d + 1) * q)
            means[i, :q] = calibration.donor_effects[d]
            covariances[i, :q, :q] = calibration.covariance[block, block]
    return means, covariances


def heavy_tailed(z: Float[Array, " n"], dof: Float[Array, ""]) -> Float[Array, " n"]:
    """Whitened prior residuals ``z`` recast for a Student-t prior with ``nu = dof``:
    ``r^2 / 2 = (nu / 2) log(1 + z^2 / nu)``, the t's negative log-density
    (:func:`~twin.assays.student_t_residual`) times ``nu / (nu + 1)``, so that near 0 it
    costs what the normal's ``z^2 / 2`` does; ``dof = inf``: ``z`` itself."""
    finite = jnp.isfinite(dof)
    nu = jnp.where(finite, dof, 1.0)
    return jnp.where(finite, student_t_residual(z, nu) * jnp.sqrt(nu / (nu + 1.0)), z)


def _spec_and_prior(calibration: Calibration) -> tuple[ModelSpec, Prior]:
    layout = ParameterLayout(calibration.fitted, calibration.donor_level, n_donors=1)
    spec = ModelSpec(
        layout, calibration.structure, calibration.solver, likelihood=calibration.likelihood
    )
    prior = make_prior(calibration.model_parameters, layout, calibration.donor_sd)
    return spec, prior


def condition_runs(
    calibration: Calibration,
    arrays: CalibrationArrays,
    prior_mean: Float[Array, "runs donor_level"],
    prior_covariance: Float[Array, "runs donor_level donor_level"],
    position: np.ndarray | None = None,
    *,
    max_steps: int = 20,
    memory_h: float | None = None,
    prior_dof: float | None = None,
) -> RunPosterior:
    """MAP and Laplace covariance of each run's deviations from the population estimate at
    ``position`` (within ``calibration.fitted``; default: the donor-level parameters) given
    its measurements and the prior of :func:`effect_prior`.

    ``memory_h``: exponential forgetting. A measurement taken ``a`` hours before the run's
    latest one counts with weight ``exp(-a / memory_h)`` in the likelihood (its SD is inflated
    by ``exp(a / (2 memory_h))``), so that where the model is wrong the run's recent state,
    which decides what comes next, outweighs its early history. ``None``: all count alike.

    ``prior_dof``: a Student-t prior with these degrees of freedom instead of the normal one
    (:func:`heavy_tailed`): a donor far out in the tail is shrunk less, one near the
    population is treated almost as before; the Laplace covariance is then the Gauss-Newton
    one of that objective. ``None``: normal."""
    spec, prior = _spec_and_prior(calibration)
    noise_sd = jnp.asarray([calibration.noise.sd(v) for v in MEASURED_VARIABLES])
    theta_pop = jnp.asarray(calibration.estimate)
    position = spec.layout.donor_level_position if position is None else position
    return _condition(
        theta_pop,
        arrays,
        jnp.asarray(prior_mean),
        jnp.asarray(prior_covariance),
        prior,
        noise_sd,
        spec,
        position,
        max_steps,
        jnp.asarray(jnp.inf if memory_h is None else memory_h, float),
        jnp.asarray(jnp.inf if prior_dof is None else prior_dof, float),
    )


@eqx.filter_jit
def _condition(
    theta_pop,
    arrays,
    prior_mean,
    prior_covariance,
    prior,
    noise_sd,
    spec,
    position,
    max_steps,
    memory_h,
    prior_dof,
):
    def one(run, mean, covariance, theta_pop, prior, noise_sd, memory_h, prior_dof):
        whiten = jnp.linalg.inv(jnp.linalg.cholesky(covariance))
        measured = run.mask.any(axis=-1)
        latest = jnp.max(jnp.where(measured, run.time_h, -jnp.inf))
        weight = jnp.exp(-0.5 * jnp.maximum(latest - run.time_h, 0.0) / memory_h)

        def residuals(b):
            theta = theta_pop.at[position].add(b)
            data, ok = run_residuals(theta, run, prior, noise_sd, spec)
            r = jnp.concatenate(
                [(data * weight[:, None]).ravel(), heavy_tailed(whiten @ (b - mean), prior_dof)]
            )
            return r, (r, ok)

        linearized = jax.jacfwd(residuals, has_aux=True)

        # Each step evaluates the residuals and their Jacobian once, at the candidate the last
        # step proposed, and keeps it if it lowers the objective: one traced (and compiled)
        # solve with tangents instead of a Jacobian at the accepted point plus a plain solve
        # at the candidate. The first step evaluates the prior mean (always kept); the last
        # accepted point's Jacobian serves the Laplace covariance.
        def step(carry, _):
            b, r, jacobian, ok, damping, candidate = carry
            jacobian_c, (r_c, ok_c) = linearized(candidate)
            better = r_c @ r_c < r @ r
            b, r, jacobian, ok = jax.tree.map(
                lambda new, old: jnp.where(better, new, old),
                (candidate, r_c, jacobian_c, ok_c),
                (b, r, jacobian, ok),
            )
            damping = jnp.where(better, damping / 3.0, damping * 4.0)
            gradient, hessian = jacobian.T @ r, jacobian.T @ jacobian
            scale = jnp.diag(jnp.maximum(jnp.diag(hessian), 1e-12))
            candidate = b - jnp.linalg.solve(hessian + damping * scale, gradient)
            return (b, r, jacobian, ok, damping, candidate), None

        jacobian_shape, (r_shape, _) = jax.eval_shape(linearized, mean)
        start = (
            mean,
            jnp.full(r_shape.shape, jnp.inf, r_shape.dtype),  # none kept yet: the mean will be
            jnp.zeros(jacobian_shape.shape, jacobian_shape.dtype),
            jnp.asarray(False),
            jnp.asarray(1e-3 * 3.0),  # the first acceptance divides it back to 1e-3
            mean,
        )
        (b, r, jacobian, ok, _, _), _ = jax.lax.scan(step, start, None, length=max_steps + 1)
        gradient, hessian = jacobian.T @ r, jacobian.T @ jacobian
        decrement = 0.5 * gradient @ jnp.linalg.solve(hessian, gradient)
        return b, jnp.linalg.inv(hessian), 0.5 * r @ r, decrement < 1e-6, ok

    # Runs split over the local devices: on CPU each device is one core.
    b, cov, objective, converged, ok = map_runs_on_all_devices(
        one,
        (arrays, prior_mean, prior_covariance),
        (theta_pop, prior, noise_sd, memory_h, prior_dof),
    )
    return RunPosterior(b, cov, objective, converged, ok)
