"""Assay (measurement-noise) models of the in-process and release assays (Cell Q).

One model serves both directions: virtual batches sample measurements from it, and calibration
uses it as the likelihood. Each measured variable is compared on a transformed scale where its
noise is Gaussian with standard deviation ``sd``:

- counts, metabolites, IL-2 and VCN: log scale, ``z = log(value + floor)``: ``value + floor`` is
  log-normal, so true zeros are allowed and a reading below the floor can be 0;
- fractions (viability, %CAR+): logit scale, ``z = logit(clip(value, floor, 1 - floor))``
  (bounded noise that never leaves (0, 1)).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

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


def to_assay_scale(variable: str, value: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """Map a value (natural units) to the assay's Gaussian scale."""
    scale, floor = ASSAY_SCALES[variable]
    if scale == "log":
        return jnp.log(jnp.maximum(value, 0.0) + floor)
    clipped = jnp.clip(value, floor, 1.0 - floor)
    return jnp.log(clipped) - jnp.log1p(-clipped)


def from_assay_scale(variable: str, z: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """Inverse of :func:`to_assay_scale` (a measured value, always inside the assay's range)."""
    scale, floor = ASSAY_SCALES[variable]
    if scale == "log":
        return jnp.maximum(jnp.exp(z) - floor, 0.0)  # reads 0 below the detection floor
    return jax.nn.sigmoid(z)


def sample_assay(
    key: PRNGKeyArray, variable: str, true_value: Float[Array, "*shape"], sd: float
) -> Float[Array, "*shape"]:
    """Draw measurements of ``variable`` around the true values."""
    z = to_assay_scale(variable, true_value)
    return from_assay_scale(variable, z + sd * jax.random.normal(key, jnp.shape(z)))


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
