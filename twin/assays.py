"""Assay (measurement-noise) models of the in-process and release assays (Cell Q).

One model serves both directions: virtual batches sample measurements from it, and calibration
uses it as the likelihood. Each measured variable is compared on a transformed scale where its
noise is Gaussian with standard deviation ``sd``:

- counts, metabolites, IL-2 and VCN: log scale, ``z = log(value + floor)``: ``value + floor`` is
  log-normal, so true zeros are allowed and a reading below the floor can be 0;
- fractions (viability, %CAR+): logit scale, ``z = logit(clip(value, floor, 1 - floor))``
  (bounded noise that never leaves (0, 1)).

As a likelihood (:class:`Likelihood`), a reading at or below its assay's detection limit is a
*censored* observation: it says only "at most the limit", and contributes
``-log P(z <= z_limit)`` (a one-sided Gaussian tail), never ``log(0)`` and never a large
two-sided residual. Residuals may also be Student-t (heavy tails: one odd reading does not drag
a fit). Both are written as least-squares residuals ``r`` with ``r^2 / 2`` = the negative
log-likelihood, so Gauss-Newton / Levenberg-Marquardt apply unchanged.
"""

from __future__ import annotations

import dataclasses
import enum

import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr, ndtri
from jaxtyping import Array, Float, PRNGKeyArray

from .kinetics import non_negative

# variable -> (scale, floor). Floors are in the variable's own unit.
ASSAY_SCALES: dict[str, tuple[str, float]] = {
    "viable_cells": ("log", 1.0e4),
    "viability": ("logit", 1.0e-3),
    "glucose_mM": ("log", 0.05),
    "lactate_mM": ("log", 0.05),
    "il2_IU_per_mL": ("log", 0.5),
    "car_pos_fraction": ("logit", 1.0e-3),
    "vcn_per_cell": ("log", 0.005),
}
MEASURED_VARIABLES: tuple[str, ...] = tuple(ASSAY_SCALES)


@dataclasses.dataclass(frozen=True)
class AssayNoise:
    """Noise SD of each assay on its transformed scale (log: ~CV; logit: logit units)."""

    viable_cells: float = 0.08  # automated counter, ~8 % CV (approx.)
    viability: float = 0.15  # automated counter (approx.)
    glucose_mM: float = 0.04  # metabolite analyser (approx.)
    lactate_mM: float = 0.05  # metabolite analyser (approx.)
    il2_IU_per_mL: float = 0.15  # ELISA (approx.)
    car_pos_fraction: float = 0.10  # flow cytometry (approx.)
    vcn_per_cell: float = 0.12  # ddPCR (approx.)

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not value > 0:
                raise ValueError(f"noise.{field.name}={value!r}: must be > 0")

    def sd(self, variable: str) -> float:
        return getattr(self, variable)


class ResidualModel(enum.StrEnum):
    """Distribution of an uncensored reading's standardized residual."""

    gaussian = "gaussian"
    student_t = "student_t"  # heavy-tailed, ``Likelihood.student_t_dof`` degrees of freedom


@dataclasses.dataclass(frozen=True)
class DetectionLimits:
    """Lower detection limit of each assay (natural units, RUN_DATA.md). A reading at or below
    it (analysers record such readings as 0 or as the limit) is censored. A reading of exactly
    0 is always censored, at the assay floor where no limit is set (0 here)."""

    viable_cells: float = 0.0
    viability: float = 0.0
    glucose_mM: float = 0.1  # metabolite analysers' lower range limit, ~0.1 mM (approx.)
    lactate_mM: float = 0.1  # idem (approx.)
    il2_IU_per_mL: float = 0.0
    car_pos_fraction: float = 0.0
    vcn_per_cell: float = 0.0

    def __post_init__(self):
        for variable in MEASURED_VARIABLES:
            value = getattr(self, variable)
            if not (isinstance(value, int | float) and 0.0 <= value < float("inf")):
                raise ValueError(f"detection_limits.{variable}={value!r}: must be >= 0")


@dataclasses.dataclass(frozen=True)
class Likelihood:
    """How readings enter the likelihood (hashable: part of the compiled model).

    - ``residuals``: ``gaussian`` or ``student_t`` on each assay's scale.
    - ``student_t_dof``: degrees of freedom of the Student-t (small: heavier tails).
    - ``detection_limits``: per assay; readings at or below are censored observations.
    """

    residuals: ResidualModel = ResidualModel.gaussian
    student_t_dof: float = 4.0
    detection_limits: DetectionLimits = dataclasses.field(default_factory=DetectionLimits)

    def __post_init__(self):
        try:
            object.__setattr__(self, "residuals", ResidualModel(self.residuals))
        except ValueError:
            choices = ", ".join(m.value for m in ResidualModel)
            raise ValueError(f"residuals={self.residuals!r}: choose one of {choices}") from None
        if not (isinstance(self.student_t_dof, int | float) and 1.0 <= self.student_t_dof < 1e6):
            raise ValueError(f"student_t_dof={self.student_t_dof!r}: must be in [1, 1e6)")
        if isinstance(self.detection_limits, dict):
            object.__setattr__(self, "detection_limits", DetectionLimits(**self.detection_limits))

    def as_dict(self) -> dict:
        return {
            "residuals": str(self.residuals),
            "student_t_dof": float(self.student_t_dof),
            "detection_limits": dataclasses.asdict(self.detection_limits),
        }

    def censoring_limit(self, variable: str) -> float:
        """The value at or below which a reading of ``variable`` is censored (natural units);
        for a log-scale assay without a limit, 0 (only zero readings)."""
        return float(getattr(self.detection_limits, variable))


_TINY = 1e-30


def censored(variable: str, observed, likelihood: Likelihood):
    """Which readings of ``variable`` are censored (at or below its limit; log-scale assays)."""
    if ASSAY_SCALES[variable][0] != "log":
        return jnp.zeros(jnp.shape(observed), bool)
    return observed <= likelihood.censoring_limit(variable)


def student_t_residual(e: Float[Array, "*shape"], dof) -> Float[Array, "*shape"]:
    """Standardized errors ``e`` as least-squares residuals of a Student-t with ``dof``
    degrees of freedom: ``r^2 / 2 = ((nu + 1) / 2) log(1 + e^2 / nu)``, its negative
    log-density up to a constant (``dof`` may be traced)."""
    e2 = jnp.maximum(e**2, _TINY)
    return e * jnp.sqrt((dof + 1.0) * jnp.log1p(e2 / dof) / e2)


def scaled_residual(
    variable: str,
    observed: Float[Array, "*shape"],
    predicted: Float[Array, "*shape"],
    sd: Float[Array, ""],
    likelihood: Likelihood,
) -> Float[Array, "*shape"]:
    """Least-squares residual ``r`` of each reading (``r^2 / 2`` = its negative
    log-likelihood up to a constant): standardized on the assay scale, Student-t transformed
    if chosen, and the one-sided tail ``sqrt(-2 log Phi((z_limit - z_pred) / sd))`` for a
    censored reading."""
    e = assay_residual(variable, observed, predicted) / sd
    if likelihood.residuals is ResidualModel.student_t:
        e = student_t_residual(e, likelihood.student_t_dof)
    if ASSAY_SCALES[variable][0] != "log":
        return e
    limit = likelihood.censoring_limit(variable)
    u = (to_assay_scale(variable, jnp.asarray(limit)) - to_assay_scale(variable, predicted)) / sd
    tail = jnp.sqrt(jnp.maximum(-2.0 * log_ndtr(u), _TINY))
    return jnp.where(censored(variable, observed, likelihood), tail, e)


def predicted_from_residual(
    variable: str,
    observed: Float[Array, "*shape"],
    r: Float[Array, "*shape"],
    sd: float,
    likelihood: Likelihood,
) -> Float[Array, "*shape"]:
    """Inverse of :func:`scaled_residual` in ``predicted`` (natural units). For a censored
    reading the tail residual fixes the prediction's distance below or above the limit."""
    if likelihood.residuals is ResidualModel.student_t:
        nu = likelihood.student_t_dof
        e = jnp.sign(r) * jnp.sqrt(nu * jnp.expm1(r**2 / (nu + 1.0)))
    else:
        e = r
    z_predicted = to_assay_scale(variable, observed) - sd * e
    if ASSAY_SCALES[variable][0] == "log":
        limit = likelihood.censoring_limit(variable)
        u = ndtri(jnp.exp(-0.5 * r**2))
        z_tail = to_assay_scale(variable, jnp.asarray(limit)) - sd * u
        z_predicted = jnp.where(censored(variable, observed, likelihood), z_tail, z_predicted)
    return from_assay_scale(variable, z_predicted)


def to_assay_scale(variable: str, value: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """Map a value (natural units) to the assay's Gaussian scale."""
    scale, floor = ASSAY_SCALES[variable]
    if scale == "log":
        return jnp.log(non_negative(value) + floor)  # round-off below 0 reads as 0
    # lax.clamp, not jnp.clip (a min of a max): it exports to SBML as one flat piecewise,
    # which AMICI can parse (it rejects a piecewise inside another's condition).
    value = jnp.asarray(value, jnp.result_type(value, float))
    clipped = jax.lax.clamp(
        jnp.asarray(floor, value.dtype), value, jnp.asarray(1.0 - floor, value.dtype)
    )
    return jnp.log(clipped) - jnp.log1p(-clipped)


def from_assay_scale(variable: str, z: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """Inverse of :func:`to_assay_scale` (a measured value, always inside the assay's range)."""
    scale, floor = ASSAY_SCALES[variable]
    if scale == "log":
        return jnp.maximum(jnp.exp(z) - floor, 0.0)  # reads 0 below the detection floor
    return jax.nn.sigmoid(z)


def sample_assay(
    key: PRNGKeyArray,
    variable: str,
    true_value: Float[Array, "*shape"],
    sd: float,
    shared_axis: int | None = None,
) -> Float[Array, "*shape"]:
    """Draw measurements of ``variable`` around the true values.

    ``shared_axis``: if given (e.g. the time axis of simulated draws), one noise deviate is
    shared along it (common random numbers): each value's distribution is unchanged, and
    quantiles traced along that axis are free of sampling jitter."""
    z = to_assay_scale(variable, true_value)
    shape = list(jnp.shape(z))
    if shared_axis is not None:
        shape[shared_axis] = 1
    return from_assay_scale(variable, z + sd * jax.random.normal(key, tuple(shape)))


def assay_residual(
    variable: str, observed: Float[Array, "*shape"], predicted: Float[Array, "*shape"]
) -> Float[Array, "*shape"]:
    """Residual on the assay scale, in the variable's noise units before dividing by SD."""
    return to_assay_scale(variable, observed) - to_assay_scale(variable, predicted)


def assay_log_likelihood(
    variable: str,
    observed: Float[Array, "*shape"],
    predicted: Float[Array, "*shape"],
    sd: Float[Array, ""],
) -> Float[Array, "*shape"]:
    """Gaussian log-density on the assay scale (the observation transform's Jacobian, constant
    in the parameters and the SD, is left out)."""
    r = assay_residual(variable, observed, predicted) / sd
    return -0.5 * r**2 - jnp.log(sd) - 0.5 * jnp.log(2 * jnp.pi)
