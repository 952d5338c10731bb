"""Downstream of harvest: wash/concentrate, formulate to doses, cryopreserve, release checks.

Works on the harvest observables (``twin.observe.observables`` of the end state), so it accepts
any leading batch axes and stays differentiable except for the whole-dose count and the pass/fail
flags (``product_quality`` gives smooth margins for optimization).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jaxtyping import Array, Float


def _spec(default: float, unit: str, source: str):
    return dataclasses.field(default=default, metadata={"unit": unit, "source": source})


@dataclasses.dataclass(frozen=True)
class Downstream:
    """Downstream processing and release specification (Hydra config ``downstream``)."""

    harvest_recovery: float = _spec(
        0.87, "fraction", "lit. 86-90 % (Cytiva Sepax note; Springuel 2026 > 90 %)"
    )
    dead_cell_wash_removal: float = _spec(0.5, "fraction", "approx.")
    cryo_viable_loss_fraction: float = _spec(
        0.10, "fraction", "approx.; post-thaw viability loss 5-15 points (DOMAIN.md)"
    )
    dose_car_pos_cells: float = _spec(
        1.0e8, "CAR+ viable cells", "lit. Breyanzi 50-110e6, Carvykti max 1e8 (labels)"
    )
    dose_volume_ml: float = _spec(20.0, "mL", "approx.")
    min_viability: float = _spec(0.70, "fraction", "lit. 70-80 % (Castella 2019; DOMAIN.md)")
    min_car_pos_fraction: float = _spec(0.15, "fraction", "lit. 10-20 % (Castella 2019; DOMAIN.md)")
    max_vcn_per_transduced_cell: float = _spec(
        5.0, "copies/cell", "lit. < 5 per transduced cell (DOMAIN.md)"
    )
    min_doses: float = _spec(1.0, "doses", "a batch must yield at least one dose")

    def __post_init__(self):
        for name in (
            "harvest_recovery",
            "dead_cell_wash_removal",
            "cryo_viable_loss_fraction",
            "min_viability",
            "min_car_pos_fraction",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"downstream.{name}={value!r}: must be a fraction in [0, 1]")
        for name in ("dose_car_pos_cells", "dose_volume_ml", "max_vcn_per_transduced_cell"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"downstream.{name}={value!r}: must be > 0")


def product(
    harvest: dict[str, Float[Array, "*batch"]], downstream: Downstream
) -> dict[str, Float[Array, "*batch"]]:
    """The formulated, thawed product of a harvest and its release checks.

    **Arguments:** ``harvest``: observables at harvest (``viable_cells``, ``viability``,
    ``car_pos_fraction``, ``vcn_per_transduced_cell``); ``downstream``: the settings.

    **Returns:** ``product_viable_cells``, ``product_viability``, ``product_viable_car_pos_cells``,
    ``doses`` (whole doses at the configured dose), ``formulated_volume_ml``, the pass flags
    ``passes_viability``, ``passes_car_pos``, ``passes_vcn``, ``passes_dose`` and ``conforming``,
    and ``conforming_doses`` (doses of a conforming batch, else 0).
    """
    d = downstream
    viable = harvest["viable_cells"]
    viability = harvest["viability"]
    dead = jnp.where(
        viability > 0, viable * (1 - viability) / jnp.where(viability > 0, viability, 1), 0.0
    )
    viable_washed = d.harvest_recovery * viable
    dead_washed = d.harvest_recovery * (1 - d.dead_cell_wash_removal) * dead
    viable_thawed = (1 - d.cryo_viable_loss_fraction) * viable_washed
    dead_thawed = dead_washed + d.cryo_viable_loss_fraction * viable_washed
    total = viable_thawed + dead_thawed
    product_viability = jnp.where(total > 0, viable_thawed / jnp.where(total > 0, total, 1), 0.0)
    car_pos = harvest["car_pos_fraction"] * viable_thawed
    doses = jnp.floor(car_pos / d.dose_car_pos_cells)
    checks = {
        "passes_viability": product_viability >= d.min_viability,
        "passes_car_pos": harvest["car_pos_fraction"] >= d.min_car_pos_fraction,
        "passes_vcn": harvest["vcn_per_transduced_cell"] <= d.max_vcn_per_transduced_cell,
        "passes_dose": doses >= d.min_doses,
    }
    conforming = checks["passes_viability"] & checks["passes_car_pos"]
    conforming = conforming & checks["passes_vcn"] & checks["passes_dose"]
    return {
        "product_viable_cells": viable_thawed,
        "product_viability": product_viability,
        "product_viable_car_pos_cells": car_pos,
        "doses": doses,
        "formulated_volume_ml": doses * d.dose_volume_ml,
        **checks,
        "conforming": conforming,
        "conforming_doses": jnp.where(conforming, doses, 0.0),
    }
