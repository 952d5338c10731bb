"""The hierarchical model: parameter layout, residuals and their block-structured Jacobian.

Unknowns, all on the estimation scale of :data:`~twin.kinetics.PARAMETER_TABLE` (log or logit):

- ``theta_pop[p]``, one per fitted parameter (the population value);
- ``effects[d, q]``, one per donor and donor-level parameter; run ``r`` of donor ``d`` uses
  ``theta_run = theta_pop`` plus ``effects[d]`` on the donor-level entries.

They are flattened into one vector ``x = [theta_pop, effects.ravel()]`` (donor-major). The
residual vector is ``r(x) = [assay residuals / noise SD (zero where not measured),
(theta_pop - prior mean) / prior SD, effects / donor SD]``, and the objective is
``0.5 * |r|^2``: a Gaussian likelihood on each assay's scale (:mod:`twin.assays`) times Gaussian
priors, i.e. a MAP estimate.

Each run depends on ``theta_pop`` and its own donor's effects only, and the effects enter
exactly like the population values, so a run's Jacobian is one forward-mode Jacobian with
respect to its ``theta_run`` (``n_fitted`` tangents, whatever the number of donors).
:func:`residuals_and_jacobian` assembles the full Jacobian from these blocks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from ..assays import MEASURED_VARIABLES, Likelihood, scaled_residual
from ..kinetics import (
    PARAMETER_NAMES,
    PARAMETER_TABLE,
    KineticParameters,
    ModelStructure,
    from_unconstrained,
    to_unconstrained,
)
from ..observe import observables
from ..simulate import SolverSettings, simulate
from ._problem import CalibrationArrays

_PRIOR_SD: dict[str, float] = {spec.name: spec.prior_sd for spec in PARAMETER_TABLE}


@dataclasses.dataclass(frozen=True)
class ParameterLayout:
    """Which kinetic parameters are estimated, and where they sit in the unknown vector.

    ``donor_level`` must be a subset of ``fitted``; ``n_donors`` counts padding donors too.
    """

    fitted: tuple[str, ...]
    donor_level: tuple[str, ...]
    n_donors: int

    @property
    def n_population(self) -> int:
        return len(self.fitted)

    @property
    def size(self) -> int:
        """Length of the unknown vector ``x``."""
        return self.n_population + self.n_donors * len(self.donor_level)

    @property
    def fitted_index(self) -> np.ndarray:
        """Position of each fitted parameter in :data:`~twin.kinetics.PARAMETER_NAMES`."""
        return np.array([PARAMETER_NAMES.index(name) for name in self.fitted])

    @property
    def donor_level_position(self) -> np.ndarray:
        """Position of each donor-level parameter within ``fitted``."""
        return np.array([self.fitted.index(name) for name in self.donor_level], dtype=int)

    def split(
        self, x: Float[Array, " unknowns"]
    ) -> tuple[Float[Array, " fitted"], Float[Array, "donors donor_level"]]:
        """``(theta_pop, effects)`` from the unknown vector."""
        p = self.n_population
        return x[:p], x[p:].reshape(self.n_donors, len(self.donor_level))

    def join(
        self, theta_pop: Float[Array, " fitted"], effects: Float[Array, "donors donor_level"]
    ) -> Float[Array, " unknowns"]:
        return jnp.concatenate([theta_pop, effects.ravel()])

    def entry_names(self, donor_ids: Sequence[str]) -> list[str]:
        """Names of the first ``P + len(donor_ids) * Q`` entries of ``x``: the fitted names,
        then ``name[donor]`` for each real donor's effects."""
        effects = [f"{name}[{donor}]" for donor in donor_ids for name in self.donor_level]
        return list(self.fitted) + effects


class Prior(eqx.Module):
    """Prior and fixed values on the estimation scale.

    **Fields:**

    - ``base``: every kinetic parameter's unconstrained value from the model config (fitted
      ones: the prior mean; the others stay there), in ``PARAMETER_NAMES`` order.
    - ``population_sd``: prior SD of each fitted parameter (``PARAMETER_TABLE``'s ``prior_sd``).
    - ``donor_sd``: SD of the donor effect of each donor-level parameter (omega).
    """

    base: Float[Array, " parameters"]
    population_sd: Float[Array, " fitted"]
    donor_sd: Float[Array, " donor_level"]

    def mean(self, layout: ParameterLayout) -> Float[Array, " fitted"]:
        return self.base[layout.fitted_index]


def make_prior(
    model_parameters: KineticParameters, layout: ParameterLayout, donor_sd: Sequence[float]
) -> Prior:
    """The prior centred on the model config's parameters (natural units)."""
    unconstrained = to_unconstrained(model_parameters)
    return Prior(
        base=jnp.stack([jnp.asarray(getattr(unconstrained, n), float) for n in PARAMETER_NAMES]),
        population_sd=jnp.asarray([_PRIOR_SD[name] for name in layout.fitted], float),
        donor_sd=jnp.asarray(donor_sd, float).reshape(len(layout.donor_level)),
    )


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything static about the residual function (hashable: a ``jit`` static argument).

    ``failure_residual`` replaces every residual of a run whose ODE solve fails or yields a
    non-finite prediction, so the objective stays finite (and large) there. ``devices``: the
    runs are split over this many local devices (the first ones; the number of runs must be a
    multiple of it), each solving its share independently. ``likelihood``: how readings enter
    (residual distribution, censoring at detection limits; :class:`~twin.assays.Likelihood`).
    """

    layout: ParameterLayout
    structure: ModelStructure
    solver: SolverSettings
    failure_residual: float = 1.0e3
    devices: int = 1
    likelihood: Likelihood = Likelihood()

    def __post_init__(self):
        if self.solver.adjoint != "forward":  # forward-mode Jacobians through the ODE solve
            object.__setattr__(self, "solver", dataclasses.replace(self.solver, adjoint="forward"))


class ObjectiveData(eqx.Module):
    """The dynamic inputs of the residual function: data, prior and assay noise SDs."""

    arrays: CalibrationArrays
    prior: Prior
    noise_sd: Float[Array, " variables"]  # MEASURED_VARIABLES order, on each assay's scale


def map_runs(fn, devices: int, per_run: tuple, shared: tuple):
    """``jax.vmap(fn)(*per_run, *shared)`` over the leading (runs) axis of ``per_run``, with
    the runs split evenly over ``devices`` local devices (``shard_map``): each device loops
    over its own runs' ODE steps, so no device waits on another's stiffest run step by step,
    and on CPU every core works (one XLA device runs these loops on one core)."""
    batched = jax.vmap(fn, in_axes=(0,) * len(per_run) + (None,) * len(shared))
    if devices == 1:
        return batched(*per_run, *shared)
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:devices]), ("runs",))
    split, whole = jax.sharding.PartitionSpec("runs"), jax.sharding.PartitionSpec()
    return jax.shard_map(
        batched,
        mesh=mesh,
        in_specs=(split,) * len(per_run) + (whole,) * len(shared),
        out_specs=split,
        check_vma=False,  # the ODE solver's loops mix per-device and replicated values
    )(*per_run, *shared)


def map_runs_on_all_devices(fn, per_run: tuple, shared: tuple = ()):
    """:func:`map_runs` over every local device, for any number of runs: the runs axis is
    padded to a multiple of the device count (repeating the first run) and the padding dropped
    from the outputs. Call it inside ``jit``."""
    devices = jax.local_device_count()
    n_runs = jax.tree.leaves(per_run)[0].shape[0]
    pad = -n_runs % devices
    if pad:
        per_run = jax.tree.map(
            lambda x: jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)]), per_run
        )
    out = map_runs(fn, devices, per_run, shared)
    return jax.tree.map(lambda x: x[:n_runs], out) if pad else out


def kinetic_parameters(
    theta: Float[Array, " fitted"], base: Float[Array, " parameters"], layout: ParameterLayout
) -> KineticParameters:
    """Natural-unit parameters with the fitted ones set from ``theta`` (estimation scale).

    Built name by name rather than as one vector, so that the parameters kept fixed do not
    depend on ``theta`` at all: forward-mode Jacobians then carry no (zero) tangents for them
    through the ODE solve."""
    position = {name: j for j, name in enumerate(layout.fitted)}
    return from_unconstrained(
        KineticParameters(
            **{
                n: theta[position[n]] if n in position else base[i]
                for i, n in enumerate(PARAMETER_NAMES)
            }
        )
    )


def run_residuals(
    theta_run: Float[Array, " fitted"],
    run: CalibrationArrays,
    prior: Prior,
    noise_sd: Float[Array, " variables"],
    spec: ModelSpec,
) -> tuple[Float[Array, "times variables"], Bool[Array, ""]]:
    """One run's scaled assay residuals (``(observed - predicted) / sd`` on the assay scales,
    or their censored / Student-t forms: :func:`~twin.assays.scaled_residual`; zero where not
    measured) and whether its solve succeeded. ``run`` is one row of the arrays.
    """
    params = kinetic_parameters(theta_run, prior.base, spec.layout)
    trajectory = simulate(params, run.schedules, run.time_h, spec.structure, spec.solver)
    predicted = observables(trajectory.states)
    scaled = jnp.stack(
        [
            scaled_residual(v, run.observed[:, j], predicted[v], noise_sd[j], spec.likelihood)
            for j, v in enumerate(MEASURED_VARIABLES)
        ],
        axis=-1,
    )
    ok = trajectory.success & jnp.all(jnp.isfinite(scaled) | ~run.mask)
    return jnp.where(run.mask, jnp.where(ok, scaled, spec.failure_residual), 0.0), ok


def run_parameters(
    theta_pop: Float[Array, " fitted"],
    effects: Float[Array, "donors donor_level"],
    donor_index,
    layout: ParameterLayout,
) -> Float[Array, "runs fitted"]:
    """Each run's ``theta_run``: the population values plus its donor's effects."""
    runs = jnp.broadcast_to(theta_pop, (donor_index.shape[0], layout.n_population))
    return runs.at[:, layout.donor_level_position].add(effects[donor_index])


def data_residuals(
    theta_pop: Float[Array, " fitted"],
    effects: Float[Array, "donors donor_level"],
    data: ObjectiveData,
    spec: ModelSpec,
) -> tuple[Float[Array, "runs times variables"], Bool[Array, " runs"]]:
    """Scaled assay residuals of every run and each run's solver success."""
    theta_runs = run_parameters(theta_pop, effects, data.arrays.donor_index, spec.layout)
    return map_runs(
        lambda theta, run, prior, noise_sd: run_residuals(theta, run, prior, noise_sd, spec),
        spec.devices,
        (theta_runs, data.arrays),
        (data.prior, data.noise_sd),
    )


def run_jacobians(
    theta_pop: Float[Array, " fitted"],
    effects: Float[Array, "donors donor_level"],
    data: ObjectiveData,
    spec: ModelSpec,
) -> tuple[
    Float[Array, "runs times variables"],
    Float[Array, "runs times variables fitted"],
    Bool[Array, " runs"],
]:
    """Residuals, each run's Jacobian with respect to its own ``theta_run`` (one forward-mode
    pass with ``n_fitted`` tangents per run), and solver success."""
    theta_runs = run_parameters(theta_pop, effects, data.arrays.donor_index, spec.layout)

    def one(theta_run, run, prior, noise_sd):
        def residual(theta):
            r, ok = run_residuals(theta, run, prior, noise_sd, spec)
            return r, (r, ok)

        jacobian, (r, ok) = jax.jacfwd(residual, has_aux=True)(theta_run)
        return r, jacobian, ok

    return map_runs(one, spec.devices, (theta_runs, data.arrays), (data.prior, data.noise_sd))


@eqx.filter_custom_jvp
def structured_data_residuals(theta_pop, effects, *, data: ObjectiveData, spec: ModelSpec):
    """:func:`data_residuals` (residuals only) with a JVP rule that computes the per-run
    Jacobians once and applies them to both tangents: under ``jax.linearize`` the expensive
    forward pass runs once, and the linear map is a cheap contraction."""
    return data_residuals(theta_pop, effects, data, spec)[0]


@structured_data_residuals.def_jvp
def _structured_jvp(primals, tangents, *, data: ObjectiveData, spec: ModelSpec):
    theta_pop, effects = primals
    t_pop, t_effects = tangents
    t_pop = jnp.zeros_like(theta_pop) if t_pop is None else t_pop
    t_effects = jnp.zeros_like(effects) if t_effects is None else t_effects
    r, jacobian, _ = run_jacobians(theta_pop, effects, data, spec)
    t_runs = run_parameters(t_pop, t_effects, data.arrays.donor_index, spec.layout)
    return r, jnp.einsum("rtvp,rp->rtv", jacobian, t_runs)


def prior_residuals(
    theta_pop: Float[Array, " fitted"],
    effects: Float[Array, "donors donor_level"],
    prior: Prior,
    layout: ParameterLayout,
) -> Float[Array, " unknowns"]:
    """``[(theta_pop - mean) / sd, effects / donor_sd]`` (one per unknown)."""
    population = (theta_pop - prior.mean(layout)) / prior.population_sd
    donors = effects / jnp.broadcast_to(prior.donor_sd, effects.shape)
    return jnp.concatenate([population, donors.ravel()])


def prior_scales(prior: Prior, layout: ParameterLayout) -> Float[Array, " unknowns"]:
    """Prior SD of each unknown: ``[population_sd, donor_sd tiled over donors]``."""
    return jnp.concatenate([prior.population_sd, jnp.tile(prior.donor_sd, layout.n_donors)])


def residuals(
    x: Float[Array, " unknowns"], data: ObjectiveData, spec: ModelSpec, *, structured: bool
) -> Float[Array, " residuals"]:
    """The full residual vector ``r(x)`` (module docstring). ``structured`` selects the JVP
    rule of :func:`structured_data_residuals`; otherwise JAX differentiates the ODE solves for
    every unknown (the naive Jacobian: ``len(x)`` tangents through every run)."""
    if not structured:
        return residuals_and_success(x, data, spec)[0]
    theta_pop, effects = spec.layout.split(x)
    assay = structured_data_residuals(theta_pop, effects, data=data, spec=spec)
    prior = prior_residuals(theta_pop, effects, data.prior, spec.layout)
    return jnp.concatenate([assay.ravel(), prior])


def objective(x: Float[Array, " unknowns"], data: ObjectiveData, spec: ModelSpec):
    """``0.5 * |r(x)|^2`` (differentiable; uses the structured JVP rule)."""
    return 0.5 * jnp.sum(residuals(x, data, spec, structured=True) ** 2)


def residuals_and_success(
    x: Float[Array, " unknowns"], data: ObjectiveData, spec: ModelSpec
) -> tuple[Float[Array, " residuals"], Bool[Array, " runs"]]:
    """``(r(x), run success)`` without derivatives (a sixth to an eighth of the cost of
    :func:`residuals_and_jacobian` with ten fitted parameters)."""
    theta_pop, effects = spec.layout.split(x)
    r_data, ok = data_residuals(theta_pop, effects, data, spec)
    prior = prior_residuals(theta_pop, effects, data.prior, spec.layout)
    return jnp.concatenate([r_data.ravel(), prior]), ok


def residuals_and_jacobian(
    x: Float[Array, " unknowns"], data: ObjectiveData, spec: ModelSpec
) -> tuple[Float[Array, " residuals"], Float[Array, "residuals unknowns"], Bool[Array, " runs"]]:
    """``(r(x), dr/dx, run success)`` with the Jacobian assembled densely from the per-run
    blocks (each run's rows are non-zero only in the population columns and its donor's)."""
    layout = spec.layout
    theta_pop, effects = layout.split(x)
    r_data, jacobian, ok = run_jacobians(theta_pop, effects, data, spec)
    n_rows = r_data.size
    donor_one_hot = jax.nn.one_hot(data.arrays.donor_index, layout.n_donors, dtype=x.dtype)
    effect_columns = jnp.einsum(
        "rtvq,rd->rtvdq", jacobian[..., layout.donor_level_position], donor_one_hot
    )
    data_rows = jnp.concatenate(
        [jacobian.reshape(n_rows, -1), effect_columns.reshape(n_rows, -1)], axis=1
    )
    prior_rows = jnp.diag(1.0 / prior_scales(data.prior, layout))
    r = jnp.concatenate([r_data.ravel(), prior_residuals(theta_pop, effects, data.prior, layout)])
    return r, jnp.concatenate([data_rows, prior_rows], axis=0), ok
