"""What a sweep varies, and the designs that place its points.

A :class:`SweepSpace` maps names to boxes ``[low, high]`` in their own units: recipe decisions
(:data:`~twin.process.DESIGN_VALUES`; a vector decision such as ``exchange_fraction`` takes one
value for every step of the recipe) and kinetic parameters
(:data:`~twin.kinetics.PARAMETER_NAMES`, natural units). Designs fill the unit cube and are
scaled linearly into the boxes. Every design can produce any contiguous range of its points on
its own (:func:`design_blocks`), so a sweep and a shard of it on another machine see the same
points; grid and Sobol points without holding the whole design in memory.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterator, Mapping

import numpy as np
from scipy.stats import qmc

from .._errors import TwinInputError
from ..kinetics import PARAMETER_TABLE
from ..process import DESIGN_VALUES

DESIGNS: dict[str, str] = {
    "grid": "full factorial, levels per name = floor(n_points^(1/d)) (n_points is rounded down)",
    "lhs": "Latin hypercube (scipy.stats.qmc.LatinHypercube)",
    "sobol": "scrambled Sobol sequence (scipy.stats.qmc.Sobol); balanced at powers of two",
    "saltelli": "SALib's Sobol/Saltelli sampler: N x (2d + 2) points for sensitivity indices",
}
# Vector decisions whose entries must stay ordered: one swept value for all of them is not a
# schedule (all exchanges at one time).
_TIME_VECTORS = frozenset({"exchange_time_h", "feed_time_h"})
_FRACTIONS = frozenset({"exchange_fraction"})
_POSITIVE = frozenset({"seed_cells", "seed_volume_ml", "harvest_time_h"})
_TRANSFORM = {spec.name: spec.transform for spec in PARAMETER_TABLE}
_UNIT = {spec.name: spec.unit for spec in PARAMETER_TABLE}


@dataclasses.dataclass(frozen=True)
class SweepSpace:
    """Swept names, in order, with their boxes (build with :func:`sweep_space`)."""

    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    @property
    def dimension(self) -> int:
        return len(self.names)

    def kind(self, name: str) -> str:
        """``"recipe"`` (a decision value) or ``"kinetic"`` (a kinetic parameter)."""
        return "recipe" if name in DESIGN_VALUES else "kinetic"

    def unit(self, name: str) -> str:
        return DESIGN_VALUES[name] if name in DESIGN_VALUES else _UNIT[name]

    def scale(self, unit_points: np.ndarray) -> np.ndarray:
        """Points of the unit cube ``(n, d)`` -> values in the boxes ``(n, d)``."""
        low, high = np.asarray(self.low), np.asarray(self.high)
        return low + (high - low) * unit_points

    def as_dict(self) -> dict[str, list[float]]:
        return {n: [lo, hi] for n, lo, hi in zip(self.names, self.low, self.high, strict=True)}


def sweep_space(space: Mapping[str, object], *, key: str = "sweep.space") -> SweepSpace:
    """Check ``space`` (name -> ``[low, high]``) and return a :class:`SweepSpace`.

    **Raises:** :class:`~twin.TwinInputError` naming ``<key>.<name>`` and the value, one line
    per problem.
    """
    if not space:
        raise TwinInputError(f"{key}: empty; give at least one name -> [low, high]")
    problems, names, lows, highs = [], [], [], []
    for name, pair in space.items():
        where = f"{key}.{name}"
        if name not in DESIGN_VALUES and name not in _TRANSFORM:
            problems.append(
                f"{where}: not a recipe decision (twin.process.DESIGN_VALUES: "
                f"{list(DESIGN_VALUES)}) nor a kinetic parameter (twin.kinetics.PARAMETER_NAMES)"
            )
            continue
        if name in _TIME_VECTORS:
            problems.append(
                f"{where}: a vector of step times cannot take one swept value; sweep "
                "harvest_time_h or transduction_delay_h, or edit the recipe's steps"
            )
            continue
        try:
            low, high = (float(v) for v in pair)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            problems.append(f"{where}={pair!r}: expected [low, high] (two numbers)")
            continue
        shown = f"{where}=[{low:g}, {high:g}]"
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            problems.append(f"{shown}: expected finite low < high")
        elif name in DESIGN_VALUES and low < 0:
            problems.append(f"{shown}: must be >= 0 ({DESIGN_VALUES[name]})")
        elif name in _POSITIVE and low <= 0:
            problems.append(f"{shown}: needs low > 0")
        elif name in _FRACTIONS and high > 1:
            problems.append(f"{shown}: a fraction needs high <= 1")
        elif _TRANSFORM.get(name) == "log" and low <= 0:
            problems.append(f"{shown}: a positive kinetic parameter needs low > 0")
        elif _TRANSFORM.get(name) == "logit" and not (low > 0 and high < 1):
            problems.append(f"{shown}: a fraction parameter needs 0 < low < high < 1")
        names.append(name)
        lows.append(low)
        highs.append(high)
    if problems:
        raise TwinInputError(problems[0], problems=problems)
    return SweepSpace(tuple(names), tuple(lows), tuple(highs))


def design_size(design: str, n_points: int, dimension: int) -> int:
    """The number of points a design places for ``n_points`` requested: ``grid`` rounds down
    to ``levels^d``, ``saltelli`` reads ``n_points`` as its base sample N (a power of two)."""
    if design == "grid":
        return _grid_levels(n_points, dimension) ** dimension
    if design == "saltelli":
        return n_points * (2 * dimension + 2)
    return n_points


def check_design(design: str, n_points: int, dimension: int, *, key: str = "sweep") -> None:
    """**Raises:** :class:`~twin.TwinInputError` for an unknown design or a bad ``n_points``."""
    if design not in DESIGNS:
        raise TwinInputError(f"{key}.design={design!r}: choose from {list(DESIGNS)}")
    if not (isinstance(n_points, int) and n_points >= 1):
        raise TwinInputError(f"{key}.n_points={n_points!r}: must be an integer >= 1")
    if design == "grid" and _grid_levels(n_points, dimension) < 2:
        raise TwinInputError(
            f"{key}.n_points={n_points}: a grid over {dimension} names needs at least "
            f"{2**dimension} points (2 levels each)"
        )
    if design == "saltelli" and n_points & (n_points - 1):
        raise TwinInputError(
            f"{key}.n_points={n_points}: the Saltelli design needs a power of two (its base "
            "sample N; the sweep runs N x (2d + 2) points)"
        )


def _grid_levels(n_points: int, dimension: int) -> int:
    # The integer root, robust to float rounding (e.g. 1000 ** (1/3) = 9.999...).
    levels = int(round(n_points ** (1.0 / dimension)))
    while levels**dimension > n_points:
        levels -= 1
    return levels


def design_blocks(
    space: SweepSpace, design: str, n_points: int, seed: int, start: int, stop: int, block: int
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Points ``start`` to ``stop`` (exclusive) of the design in blocks of ``block``:
    ``(a, b, values)`` with ``values`` of shape ``(b - a, d)`` in the names' units.

    The same (design, n_points, seed) always gives the same points, whatever range is asked
    for: grid points are computed from their index and Sobol points by fast-forwarding the
    sequence, block by block (memory of one block); the Latin hypercube and the Saltelli
    matrix are drawn whole (``n_points x d`` floats) and sliced.
    """
    d = space.dimension
    total = design_size(design, n_points, d)
    if not 0 <= start <= stop <= total:
        raise ValueError(f"design range [{start}, {stop}) outside [0, {total})")
    whole = None
    if design == "lhs":
        whole = space.scale(qmc.LatinHypercube(d, seed=seed).random(total))
    elif design == "saltelli":
        from SALib.sample import sobol as salib_sobol

        whole = np.asarray(salib_sobol.sample(salib_problem(space), n_points, seed=seed), float)
    elif design == "sobol":
        engine = qmc.Sobol(d, scramble=True, seed=seed)
        if start > 0:  # (scipy refuses a zero fast-forward)
            engine.fast_forward(start)
    elif design != "grid":
        raise ValueError(f"unknown design {design!r}")
    levels = _grid_levels(n_points, d)
    for a in range(start, stop, block):
        b = min(a + block, stop)
        if whole is not None:
            yield a, b, whole[a:b]
        elif design == "grid":
            index = np.unravel_index(np.arange(a, b), (levels,) * d)
            yield a, b, space.scale(np.stack(index, axis=-1) / (levels - 1))
        else:
            yield a, b, space.scale(_sobol_draw(engine, b - a))


def _sobol_draw(engine: qmc.Sobol, n: int) -> np.ndarray:
    # scipy warns when a draw is not a power of two (balance); the sweep's points are the
    # first n of the sequence either way (consecutive draws continue it).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*balance properties of Sobol.*")
        return engine.random(n)


def salib_problem(space: SweepSpace) -> dict:
    """SALib's problem dictionary for the space."""
    return {
        "num_vars": space.dimension,
        "names": list(space.names),
        "bounds": [[lo, hi] for lo, hi in zip(space.low, space.high, strict=True)],
    }
