"""The culture's vector field ``dy/dt = f(t, y, params)`` between unit operations.

Rates are per hour. Cell counts are in millions (see ``_state``), so an uptake of ``q``
pmol/cell/h by ``X`` million cells in ``V`` mL changes a concentration by ``q X / V`` mM/h
(1e6 cells x 1e-12 mol / 1e-3 L = 1e-3 M = 1 mM per unit).
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from ._parameters import KineticParameters, decay_rate_per_h
from ._state import (
    CELLS_PER_UNIT,
    TU_PER_UNIT,
    CultureState,
    DeclineForm,
    DensityForm,
    ModelStructure,
    UptakeCoupling,
    non_negative,
    smallest_normal,
)

_DEFAULT = ModelStructure()

# Half-saturation of maintenance uptake: small, only there so that glucose cannot go negative.
MAINTENANCE_GLUCOSE_HALF_mM = 0.02


def hill_inhibition(x: Float[Array, ""], half: Float[Array, ""], n: float) -> Float[Array, ""]:
    """1 / (1 + (x/half)^n): 1 at x = 0, 1/2 at x = half."""
    return 1.0 / (1.0 + (x / half) ** n)


def age_decline(
    age_h: Float[Array, ""], p: KineticParameters, structure: ModelStructure
) -> Float[Array, ""]:
    """Factor (1 at activation) by which the division rate declines with culture age."""
    decline = _decline_form(age_h, p, structure)
    if structure.decline_floor:
        return p.growth_decline_floor + (1.0 - p.growth_decline_floor) * decline
    return decline


def _decline_form(
    age_h: Float[Array, ""], p: KineticParameters, structure: ModelStructure
) -> Float[Array, ""]:
    """The decline form alone: 1 at activation, towards 0 with age."""
    scaled = age_h / p.growth_decline_time_h  # the clock never runs backwards: age_h >= 0
    if structure.decline is DeclineForm.hill:
        return 1.0 / (1.0 + scaled**structure.decline_exponent)
    if structure.decline is DeclineForm.gaussian:
        return jnp.exp(-(scaled**2))
    if structure.decline is DeclineForm.weibull:
        # The smallest normal number added to the base (twin.kinetics.smallest_normal) keeps
        # the gradient in k (s^k log s) finite at age 0 and the value exact (exp(-tiny^k) = 1)
        # without a branch, which a simulator running the exported SBML would evaluate as
        # 0^(k-1) or switch on at the activation.
        powered = (scaled + smallest_normal(scaled)) ** p.growth_decline_shape
        return jnp.exp(-powered)
    return jnp.exp(-scaled)


def density_limit(
    density_cells_per_mL: Float[Array, ""], p: KineticParameters, structure: ModelStructure
) -> Float[Array, ""]:
    """Factor (1 when empty) by which the viable density limits division."""
    if structure.density is DensityForm.logistic:
        return jnp.maximum(1.0 - density_cells_per_mL / (2.0 * p.density_half_cells_per_mL), 0.0)
    if structure.density is DensityForm.hill_fitted:
        # As for the Weibull decline: a finite gradient in n at an empty culture, no branch.
        scaled = density_cells_per_mL / p.density_half_cells_per_mL
        return 1.0 / (1.0 + (scaled + smallest_normal(scaled)) ** p.density_limit_exponent)
    return hill_inhibition(
        density_cells_per_mL, p.density_half_cells_per_mL, structure.density_exponent
    )


def glucose_saturation(state: CultureState, p: KineticParameters) -> Float[Array, ""]:
    glucose = non_negative(state.glucose_mM)
    return glucose / (p.glucose_monod_mM + glucose)


def growth_rate_per_h(
    state: CultureState, p: KineticParameters, structure: ModelStructure = _DEFAULT
) -> Float[Array, ""]:
    """Specific division rate of activated cells (1/h)."""
    lactate = non_negative(state.lactate_mM)
    il2 = non_negative(state.il2_IU_per_mL)
    density = CELLS_PER_UNIT * non_negative(state.viable) / state.volume_ml
    f_age = age_decline(state.time_since_activation_h, p, structure)
    f_lactate = hill_inhibition(
        lactate, p.lactate_inhibition_mM, structure.lactate_inhibition_exponent
    )
    f_il2 = p.il2_independent_growth_fraction + (1 - p.il2_independent_growth_fraction) * il2 / (
        p.il2_monod_IU_per_mL + il2
    )
    f_density = density_limit(density, p, structure)
    f_glucose = glucose_saturation(state, p)
    return p.max_growth_rate_per_h * f_age * f_glucose * f_lactate * f_il2 * f_density


def death_rate_per_h(
    state: CultureState, p: KineticParameters, structure: ModelStructure = _DEFAULT
) -> Float[Array, ""]:
    """Specific death rate of viable cells (1/h): baseline + lactate toxicity + starvation."""
    glucose = non_negative(state.glucose_mM)
    lactate = non_negative(state.lactate_mM)
    toxicity = 1.0 - hill_inhibition(
        lactate, p.lactate_toxicity_mM, structure.lactate_toxicity_exponent
    )
    starvation = hill_inhibition(glucose, p.starvation_glucose_mM, structure.starvation_exponent)
    return (
        p.base_death_rate_per_h
        + p.lactate_death_rate_per_h * toxicity
        + p.starvation_death_rate_per_h * starvation
    )


def hit_rate_per_h(state: CultureState, p: KineticParameters) -> Float[Array, ""]:
    """Integration hits per susceptible activated cell per hour."""
    vector_TU_per_mL = TU_PER_UNIT * state.vector / state.volume_ml
    return p.transduction_rate_mL_per_TU_h * vector_TU_per_mL


def culture_vector_field(
    t, state: CultureState, p: KineticParameters, structure: ModelStructure = _DEFAULT
) -> CultureState:
    """d(state)/dt for a closed culture between unit operations (volume is constant); the
    rate-law forms are those of ``structure`` (static)."""
    del t  # autonomous: time enters through the activation clock
    mu = growth_rate_per_h(state, p, structure)
    death = death_rate_per_h(state, p, structure)
    hits = hit_rate_per_h(state, p)
    net = mu - death

    stages = state.lag.shape[-1]
    stage_rate = stages / p.activation_lag_h
    lag_outflow = stage_rate * state.lag
    lag_inflow = jnp.concatenate([jnp.zeros(1), lag_outflow[:-1]])
    newly_activated = lag_outflow[-1]
    d_lag = lag_inflow - lag_outflow - death * state.lag

    # Copy classes: a hit moves a cell from class k to k+1; class K (last) is absorbing.
    # Daughters inherit their mother's copies, so division scales each class alike.
    # (Slices and concatenation, not ``.at[]``: under vmap those become scatters, which cost
    # about 15 % of a solve on CPU.)
    susceptible = state.susceptible
    hits_out = hits * susceptible[:-1]
    influx = p.susceptible_fraction * newly_activated
    d_susceptible = net * susceptible + jnp.concatenate(
        [(influx - hits_out[0])[None], hits_out[:-1] - hits_out[1:], hits_out[-1:]]
    )
    d_refractory = net * state.refractory + (1 - p.susceptible_fraction) * newly_activated

    activated = state.activated_cells
    non_activated = state.non_activated_cells
    # Non-activated cells keep the seed's effector share (they neither divide nor differentiate
    # and die at the common rate), so the activated pool's share follows by difference.
    effector_activated = state.effector_like - (1 - p.seed_memory_like_fraction) * non_activated
    differentiation = p.differentiation_per_division * mu + p.differentiation_rate_per_h
    d_effector = (
        mu * effector_activated
        - death * state.effector_like
        + differentiation * (activated - effector_activated)
    )

    viable = activated + non_activated
    glucose = non_negative(state.glucose_mM)
    maintenance = (
        p.glucose_maintenance_pmol_per_cell_h * glucose / (MAINTENANCE_GLUCOSE_HALF_mM + glucose)
    )
    if structure.uptake is UptakeCoupling.growth:
        growth_uptake = mu
    else:
        potential = p.max_growth_rate_per_h * glucose_saturation(state, p)
        if structure.uptake is UptakeCoupling.capacity:
            growth_uptake = potential
        else:  # mixed
            growth_uptake = mu + p.uptake_capacity_share * (potential - mu)
    uptake_activated = growth_uptake * p.glucose_per_new_cell_pmol + maintenance
    uptake_resting = p.resting_uptake_fraction * maintenance
    glucose_uptake_mM_per_h = (
        uptake_activated * activated + uptake_resting * non_activated
    ) / state.volume_ml
    il2 = non_negative(state.il2_IU_per_mL)
    il2_uptake = (
        p.il2_uptake_IU_per_cell_h
        * CELLS_PER_UNIT
        * activated
        / state.volume_ml
        * il2
        / (p.il2_monod_IU_per_mL + il2)
    )
    vector_consumed = hits * susceptible.sum(-1) * CELLS_PER_UNIT / TU_PER_UNIT

    zero = jnp.zeros_like(state.volume_ml)
    return CultureState(
        resting=-death * state.resting,
        lag=d_lag,
        unresponsive=-death * state.unresponsive,
        susceptible=d_susceptible,
        refractory=d_refractory,
        effector_like=d_effector,
        dead=death * viable - p.lysis_rate_per_h * state.dead,
        lysed=p.lysis_rate_per_h * state.dead,
        removed=zero,
        born=mu * activated,
        volume_ml=zero,
        glucose_mM=-glucose_uptake_mM_per_h,
        lactate_mM=p.lactate_per_glucose * glucose_uptake_mM_per_h,
        il2_IU_per_mL=-il2_uptake - decay_rate_per_h(p.il2_half_life_h) * state.il2_IU_per_mL,
        vector=-decay_rate_per_h(p.vector_half_life_h) * state.vector - vector_consumed,
        time_since_activation_h=state.activated,
        activated=zero,
    )
