"""Robust objectives over donors: exact release checks, smooth surrogates and cost of goods.

One simulation per donor gives that donor's *outcomes* (:func:`donor_outcomes`); an objective
is a mean over donors of outcomes (:func:`objective_loss`), in an exact (pass/fail, for
evaluation and derivative-free search) and a smooth (for gradients) version.

Smooth surrogate of "the batch conforms": the product over the four release checks of
``sigmoid(margin / temperature)``, each margin on its natural scale (logit for viability and
%CAR+, log for VCN and the dose), so a temperature of 0.1 means "about 10 % away from the
limit". As the temperature goes to 0 it tends to the exact pass/fail.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..kinetics import KineticParameters, ModelStructure
from ..observe import observables
from ..process import Downstream, Recipe, product, schedule_from_values
from ..simulate import SolverSettings, simulate

# name -> what is optimized (every objective is maximized except cost_per_conforming_dose)
OBJECTIVES: dict[str, str] = {
    "p_conforming": "probability that a batch passes every release check (maximize)",
    "expected_conforming_doses": "mean doses of conforming batches per batch (maximize)",
    "cost_per_conforming_dose": "mean batch cost / mean conforming doses, $/dose (minimize)",
    "memory_like_at_harvest": "mean memory-like share at harvest of conforming batches (maximize)",
}


@dataclasses.dataclass
class Prices:
    """Cost of goods per batch (approx. placeholders, USD; replace with site figures).

    - ``vector_per_1e9_TU``: lentiviral vector, per 10^9 transducing units.
    - ``medium_per_L``: complete medium, per litre (seed volume, feeds, exchanged volume).
    - ``il2_per_1e6_IU``: IL-2 supplement, per 10^6 IU added with the medium.
    - ``cartridge_per_day``: a Shuttle bay + cartridge, per day from seed to harvest.
    - ``fixed_per_batch``: everything independent of the recipe (QC, release, materials).
    """

    vector_per_1e9_TU: float = 20000.0
    medium_per_L: float = 500.0
    il2_per_1e6_IU: float = 30.0
    cartridge_per_day: float = 1500.0
    fixed_per_batch: float = 20000.0

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"prices.{field.name}={value!r}: must be >= 0")


def smooth_conformance(
    harvest: dict[str, Array],
    released: dict[str, Array],
    downstream: Downstream,
    temperature: float | Array,
) -> Float[Array, "*batch"]:
    """Smooth surrogate in ``[0, 1]`` of ``released["conforming"]`` (see the module doc).

    ``harvest``: observables at harvest; ``released``: :func:`~twin.process.product` of them.
    """
    margins = release_margins(harvest, released, downstream)
    terms = [jax.nn.sigmoid(m / temperature) for m in margins.values()]
    return terms[0] * terms[1] * terms[2] * terms[3]


def release_margins(
    harvest: dict[str, Array], released: dict[str, Array], downstream: Downstream
) -> dict[str, Array]:
    """Signed distance to each release limit (> 0 passes): logit differences for viability
    and %CAR+, log ratios for VCN per transduced cell and CAR+ cells per required doses."""
    d = downstream

    def logit(p):
        return jnp.log(p) - jnp.log1p(-p)

    required = math.ceil(d.min_doses) * d.dose_car_pos_cells  # floor(x / dose) >= min_doses
    return {
        "viability": logit(released["product_viability"]) - logit(d.min_viability),
        "car_pos": logit(harvest["car_pos_fraction"]) - logit(d.min_car_pos_fraction),
        "vcn": math.log(d.max_vcn_per_transduced_cell)
        - jnp.log(harvest["vcn_per_transduced_cell"]),
        "dose": jnp.log(released["product_viable_car_pos_cells"]) - math.log(required),
    }


def medium_use(recipe: Recipe, values: dict[str, Array]) -> tuple[Array, Array]:
    """``(medium_mL, il2_IU)`` used by a batch: the seed volume, the feeds and the exchanged
    volume (``fraction`` of the culture volume then, which is the seed volume plus earlier
    feeds minus earlier samples); events after the harvest are not performed."""
    harvest = values["harvest_time_h"]
    samples = jnp.asarray(recipe.sample_times_h, float)
    feed_t, feed_v = values["feed_time_h"], values["feed_volume_ml"]
    feeds_done = jnp.where(feed_t <= harvest, feed_v, 0.0)

    def volume_at(t):
        fed = jnp.sum(jnp.where(feed_t < t, feeds_done, 0.0))
        sampled = recipe.sample_volume_ml * jnp.sum(samples <= t)
        return values["seed_volume_ml"] + fed - sampled

    exchanged = sum(
        jnp.where(t <= harvest, f * volume_at(t), 0.0)
        for t, f in zip(values["exchange_time_h"], values["exchange_fraction"], strict=True)
    )
    medium_ml = values["seed_volume_ml"] + jnp.sum(feeds_done) + exchanged
    return medium_ml, medium_ml * values["medium_il2_IU_per_mL"]


def donor_outcomes(
    values: dict[str, Array],
    params: KineticParameters,
    recipe: Recipe,
    downstream: Downstream,
    prices: Prices,
    temperature: float | Array,
    structure: ModelStructure,
    solver: SolverSettings,
) -> dict[str, Array]:
    """One donor's batch under the decision ``values`` (traceable; ``vmap`` over donors).

    **Returns** (scalars): ``conforming`` (exact, 0/1), ``p_smooth`` (surrogate),
    ``product_viable_car_pos_cells`` (cells), ``doses_smooth`` (CAR+ cells / dose, not rounded),
    ``conforming_doses`` (exact whole doses of a conforming batch), ``memory_like_fraction``
    (at harvest), ``vector_TU`` (MOI x viable cells at transduction), ``medium_mL``,
    ``cost`` (USD), ``success`` (solver). A failed solve counts as a non-conforming batch.
    """
    schedule = schedule_from_values(recipe, values)
    transduction_h = recipe.activation_time_h + values["transduction_delay_h"]
    trajectory = simulate(params, schedule, transduction_h.reshape(1), structure, solver)
    ok = trajectory.success
    # A failed solve's states are NaN; a finite stand-in (ones) keeps the gated outputs and,
    # under grad, their derivatives finite (where(ok, f(NaN), 0) differentiates to NaN).
    end_state, states = jax.tree.map(
        lambda x: jnp.where(ok, x, jnp.ones_like(x)), (trajectory.end_state, trajectory.states)
    )
    harvest = observables(end_state)
    released = product(harvest, downstream)
    vector_tu = values["moi"] * observables(states)["viable_cells"][0]
    medium_ml, il2_iu = medium_use(recipe, values)
    days = values["harvest_time_h"] / 24.0
    cost = (
        prices.vector_per_1e9_TU * vector_tu / 1e9
        + prices.medium_per_L * medium_ml / 1e3
        + prices.il2_per_1e6_IU * il2_iu / 1e6
        + prices.cartridge_per_day * days
        + prices.fixed_per_batch
    )
    p_smooth = smooth_conformance(harvest, released, downstream, temperature)
    zero = jnp.zeros(())
    return {
        "conforming": jnp.where(ok & released["conforming"], 1.0, 0.0),
        "p_smooth": jnp.where(ok, p_smooth, zero),
        "product_viable_car_pos_cells": jnp.where(
            ok, released["product_viable_car_pos_cells"], zero
        ),
        "doses_smooth": jnp.where(
            ok, released["product_viable_car_pos_cells"] / downstream.dose_car_pos_cells, zero
        ),
        "conforming_doses": jnp.where(ok, released["conforming_doses"], zero),
        "memory_like_fraction": jnp.where(ok, harvest["memory_like_fraction"], zero),
        "vector_TU": vector_tu,
        "medium_mL": medium_ml,
        "cost": cost,
        "success": jnp.where(ok, 1.0, 0.0),
    }


def objective_score(outcomes: dict[str, Array], objective: str, *, exact: bool) -> Float[Array, ""]:
    """The objective (units of :data:`OBJECTIVES`) from per-donor ``outcomes`` (leading donor
    axis): exact pass/fail when ``exact``, else the smooth surrogate."""
    passes = outcomes["conforming"] if exact else outcomes["p_smooth"]
    doses = outcomes["conforming_doses"] if exact else passes * outcomes["doses_smooth"]
    if objective == "p_conforming":
        return jnp.mean(passes)
    if objective == "expected_conforming_doses":
        return jnp.mean(doses)
    if objective == "cost_per_conforming_dose":
        return jnp.mean(outcomes["cost"]) / jnp.mean(doses)
    if objective == "memory_like_at_harvest":
        return jnp.mean(passes * outcomes["memory_like_fraction"])
    raise ValueError(f"optimize.objective={objective!r}: choose from {list(OBJECTIVES)}")


def objective_loss(
    outcomes: dict[str, Array],
    objective: str,
    *,
    exact: bool,
    cost_weight: float | Array = 0.0,
    cost_scale: float | Array = 1.0,
) -> Float[Array, ""]:
    """The quantity minimized: ``-score`` (or ``+score`` for a cost objective) plus
    ``cost_weight x mean cost / cost_scale`` (the Pareto scalarization)."""
    score = objective_score(outcomes, objective, exact=exact)
    sign = 1.0 if objective == "cost_per_conforming_dose" else -1.0
    return sign * score + cost_weight * jnp.mean(outcomes["cost"]) / cost_scale
