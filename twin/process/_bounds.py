"""Plausibility bounds: values that parse and are in range, yet no cartridge could hold.

One set of bounds serves the recipe path (:meth:`~twin.process.Recipe.events`) and the data path
(``twin.data`` validation), so a value refused in a recipe is refused in a batch record too.
A command sets its bounds (config group ``bounds``) once, with :func:`bounds_in_force`: every
check that takes the default, :data:`DEFAULT_BOUNDS`, then uses them, including the re-checks
deep inside (``build_schedule``), so a value accepted with a raised bound is accepted all the
way through.
A typo of a few orders of magnitude (seed cells 1e30, a feed of 5000 mL, harvest at 1e7 h)
would otherwise be simulated, at best uselessly, at worst for hours and gigabytes.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from collections.abc import Iterator


@dataclasses.dataclass(frozen=True)
class PlausibilityBounds:
    """Upper bounds of plausible values (lower bounds, >= 0 and fractions, are the contract's).

    **Fields** (units in the names):

    - ``max_time_h``: latest event or measurement (h since seed); bounds a simulation's horizon.
    - ``max_cells``: most cells in a seed or a measured cell count.
    - ``cartridge_capacity_ml``: the culture volume after any event may not exceed it.
    - ``max_glucose_mM``, ``max_lactate_mM``, ``max_il2_IU_per_mL``: concentrations (medium,
      measured).
    - ``max_moi``: transducing units per cell.
    - ``max_vcn_per_cell``: measured vector copies per cell.
    """

    max_time_h: float = 2000.0
    max_cells: float = 1.0e12
    cartridge_capacity_ml: float = 1000.0
    max_glucose_mM: float = 300.0
    max_lactate_mM: float = 300.0
    max_il2_IU_per_mL: float = 1.0e5
    max_moi: float = 1000.0
    max_vcn_per_cell: float = 1000.0

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{field.name}={value!r}: must be a finite number > 0")

    def event_limit(self, field: str) -> float | None:
        """The bound of an event field (``time_h``, ``cells``, ...), or ``None``."""
        return {
            "time_h": self.max_time_h,
            "cells": self.max_cells,
            "volume_ml": self.cartridge_capacity_ml,
            "glucose_mM": self.max_glucose_mM,
            "il2_IU_per_mL": self.max_il2_IU_per_mL,
            "moi": self.max_moi,
        }.get(field)

    def measurement_limit(self, variable: str) -> float | None:
        """The bound of a measured variable, or ``None`` (fractions have their own)."""
        return {
            "viable_cells": self.max_cells,
            "total_cells": self.max_cells,
            "glucose_mM": self.max_glucose_mM,
            "lactate_mM": self.max_lactate_mM,
            "il2_IU_per_mL": self.max_il2_IU_per_mL,
            "vcn_per_cell": self.max_vcn_per_cell,
        }.get(variable)

    def limit_message(self, field: str, limit: float) -> str:
        name = {
            "time_h": "max_time_h",
            "cells": "max_cells",
            "volume_ml": "cartridge_capacity_ml",
            "viable_cells": "max_cells",
            "total_cells": "max_cells",
            "glucose_mM": "max_glucose_mM",
            "lactate_mM": "max_lactate_mM",
            "il2_IU_per_mL": "max_il2_IU_per_mL",
            "moi": "max_moi",
            "vcn_per_cell": "max_vcn_per_cell",
        }[field]
        return f"is implausibly large (above bounds.{name}={limit:g})"


_FIELDS = frozenset(field.name for field in dataclasses.fields(PlausibilityBounds))
_IN_FORCE: contextvars.ContextVar[PlausibilityBounds | None] = contextvars.ContextVar(
    "plausibility_bounds", default=None
)


class _BoundsInForce(PlausibilityBounds):
    """The bounds set by :func:`bounds_in_force`, else the defaults: read at each use, so a
    default argument (``bounds=DEFAULT_BOUNDS``) follows the command's configured bounds."""

    def __getattribute__(self, name: str):
        if name in _FIELDS:
            in_force = _IN_FORCE.get()
            if in_force is not None:
                return getattr(in_force, name)
        return super().__getattribute__(name)


DEFAULT_BOUNDS: PlausibilityBounds = _BoundsInForce()


@contextlib.contextmanager
def bounds_in_force(bounds: PlausibilityBounds | None) -> Iterator[PlausibilityBounds]:
    """Use ``bounds`` (``None``: the defaults) wherever :data:`DEFAULT_BOUNDS` is the default,
    within the ``with`` block (per thread and task: a context variable)."""
    if isinstance(bounds, _BoundsInForce):  # the view itself: keep what is in force
        bounds = _IN_FORCE.get()
    token = _IN_FORCE.set(bounds)
    try:
        yield bounds if bounds is not None else PlausibilityBounds()
    finally:
        _IN_FORCE.reset(token)
