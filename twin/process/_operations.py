"""Unit operations as exact jump maps on the culture state.

Each map takes the state just before the event, the event's values (one slot of a
:class:`~twin.process.Schedule`) and the kinetic parameters, and returns the state just after.
They are selected with ``lax.switch`` on the operation code, so every map must accept any
event (unused fields are zero) and stay differentiable in the event's values.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..kinetics import CELLS_PER_UNIT, TU_PER_UNIT, CultureState, KineticParameters
from ._schedule import OPERATIONS


class EventValues(eqx.Module):
    """One event's values (scalars), as cut from a schedule."""

    time_h: Float[Array, ""]
    cells: Float[Array, ""]
    viability: Float[Array, ""]
    volume_ml: Float[Array, ""]
    moi: Float[Array, ""]
    fraction: Float[Array, ""]
    glucose_mM: Float[Array, ""]
    il2_IU_per_mL: Float[Array, ""]


def _scale_extensive(state: CultureState, keep: Float[Array, ""]) -> CultureState:
    """Keep a share ``keep`` of every cell compartment and of the vector (volume untouched)."""
    return eqx.tree_at(
        lambda s: (
            s.resting,
            s.lag,
            s.unresponsive,
            s.susceptible,
            s.refractory,
            s.effector_like,
            s.dead,
            s.vector,
        ),
        state,
        (
            keep * state.resting,
            keep * state.lag,
            keep * state.unresponsive,
            keep * state.susceptible,
            keep * state.refractory,
            keep * state.effector_like,
            keep * state.dead,
            keep * state.vector,
        ),
    )


def noop(state: CultureState, event: EventValues, p: KineticParameters) -> CultureState:
    return state


def seed(state: CultureState, event: EventValues, p: KineticParameters) -> CultureState:
    """Start a fresh culture: ``cells`` viable cells at ``viability`` in ``volume_ml`` of medium."""
    viable = event.cells / CELLS_PER_UNIT
    dead = viable * (1.0 - event.viability) / event.viability
    zeros = jax.tree.map(jnp.zeros_like, state)
    return eqx.tree_at(
        lambda s: (s.resting, s.effector_like, s.dead, s.volume_ml, s.glucose_mM, s.il2_IU_per_mL),
        zeros,
        (
            viable,
            (1 - p.seed_memory_like_fraction) * viable,
            dead,
            event.volume_ml,
            event.glucose_mM,
            event.il2_IU_per_mL,
        ),
    )


def activate(state: CultureState, event: EventValues, p: KineticParameters) -> CultureState:
    """Activation reagent: responders enter the lag chain, the rest become unresponsive."""
    responders = p.activation_efficiency * state.resting
    return eqx.tree_at(
        lambda s: (s.resting, s.lag, s.unresponsive, s.activated),
        state,
        (
            jnp.zeros_like(state.resting),
            jnp.concatenate([state.lag[:1] + responders, state.lag[1:]]),  # no scatter
            state.unresponsive + state.resting - responders,
            jnp.ones_like(state.activated),
        ),
    )


def transduce(state: CultureState, event: EventValues, p: KineticParameters) -> CultureState:
    """Add vector: ``moi`` transducing units per viable cell present now."""
    added = event.moi * state.viable * CELLS_PER_UNIT / TU_PER_UNIT
    return eqx.tree_at(lambda s: s.vector, state, state.vector + added)


def exchange(state: CultureState, event: EventValues, p: KineticParameters) -> CultureState:
    """Replace ``fraction`` of the medium with fresh medium; cells (live and dead) are retained."""
    f = event.fraction
    return eqx.tree_at(
        lambda s: (s.glucose_mM, s.lactate_mM, s.il2_IU_per_mL, s.vector),
        state,
        (
            (1 - f) * state.glucose_mM + f * event.glucose_mM,
            (1 - f) * state.lactate_mM,
            (1 - f) * state.il2_IU_per_mL + f * event.il2_IU_per_mL,
            (1 - f) * state.vector,
        ),
    )


def feed(state: CultureState, event: EventValues, p: KineticParameters) -> CultureState:
    """Add a bolus of ``volume_ml`` fresh medium (concentrations mix by volume)."""
    old, added = state.volume_ml, event.volume_ml
    new = old + added
    return eqx.tree_at(
        lambda s: (s.volume_ml, s.glucose_mM, s.lactate_mM, s.il2_IU_per_mL),
        state,
        (
            new,
            (old * state.glucose_mM + added * event.glucose_mM) / new,
            old * state.lactate_mM / new,
            (old * state.il2_IU_per_mL + added * event.il2_IU_per_mL) / new,
        ),
    )


def sample(state: CultureState, event: EventValues, p: KineticParameters) -> CultureState:
    """Withdraw ``volume_ml`` of well-mixed culture (cells and vector leave in proportion)."""
    share = event.volume_ml / state.volume_ml
    kept = _scale_extensive(state, 1.0 - share)
    withdrawn = share * (state.viable + state.dead)
    return eqx.tree_at(
        lambda s: (s.volume_ml, s.removed),
        kept,
        (state.volume_ml - event.volume_ml, state.removed + withdrawn),
    )


def harvest(state: CultureState, event: EventValues, p: KineticParameters) -> CultureState:
    """End of culture: the state is read here; downstream processing is `twin.process.product`."""
    return state


JUMP_MAPS = (noop, seed, activate, transduce, exchange, feed, sample, harvest)
assert tuple(f.__name__ for f in JUMP_MAPS) == OPERATIONS  # codes index this table
