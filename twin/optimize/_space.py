"""The decision space: bounded process values <-> an unconstrained vector for the optimizer.

Each decision (a name of :data:`~twin.process.DESIGN_VALUES`) has a box ``[low, high]`` in
its own unit. The optimizer works on ``z`` in R^D; every entry maps through a normalized
coordinate ``u`` in ``(0, 1)`` to a value inside the box, so bounds hold by construction:

- box decisions (all but exchange/feed times): ``x = low + (high - low) u``;
- ordered time vectors (``exchange_time_h``, ``feed_time_h``): stick breaking,
  ``x_k = high - (high - low) prod_{j <= k} (1 - u_j)``, so the times stay increasing
  (positive gaps) inside the box.

A trust region of radius ``r`` around the start recipe narrows each ``u`` to
``[max(0, u0 - r), min(1, u0 + r)]``, and ``u = a + (b - a) sigmoid(z)`` (a scaled logit).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._errors import TwinInputError
from ..process import DESIGN_VALUES, Recipe, recipe_values

ORDERED: frozenset[str] = frozenset({"exchange_time_h", "feed_time_h"})
_FRACTIONS: frozenset[str] = frozenset({"exchange_fraction"})
_POSITIVE: frozenset[str] = frozenset({"seed_cells", "seed_volume_ml"})
# Closer than this (normalized units) to an edge counts as sitting at it.
_EDGE_TOL = 1e-3
# |z| beyond this the logit map is too flat for a gradient search to start from.
SEARCH_START_LIMIT = 3.0


@dataclasses.dataclass(frozen=True)
class DecisionSpace:
    """Bounded decisions over a base recipe; build with :func:`decision_space`.

    ``names`` are the decisions in vector order, ``sizes`` their entry counts; ``low`` /
    ``high`` the box per decision (units of :data:`~twin.process.DESIGN_VALUES`); ``u_low`` /
    ``u_high`` the trust region per entry in normalized units.
    """

    recipe: Recipe
    names: tuple[str, ...]
    sizes: tuple[int, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    u_low: tuple[float, ...]
    u_high: tuple[float, ...]

    @property
    def dimension(self) -> int:
        return sum(self.sizes)

    def _blocks(self, vector):
        out, start = {}, 0
        for name, size in zip(self.names, self.sizes, strict=True):
            out[name] = vector[start : start + size]
            start += size
        return out

    def to_values(self, z: Float[Array, " D"]) -> dict[str, Array]:
        """All decision values of the base recipe, with the decisions set from ``z``
        (traceable)."""
        a, b = jnp.asarray(self.u_low), jnp.asarray(self.u_high)
        u = a + (b - a) * jax.nn.sigmoid(z)
        values = recipe_values(self.recipe)
        for (name, u_block), low, high in zip(
            self._blocks(u).items(), self.low, self.high, strict=True
        ):
            if name in ORDERED:
                x = high - (high - low) * jnp.cumprod(1.0 - u_block)
            else:
                x = low + (high - low) * u_block
            values[name] = x.reshape(values[name].shape)
        return values

    def normalized(self, values: Mapping[str, Array]) -> np.ndarray:
        """The normalized coordinates ``u`` of ``values`` (NaN where a value is outside the
        box or an ordered vector is not increasing)."""
        blocks = []
        for name, low, high in zip(self.names, self.low, self.high, strict=True):
            x = np.atleast_1d(np.asarray(values[name], float))
            if name in ORDERED:
                remaining = (high - x) / (high - low)
                previous = np.concatenate([[1.0], remaining[:-1]])
                with np.errstate(divide="ignore", invalid="ignore"):
                    u = 1.0 - remaining / previous
            else:
                u = (x - low) / (high - low)
            blocks.append(np.where((u >= 0) & (u <= 1), u, np.nan))
        return np.concatenate(blocks)

    def to_unconstrained(self, values: Mapping[str, Array]) -> np.ndarray:
        """The ``z`` of ``values`` (inverse of :meth:`to_values`; values inside the trust
        region; one on its edge maps to -inf or +inf, which :meth:`to_values` maps back)."""
        u = self.normalized(values)
        a, b = np.asarray(self.u_low), np.asarray(self.u_high)
        s = np.clip((u - a) / (b - a), 0.0, 1.0)
        with np.errstate(divide="ignore"):
            return np.log(s) - np.log1p(-s)

    def start(self) -> np.ndarray:
        """``z`` of the base recipe (infinite for a value on the edge of its box, e.g. a
        recorded harvest time at the edge of the calibration data's range)."""
        return self.to_unconstrained(recipe_values(self.recipe))

    def search_start(self) -> np.ndarray:
        """Where a gradient search starts: :meth:`start`, pulled inside ``|z| <= 3`` (5 % of
        the trust region from its edge), where the logit map still has a slope."""
        return np.clip(self.start(), -SEARCH_START_LIMIT, SEARCH_START_LIMIT)

    def from_unit_cube(self, s: Float[np.ndarray, "n D"]) -> np.ndarray:
        """``z`` of points ``s`` of the unit cube spread over the trust region (for samplers)."""
        s = np.clip(s, 1e-9, 1 - 1e-9)
        return np.log(s) - np.log1p(-s)

    def edges(self, values: Mapping[str, Array]) -> dict[str, str]:
        """Per decision: ``"bound"`` if an entry sits at the box, ``"trust_region"`` if at the
        trust region's edge (inside the box), else ``""``."""
        u = self._blocks(self.normalized(values))
        a, b = self._blocks(np.asarray(self.u_low)), self._blocks(np.asarray(self.u_high))
        flags = {}
        for name in self.names:
            at_box = np.any((u[name] < _EDGE_TOL) | (u[name] > 1 - _EDGE_TOL))
            at_trust = np.any((u[name] < a[name] + _EDGE_TOL) | (u[name] > b[name] - _EDGE_TOL))
            flags[name] = "bound" if at_box else ("trust_region" if at_trust else "")
        return flags


def decision_space(
    recipe: Recipe,
    bounds: Mapping[str, tuple[float, float]],
    *,
    trust_radius: float | None = None,
) -> DecisionSpace:
    """Check ``bounds`` (decision name -> ``(low, high)``) against ``recipe``, the start.

    ``trust_radius`` (normalized units, in ``(0, 1]``; ``None``: the whole box) limits how
    far each normalized coordinate may move from the start recipe's.

    **Raises:** :class:`~twin.TwinInputError` naming ``optimize.decisions.<name>``.
    """
    if not bounds:
        raise TwinInputError("optimize.decisions: choose at least one decision")
    if trust_radius is not None and not 0 < trust_radius <= 1:
        raise TwinInputError(f"optimize.trust_radius={trust_radius!r}: must be in (0, 1] or null")
    start = recipe_values(recipe)
    problems, names, sizes, lows, highs = [], [], [], [], []
    for name, pair in bounds.items():
        key = f"optimize.decisions.{name}"
        if name not in DESIGN_VALUES:
            problems.append(f"{key}: not a decision value (choose from {list(DESIGN_VALUES)})")
            continue
        low, high = (float(v) for v in pair)
        size = int(np.size(start[name]))
        x0 = np.atleast_1d(np.asarray(start[name], float))
        if not (math.isfinite(low) and math.isfinite(high) and 0 <= low < high):
            problems.append(f"{key}=[{low:g}, {high:g}]: expected 0 <= low < high")
        elif name in _FRACTIONS and high > 1:
            problems.append(f"{key}=[{low:g}, {high:g}]: a fraction needs high <= 1")
        elif name in _POSITIVE and low <= 0:
            problems.append(f"{key}=[{low:g}, {high:g}]: needs low > 0")
        elif size == 0:
            problems.append(f"{key}: the recipe has no such steps to optimize")
        elif not np.all((low <= x0) & (x0 <= high)):
            problems.append(
                f"{key}=[{low:g}, {high:g}]: the start recipe's value "
                f"{np.array2string(x0, precision=6)} must lie inside"
            )
        elif name in ORDERED and not np.all(np.diff(x0) > 0):
            problems.append(f"{key}: the start recipe's times must be strictly increasing")
        names.append(name)
        sizes.append(size)
        lows.append(low)
        highs.append(high)
    harvest_low = (
        float(bounds["harvest_time_h"][0]) if "harvest_time_h" in bounds else recipe.harvest_time_h
    )
    for name in ORDERED & set(bounds):
        if float(bounds[name][1]) > harvest_low:
            problems.append(
                f"optimize.decisions.{name}: high={float(bounds[name][1]):g} must be <= the "
                f"lowest harvest time {harvest_low:g} h (steps stay before harvest)"
            )
    if problems:
        raise TwinInputError(problems[0], problems=problems)
    space = DecisionSpace(recipe, tuple(names), tuple(sizes), tuple(lows), tuple(highs), (), ())
    u0 = space.normalized(start)
    radius = 1.0 if trust_radius is None else trust_radius
    return dataclasses.replace(
        space,
        u_low=tuple(np.maximum(0.0, u0 - radius).tolist()),
        u_high=tuple(np.minimum(1.0, u0 + radius).tolist()),
    )
