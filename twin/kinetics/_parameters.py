"""Kinetic parameters: the one table of defaults, units, transforms and sources.

Every default the twin uses lives in :data:`PARAMETER_TABLE`, with its unit and where the number
comes from (``lit.`` = read in the named publication, see ``../shared/DOMAIN.md``; ``approx.`` = a
typical value to be replaced by calibration). ``docs/parameters.md`` is rendered from this table
(``python -m twin.parameter_docs``).

Positive parameters are estimated in log space and fractions in logit space
(:func:`to_unconstrained` / :func:`from_unconstrained`); the table's ``prior_sd`` is the standard
deviation of the calibration prior on that unconstrained scale.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


@dataclasses.dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: float
    unit: str
    transform: Literal["log", "logit"]
    prior_sd: float
    description: str
    source: str


_LN2 = 0.6931471805599453

# fmt: off
PARAMETER_TABLE: tuple[ParameterSpec, ...] = (
    # --- activation -----------------------------------------------------------------------------
    ParameterSpec("activation_lag_h", 30.0, "h", "log", 0.3,
                  "mean time from activation reagent to activated (blasting, dividing) state; "
                  "Erlang-distributed over the lag stages",
                  "lit. first division 24-48 h after stimulation (Mishima 2014; DOMAIN.md)"),
    ParameterSpec("activation_efficiency", 0.9, "fraction", "logit", 1.0,
                  "share of seeded T cells that respond to the activation reagent",
                  "approx."),
    ParameterSpec("seed_memory_like_fraction", 0.6, "fraction", "logit", 1.0,
                  "less-differentiated (naive/central-memory-like) share of the seeded T cells",
                  "approx."),
    # --- proliferation --------------------------------------------------------------------------
    ParameterSpec("max_growth_rate_per_h", 0.05, "1/h", "log", 0.3,
                  "specific division rate of freshly activated cells with no limitation",
                  "lit. 0.007-0.053 1/h (J. Biol. Eng. 13:34, 2019, Table 1)"),
    ParameterSpec("growth_decline_time_h", 240.0, "h", "log", 0.5,
                  "e-folding time of the division rate's decline with time since activation",
                  "approx.; a day-5 seed grew at 0.007 1/h (J. Biol. Eng. 13:34, 2019)"),
    ParameterSpec("growth_decline_shape", 1.0, "1", "log", 0.5,
                  "Weibull shape k of the decline exp(-(a/T)^k) with time since activation a "
                  "(model.structure.decline=weibull only): 1 exponential, 2 Gaussian",
                  "approx.; the data choose it (1 is the exponential form's value)"),
    ParameterSpec("glucose_monod_mM", 1.0, "mM", "log", 0.7,
                  "glucose half-saturation constant of growth",
                  "approx. (an ambr15 T-cell model fitted 2.71 mg/mL, Univ. Manchester 2023)"),
    ParameterSpec("lactate_inhibition_mM", 35.0, "mM", "log", 0.4,
                  "lactate at which growth is halved (Hill exponent 2)",
                  "approx. 20-40 mM (DOMAIN.md)"),
    ParameterSpec("il2_monod_IU_per_mL", 10.0, "IU/mL", "log", 0.7,
                  "IL-2 half-saturation constant of the IL-2-dependent share of growth",
                  "approx."),
    ParameterSpec("il2_independent_growth_fraction", 0.3, "fraction", "logit", 1.0,
                  "share of the division rate sustained without exogenous IL-2 (autocrine)",
                  "approx."),
    ParameterSpec("density_half_cells_per_mL", 1.0e7, "cells/mL", "log", 0.5,
                  "viable density at which division is halved (contact/space limit, Hill 2)",
                  "approx."),
    ParameterSpec("density_limit_exponent", 2.0, "1", "log", 0.5,
                  "Hill exponent n of the density limit 1/(1+(X/K)^n) "
                  "(model.structure.density=hill_fitted only): 1 hyperbolic, larger a ceiling",
                  "approx.; the data choose it (2 is the hill form's default exponent)"),
    # --- death and lysis -------------------------------------------------------------------------
    ParameterSpec("base_death_rate_per_h", 0.003, "1/h", "log", 0.5,
                  "baseline death rate of viable cells",
                  "approx. (ambr15 model: exhaustion death 0.007 1/h, Univ. Manchester 2023)"),
    ParameterSpec("lactate_death_rate_per_h", 0.03, "1/h", "log", 0.7,
                  "maximal extra death rate from lactate toxicity",
                  "approx."),
    ParameterSpec("lactate_toxicity_mM", 45.0, "mM", "log", 0.4,
                  "lactate at which the toxicity death rate is half-maximal (Hill 2)",
                  "approx."),
    ParameterSpec("starvation_death_rate_per_h", 0.083, "1/h", "log", 0.5,
                  "extra death rate under glucose starvation",
                  "lit. 0.083 1/h below 0.05 mg/mL glucose (ambr15 model, Univ. Manchester 2023)"),
    ParameterSpec("starvation_glucose_mM", 0.28, "mM", "log", 0.5,
                  "glucose at which starvation death is half-maximal (Hill, see structure)",
                  "lit. 0.05 mg/mL = 0.28 mM (ambr15 model, Univ. Manchester 2023)"),
    ParameterSpec("lysis_rate_per_h", 0.02, "1/h", "log", 0.5,
                  "rate at which dead cells lyse (and stop counting as non-viable)",
                  "approx."),
    # --- metabolism -----------------------------------------------------------------------------
    ParameterSpec("glucose_per_new_cell_pmol", 1.5, "pmol/cell", "log", 0.4,
                  "growth-associated glucose consumption per new cell",
                  "approx.; with maintenance gives 1-3 pmol/cell/day (DOMAIN.md)"),
    ParameterSpec("glucose_maintenance_pmol_per_cell_h", 0.04, "pmol/(cell h)", "log", 0.4,
                  "maintenance glucose uptake of an activated cell",
                  "approx.; with growth gives 1-3 pmol/cell/day (DOMAIN.md)"),
    ParameterSpec("resting_uptake_fraction", 0.2, "fraction", "logit", 1.0,
                  "glucose uptake of a non-activated cell relative to activated maintenance",
                  "approx."),
    ParameterSpec("lactate_per_glucose", 1.7, "mol/mol", "log", 0.2,
                  "lactate produced per glucose consumed",
                  "approx. 1.5-2 mol/mol (DOMAIN.md)"),
    ParameterSpec("il2_uptake_IU_per_cell_h", 5.0e-7, "IU/(cell h)", "log", 0.7,
                  "maximal IL-2 consumption of an activated cell",
                  "approx."),
    ParameterSpec("il2_half_life_h", 48.0, "h", "log", 0.5,
                  "half-life of IL-2 bioactivity in culture medium at 37 C",
                  "approx."),
    # --- transduction ---------------------------------------------------------------------------
    ParameterSpec("vector_half_life_h", 35.0, "h", "log", 0.3,
                  "half-life of functional lentiviral vector in medium (VSV-G)",
                  "lit. 35 h for VSV-G (Dautzenberg et al., Gene Ther 2021)"),
    ParameterSpec("transduction_rate_mL_per_TU_h", 1.0e-8, "mL/(TU h)", "log", 0.7,
                  "integration hits per susceptible cell per hour per TU/mL of functional vector",
                  "approx.; chosen so MOI 5 gives ~35-40 % CAR+ (Zhu 2018: MOI 5-10, ~37 %)"),
    ParameterSpec("susceptible_fraction", 0.45, "fraction", "logit", 1.0,
                  "share of activated cells that can be transduced (Poisson hits within it)",
                  "lit.-derived: ARI-0001 lots 26-42 % CAR+ at VCN 1.45-2.51 (DOMAIN.md)"),
    # --- differentiation ------------------------------------------------------------------------
    ParameterSpec("differentiation_per_division", 0.15, "1/division", "log", 0.5,
                  "memory-like to effector-like conversions per division of an activated cell",
                  "approx."),
    ParameterSpec("differentiation_rate_per_h", 0.002, "1/h", "log", 0.7,
                  "time-driven memory-like to effector-like conversion of activated cells",
                  "approx."),
    # --- added since: appended, because twin.virtual keys each parameter's donor draws by its
    # position in this table, so a row inserted above would change every earlier seed's donors.
    ParameterSpec("growth_decline_floor", 0.05, "fraction", "logit", 1.0,
                  "share of the division rate that never declines with culture age: the decline "
                  "is floor + (1 - floor) x form (model.structure.decline_floor=true only)",
                  "approx.; lets the density limit, not age alone, end expansion"),
    ParameterSpec("uptake_capacity_share", 0.2, "fraction", "logit", 1.5,
                  "share of the growth-associated glucose uptake that follows the potential "
                  "(glucose-limited) division rate instead of the realized one "
                  "(model.structure.uptake=mixed only): 0 Pirt, 1 uptake not slowed by age, "
                  "density or lactate",
                  "approx.; the data choose it"),
)
# fmt: on

PARAMETER_NAMES: tuple[str, ...] = tuple(spec.name for spec in PARAMETER_TABLE)
SPECS: Mapping[str, ParameterSpec] = {spec.name: spec for spec in PARAMETER_TABLE}


class KineticParameters(eqx.Module):
    """Culture-kinetics parameters in natural units (see :data:`PARAMETER_TABLE`).

    Every field is a JAX scalar (or an array with leading batch axes for donor batches).
    """

    activation_lag_h: Float[Array, "*batch"]
    activation_efficiency: Float[Array, "*batch"]
    seed_memory_like_fraction: Float[Array, "*batch"]
    max_growth_rate_per_h: Float[Array, "*batch"]
    growth_decline_time_h: Float[Array, "*batch"]
    growth_decline_shape: Float[Array, "*batch"]
    glucose_monod_mM: Float[Array, "*batch"]
    lactate_inhibition_mM: Float[Array, "*batch"]
    il2_monod_IU_per_mL: Float[Array, "*batch"]
    il2_independent_growth_fraction: Float[Array, "*batch"]
    density_half_cells_per_mL: Float[Array, "*batch"]
    density_limit_exponent: Float[Array, "*batch"]
    base_death_rate_per_h: Float[Array, "*batch"]
    lactate_death_rate_per_h: Float[Array, "*batch"]
    lactate_toxicity_mM: Float[Array, "*batch"]
    starvation_death_rate_per_h: Float[Array, "*batch"]
    starvation_glucose_mM: Float[Array, "*batch"]
    lysis_rate_per_h: Float[Array, "*batch"]
    glucose_per_new_cell_pmol: Float[Array, "*batch"]
    glucose_maintenance_pmol_per_cell_h: Float[Array, "*batch"]
    resting_uptake_fraction: Float[Array, "*batch"]
    lactate_per_glucose: Float[Array, "*batch"]
    il2_uptake_IU_per_cell_h: Float[Array, "*batch"]
    il2_half_life_h: Float[Array, "*batch"]
    vector_half_life_h: Float[Array, "*batch"]
    transduction_rate_mL_per_TU_h: Float[Array, "*batch"]
    susceptible_fraction: Float[Array, "*batch"]
    differentiation_per_division: Float[Array, "*batch"]
    differentiation_rate_per_h: Float[Array, "*batch"]
    growth_decline_floor: Float[Array, "*batch"]
    uptake_capacity_share: Float[Array, "*batch"]

    def __check_init__(self):
        fields = tuple(f.name for f in dataclasses.fields(self))
        if fields != PARAMETER_NAMES:  # keeps the class and the table in step
            raise TypeError("KineticParameters fields differ from PARAMETER_TABLE")

    def replace(self, **values: float) -> KineticParameters:
        """A copy with some parameters changed (natural units); unknown names raise."""
        unknown = sorted(set(values) - set(PARAMETER_NAMES))
        if unknown:
            raise ValueError(f"unknown kinetic parameter(s) {unknown}")
        return dataclasses.replace(self, **{k: jnp.asarray(v, float) for k, v in values.items()})

    def as_dict(self) -> dict[str, Array]:
        return {name: getattr(self, name) for name in PARAMETER_NAMES}


def default_parameters(**overrides: float) -> KineticParameters:
    """The table's defaults, with optional overrides by name (natural units)."""
    params = KineticParameters(**{s.name: jnp.asarray(s.default, float) for s in PARAMETER_TABLE})
    return params.replace(**overrides) if overrides else params


def to_unconstrained(params: KineticParameters) -> KineticParameters:
    """Map natural values to the estimation scale: log for positive, logit for fractions."""
    out = {}
    for spec in PARAMETER_TABLE:
        x = getattr(params, spec.name)
        out[spec.name] = jnp.log(x) if spec.transform == "log" else jnp.log(x) - jnp.log1p(-x)
    return KineticParameters(**out)


def from_unconstrained(unconstrained: KineticParameters) -> KineticParameters:
    """Inverse of :func:`to_unconstrained`."""
    out = {}
    for spec in PARAMETER_TABLE:
        u = getattr(unconstrained, spec.name)
        out[spec.name] = jnp.exp(u) if spec.transform == "log" else jax.nn.sigmoid(u)
    return KineticParameters(**out)


def decay_rate_per_h(half_life_h: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
    """First-order rate constant (1/h) for a half-life (h)."""
    return _LN2 / half_life_h
