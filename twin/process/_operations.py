"""Unit operations: one final class each, and the registry every operation table derives from.

An operation is a record (name, code, event fields, same-time order) with two methods: its exact
jump map on the culture state, and the block of slots it places in a differentiable schedule
(:func:`~twin.process.schedule_from_values`). :data:`UNIT_OPERATIONS` lists them in code order;
:data:`OPERATIONS`, :data:`OPERATION_CODE`, :data:`REQUIRED_FIELDS`, :data:`JUMP_MAPS` ... are
views of it. Adding an operation means writing one class and appending it to the registry with
the next code: codes are stored in schedules and index the simulator's ``lax.switch`` table, so
existing codes never change.

Jump maps are selected with ``lax.switch`` on the code, so each must accept any event (unused
fields are zero) and stay differentiable in the event's values.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, NamedTuple, final

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..kinetics import CELLS_PER_UNIT, TU_PER_UNIT, CultureState, KineticParameters

if TYPE_CHECKING:
    from ._recipe import Recipe

# The numeric fields of an event (RUN_DATA.md, events.csv), in column order.
EVENT_FIELDS: tuple[str, ...] = (
    "cells",
    "viability",
    "volume_ml",
    "moi",
    "fraction",
    "glucose_mM",
    "il2_IU_per_mL",
)
_MEDIUM = ("glucose_mM", "il2_IU_per_mL")  # fresh-medium composition

# A differentiable schedule's slots for one operation: times (h) and {field: values}, each (n,).
DesignBlock = tuple[Float[Array, " n"], dict[str, Float[Array, " n"]]]


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


class UnitOperation(eqx.Module):
    """A unit operation (abstract; each operation is a final subclass).

    **Class variables:** ``name`` (as in events.csv), ``code`` (its index in the simulator's
    switch table; never reuse or change one), ``required_fields`` and ``optional_fields`` (event
    fields it takes), ``positive_fields`` (required fields that must be > 0), ``same_time_order``
    (rank among operations at one time, lower first: a new operation between two others takes a
    value between theirs) and ``changes_state`` (``False`` if the jump map is the identity).
    """

    name: ClassVar[str]
    code: ClassVar[int]
    same_time_order: ClassVar[float]
    required_fields: ClassVar[tuple[str, ...]] = ()
    optional_fields: ClassVar[tuple[str, ...]] = ()
    positive_fields: ClassVar[tuple[str, ...]] = ()
    changes_state: ClassVar[bool] = True

    @abc.abstractmethod
    def jump(self, state: CultureState, event: EventValues, p: KineticParameters) -> CultureState:
        """The state just after the event, from the state just before it."""

    @abc.abstractmethod
    def design_block(self, recipe: Recipe, values: dict[str, Array]) -> DesignBlock | None:
        """This operation's slots in the schedule of ``recipe`` with decision ``values``
        (traceable), or ``None`` if a designed recipe has none."""


def _full(n: int, x) -> Float[Array, " n"]:
    return jnp.broadcast_to(jnp.asarray(x, float), (n,))


def _medium(recipe: Recipe, values: dict[str, Array], n: int) -> dict[str, Float[Array, " n"]]:
    """The designed fresh medium: the recipe's glucose, the decision IL-2."""
    return {
        "glucose_mM": _full(n, recipe.medium_glucose_mM),
        "il2_IU_per_mL": _full(n, values["medium_il2_IU_per_mL"]),
    }


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


@final
class Noop(UnitOperation):
    """Padding slot (never recorded): nothing happens. Events the harvest overtakes in a designed
    schedule become no-ops, ranked after every operation at their time."""

    name = "noop"
    code = 0
    same_time_order = 7
    changes_state = False

    def jump(self, state, event, p):
        return state

    def design_block(self, recipe, values):
        return None


@final
class Seed(UnitOperation):
    """Start a fresh culture: ``cells`` viable cells at ``viability`` in ``volume_ml`` of medium."""

    name = "seed"
    code = 1
    same_time_order = 0
    required_fields = ("cells", "viability", "volume_ml")
    optional_fields = _MEDIUM
    positive_fields = ("cells", "viability", "volume_ml")

    def jump(self, state, event, p):
        viable = event.cells / CELLS_PER_UNIT
        dead = viable * (1.0 - event.viability) / event.viability
        zeros = jax.tree.map(jnp.zeros_like, state)
        return eqx.tree_at(
            lambda s: (
                s.resting,
                s.effector_like,
                s.dead,
                s.volume_ml,
                s.glucose_mM,
                s.il2_IU_per_mL,
            ),
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

    def design_block(self, recipe, values):
        return jnp.zeros(1), {
            "cells": _full(1, values["seed_cells"]),
            "viability": _full(1, recipe.seed_viability),
            "volume_ml": _full(1, values["seed_volume_ml"]),
            **_medium(recipe, values, 1),
        }


@final
class Activate(UnitOperation):
    """Activation reagent: responders enter the lag chain, the rest become unresponsive."""

    name = "activate"
    code = 2
    same_time_order = 4

    def jump(self, state, event, p):
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

    def design_block(self, recipe, values):
        return _full(1, recipe.activation_time_h), {}


@final
class Transduce(UnitOperation):
    """Add vector: ``moi`` transducing units per viable cell present now."""

    name = "transduce"
    code = 3
    same_time_order = 5
    required_fields = ("moi",)

    def jump(self, state, event, p):
        added = event.moi * state.viable * CELLS_PER_UNIT / TU_PER_UNIT
        return eqx.tree_at(lambda s: s.vector, state, state.vector + added)

    def design_block(self, recipe, values):
        time_h = recipe.activation_time_h + values["transduction_delay_h"]
        return _full(1, time_h), {"moi": _full(1, values["moi"])}


@final
class Exchange(UnitOperation):
    """Replace ``fraction`` of the medium with fresh medium; cells (live and dead) are retained."""

    name = "exchange"
    code = 4
    same_time_order = 2
    required_fields = ("fraction",)
    optional_fields = _MEDIUM

    def jump(self, state, event, p):
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

    def design_block(self, recipe, values):
        n = len(recipe.exchanges)
        return values["exchange_time_h"].reshape(n), {
            "fraction": values["exchange_fraction"].reshape(n),
            **_medium(recipe, values, n),
        }


@final
class Feed(UnitOperation):
    """Add a bolus of ``volume_ml`` fresh medium (concentrations mix by volume)."""

    name = "feed"
    code = 5
    same_time_order = 3
    required_fields = ("volume_ml",)
    optional_fields = _MEDIUM

    def jump(self, state, event, p):
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

    def design_block(self, recipe, values):
        n = len(recipe.feeds)
        return values["feed_time_h"].reshape(n), {
            "volume_ml": values["feed_volume_ml"].reshape(n),
            **_medium(recipe, values, n),
        }


@final
class Sample(UnitOperation):
    """Withdraw ``volume_ml`` of well-mixed culture (cells and vector leave in proportion)."""

    name = "sample"
    code = 6
    same_time_order = 1  # measure before the medium or reagents change
    required_fields = ("volume_ml",)

    def jump(self, state, event, p):
        share = event.volume_ml / state.volume_ml
        kept = _scale_extensive(state, 1.0 - share)
        withdrawn = share * (state.viable + state.dead)
        return eqx.tree_at(
            lambda s: (s.volume_ml, s.removed),
            kept,
            (state.volume_ml - event.volume_ml, state.removed + withdrawn),
        )

    def design_block(self, recipe, values):
        n = len(recipe.sample_times_h)
        times = jnp.asarray(recipe.sample_times_h, float).reshape(n)
        return times, {"volume_ml": _full(n, recipe.sample_volume_ml)}


@final
class Harvest(UnitOperation):
    """End of culture: the state is read here; downstream processing is `twin.process.product`."""

    name = "harvest"
    code = 7
    same_time_order = 6  # last of the recorded operations at its time
    changes_state = False

    def jump(self, state, event, p):
        return state

    def design_block(self, recipe, values):
        return _full(1, values["harvest_time_h"]), {}


class OperationTables(NamedTuple):
    """The tables derived from a registry of operations (see :func:`operation_tables`)."""

    operations: tuple[str, ...]
    operation_code: dict[str, int]
    recorded_operations: tuple[str, ...]
    required_fields: dict[str, tuple[str, ...]]
    optional_fields: dict[str, tuple[str, ...]]
    same_time_order: dict[str, float]
    identity_operations: tuple[str, ...]
    jump_maps: tuple[Callable[[CultureState, EventValues, KineticParameters], CultureState], ...]


def operation_tables(registry: Sequence[UnitOperation]) -> OperationTables:
    """Check a registry (operations in code order) and derive its tables.

    **Raises:** ``ValueError`` naming the operation if codes are not 0, 1, 2, ... in order,
    names or same-time orders repeat, a field is not an event field (or is both required and
    optional, or positive but not required), code 0 is not an identity ``noop``, there is no
    ``seed`` or ``harvest``, or the harvest and then the noop do not rank last at a time.
    """
    for op in registry:
        for attr in ("name", "code", "same_time_order"):
            if not hasattr(op, attr):
                raise ValueError(f"{type(op).__name__} does not set the class variable {attr!r}")
    names = [op.name for op in registry]
    for position, op in enumerate(registry):
        where = f"operation {op.name!r} ({type(op).__name__})"
        if op.code != position:
            raise ValueError(f"{where}: code={op.code}, expected {position} (codes are 0, 1, ...)")
        if names.count(op.name) > 1:
            raise ValueError(f"{where}: name used by more than one operation")
        for field in op.required_fields + op.optional_fields:
            if field not in EVENT_FIELDS:
                raise ValueError(f"{where}: {field!r} is not an event field {EVENT_FIELDS}")
        if set(op.required_fields) & set(op.optional_fields):
            raise ValueError(f"{where}: a field is both required and optional")
        if not set(op.positive_fields) <= set(op.required_fields):
            raise ValueError(f"{where}: positive_fields={op.positive_fields} not all required")
    orders = [op.same_time_order for op in registry]
    if len(set(orders)) != len(orders):
        raise ValueError(f"same_time_order repeats: {dict(zip(names, orders, strict=True))}")
    noop = registry[0] if registry else None
    fields = () if noop is None else noop.required_fields + noop.optional_fields
    if noop is None or noop.name != "noop" or noop.changes_state or fields:
        raise ValueError("code 0 must be the padding 'noop' (no fields, changes_state=False)")
    for role in ("seed", "harvest"):
        if role not in names:
            raise ValueError(f"the registry needs a {role!r} operation")
    last = sorted(orders)[-2:]
    if [registry[names.index("harvest")].same_time_order, noop.same_time_order] != last:
        raise ValueError("same_time_order: harvest must rank after every operation, noop after it")
    recorded = registry[1:]
    return OperationTables(
        operations=tuple(names),
        operation_code={op.name: op.code for op in registry},
        recorded_operations=tuple(op.name for op in recorded),
        required_fields={op.name: op.required_fields for op in recorded},
        optional_fields={op.name: op.optional_fields for op in recorded},
        same_time_order={op.name: op.same_time_order for op in recorded},
        identity_operations=tuple(op.name for op in registry if not op.changes_state),
        jump_maps=tuple(op.jump for op in registry),
    )


# The registry, in code order. Codes are stored in schedules: append, never reorder.
UNIT_OPERATIONS: tuple[UnitOperation, ...] = (
    Noop(),
    Seed(),
    Activate(),
    Transduce(),
    Exchange(),
    Feed(),
    Sample(),
    Harvest(),
)
UNIT_OPERATION: dict[str, UnitOperation] = {op.name: op for op in UNIT_OPERATIONS}
_TABLES = operation_tables(UNIT_OPERATIONS)
OPERATIONS = _TABLES.operations
OPERATION_CODE = _TABLES.operation_code
RECORDED_OPERATIONS = _TABLES.recorded_operations
REQUIRED_FIELDS = _TABLES.required_fields
OPTIONAL_FIELDS = _TABLES.optional_fields
SAME_TIME_ORDER = _TABLES.same_time_order
IDENTITY_OPERATIONS = _TABLES.identity_operations
JUMP_MAPS = _TABLES.jump_maps
