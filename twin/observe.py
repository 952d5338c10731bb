"""Observables: what the platform's assays (Cell Q) would read from a culture state.

Every function accepts states with any leading batch/time axes. ``vcn_per_cell`` counts
the last copy class as exactly K copies (it lumps K or more), so it is a lower bound when
that class is populated; choose K (``ModelStructure.max_copies``) so it stays near empty.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .kinetics import CELLS_PER_UNIT, TU_PER_UNIT, CultureState, smallest_normal

OBSERVABLES: dict[str, str] = {
    "viable_cells": "cells",
    "viability": "fraction",
    "glucose_mM": "mM",
    "lactate_mM": "mM",
    "il2_IU_per_mL": "IU/mL",
    "car_pos_fraction": "fraction",
    "vcn_per_cell": "copies/cell",
    "vcn_per_transduced_cell": "copies/cell",
    "viable_car_pos_cells": "cells",
    "memory_like_fraction": "fraction",
    "dead_cells": "cells",
    "volume_ml": "mL",
    "vector_TU_per_mL": "TU/mL",
}


def _safe_ratio(num, den):
    """num / den, with 0 / 0 = 0 (an empty culture, no transduced cells yet); NaN (after the
    schedule's end) stays NaN. A branch-free guard (:func:`twin.kinetics.smallest_normal`):
    ``den`` + the smallest normal number equals ``den`` for every denominator the twin
    meets. The ratios' gradients are never taken where ``den`` is 0 (the assays' ratios have
    the viable count below, which a seeded culture keeps above 0)."""
    return num / (den + smallest_normal(den))


def copy_counts(state: CultureState) -> Float[Array, " copies"]:
    """Copies per class: 0, 1, ..., K (the last class lumps K or more)."""
    return jnp.arange(state.susceptible.shape[-1], dtype=state.susceptible.dtype)


@jax.jit
def observables(state: CultureState) -> dict[str, Float[Array, "*batch"]]:
    """All observables of :data:`OBSERVABLES` (units there) for a (batched) state."""
    viable = state.viable
    transduced = state.susceptible[..., 1:].sum(-1)
    copies = state.susceptible @ copy_counts(state)
    return {
        "viable_cells": CELLS_PER_UNIT * viable,
        "viability": _safe_ratio(viable, viable + state.dead),
        "glucose_mM": state.glucose_mM,
        "lactate_mM": state.lactate_mM,
        "il2_IU_per_mL": state.il2_IU_per_mL,
        "car_pos_fraction": _safe_ratio(transduced, viable),
        "vcn_per_cell": _safe_ratio(copies, viable),
        "vcn_per_transduced_cell": _safe_ratio(copies, transduced),
        "viable_car_pos_cells": CELLS_PER_UNIT * transduced,
        "memory_like_fraction": _safe_ratio(viable - state.effector_like, viable),
        "dead_cells": CELLS_PER_UNIT * state.dead,
        "volume_ml": state.volume_ml,
        "vector_TU_per_mL": _safe_ratio(TU_PER_UNIT * state.vector, state.volume_ml),
    }
