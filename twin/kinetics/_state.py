"""The culture state of one cartridge: a named pytree.

Cell counts are held in millions of cells (:data:`CELLS_PER_UNIT`) and functional vector in
millions of transducing units, so that the solver's tolerances act on numbers of order one;
observables (``twin.observe``) convert back to cells.

Cell compartments (viable unless named otherwise):

- ``resting``: seeded T cells not yet exposed to the activation reagent;
- ``lag``: cells on their way to the activated state (an Erlang chain, ``lag_stages`` long);
- ``unresponsive``: cells that did not respond to activation (never divide);
- ``susceptible``: activated, transducible cells by integrated-copy class 0..K (K means >= K);
- ``refractory``: activated cells that cannot be transduced (always copy class 0);
- ``effector_like``: how many viable cells are differentiated (effector-like); the rest are
  memory-like. Non-activated cells keep the seed's share; activated cells differentiate with
  divisions and time;
- ``dead``: intact dead cells (they count against viability until they lyse).

Bookkeeping for conservation: ``lysed``, ``removed`` (viable + dead withdrawn by samples) and
``born`` (cumulative divisions) satisfy viable + dead + lysed + removed - born = cells seeded.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

CELLS_PER_UNIT = 1.0e6  # state cell counts are in millions
TU_PER_UNIT = 1.0e6  # state vector amounts are in millions of transducing units


@dataclasses.dataclass(frozen=True)
class ModelStructure:
    """Structural (shape-defining) choices of the kinetic model; hashable, static under jit."""

    lag_stages: int = 4
    max_copies: int = 6

    def __post_init__(self):
        if self.lag_stages < 1:
            raise ValueError(f"lag_stages must be >= 1, got {self.lag_stages}")
        if self.max_copies < 5:
            raise ValueError(f"max_copies must be >= 5, got {self.max_copies}")


class CultureState(eqx.Module):
    resting: Float[Array, "*batch"]
    lag: Float[Array, "*batch stages"]
    unresponsive: Float[Array, "*batch"]
    susceptible: Float[Array, "*batch copies"]
    refractory: Float[Array, "*batch"]
    effector_like: Float[Array, "*batch"]
    dead: Float[Array, "*batch"]
    lysed: Float[Array, "*batch"]
    removed: Float[Array, "*batch"]
    born: Float[Array, "*batch"]
    volume_ml: Float[Array, "*batch"]
    glucose_mM: Float[Array, "*batch"]
    lactate_mM: Float[Array, "*batch"]
    il2_IU_per_mL: Float[Array, "*batch"]
    vector: Float[Array, "*batch"]
    time_since_activation_h: Float[Array, "*batch"]
    activated: Float[Array, "*batch"]  # 0 before the activate event, 1 after (a clock switch)

    @property
    def activated_cells(self) -> Float[Array, "*batch"]:
        return self.susceptible.sum(-1) + self.refractory

    @property
    def non_activated_cells(self) -> Float[Array, "*batch"]:
        return self.resting + self.lag.sum(-1) + self.unresponsive

    @property
    def viable(self) -> Float[Array, "*batch"]:
        return self.activated_cells + self.non_activated_cells


def empty_state(structure: ModelStructure) -> CultureState:
    """An all-zero state (before seeding)."""
    zero = jnp.zeros(())
    return CultureState(
        resting=zero,
        lag=jnp.zeros(structure.lag_stages),
        unresponsive=zero,
        susceptible=jnp.zeros(structure.max_copies + 1),
        refractory=zero,
        effector_like=zero,
        dead=zero,
        lysed=zero,
        removed=zero,
        born=zero,
        volume_ml=zero,
        glucose_mM=zero,
        lactate_mM=zero,
        il2_IU_per_mL=zero,
        vector=zero,
        time_since_activation_h=zero,
        activated=zero,
    )
