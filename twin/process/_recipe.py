"""Recipes: a process design (Hydra config ``recipe``) that compiles to an event schedule.

The dataclasses here are both the Python API and the Hydra schema (``twin.config``), so a
recipe's defaults are written exactly once, below.
"""

from __future__ import annotations

import dataclasses

from .._errors import TwinInputError
from ._bounds import DEFAULT_BOUNDS, PlausibilityBounds
from ._operations import SAME_TIME_ORDER
from ._schedule import Event, Schedule, build_schedule, check_events


@dataclasses.dataclass
class ExchangeStep:
    time_h: float = 0.0
    fraction: float = 0.5


@dataclasses.dataclass
class FeedStep:
    time_h: float = 0.0
    volume_ml: float = 100.0


@dataclasses.dataclass
class Recipe:
    """A cartridge process recipe. Times are hours since seeding.

    Medium composition (``medium_glucose_mM``, ``medium_il2_IU_per_mL``) applies to the seed
    medium and to every exchange and feed. A sample of ``sample_volume_ml`` is drawn at each
    of ``sample_times_h`` for in-process QC.
    """

    seed_cells: float = 1.0e8  # viable enriched T cells
    seed_viability: float = 0.95
    seed_volume_ml: float = 100.0
    medium_glucose_mM: float = 11.1  # RPMI-1640-like (2 g/L)
    medium_il2_IU_per_mL: float = 100.0
    activation_time_h: float = 0.0
    transduction_time_h: float = 24.0
    moi: float = 5.0
    exchanges: list[ExchangeStep] = dataclasses.field(
        default_factory=lambda: [
            ExchangeStep(120.0, 0.5),
            ExchangeStep(144.0, 0.5),
            ExchangeStep(168.0, 0.5),
        ]
    )
    feeds: list[FeedStep] = dataclasses.field(
        default_factory=lambda: [FeedStep(72.0, 150.0), FeedStep(96.0, 300.0)]
    )
    sample_times_h: list[float] = dataclasses.field(
        default_factory=lambda: [24.0, 48.0, 72.0, 96.0, 120.0, 144.0, 168.0, 192.0]
    )
    sample_volume_ml: float = 1.0
    harvest_time_h: float = 192.0

    def events_with_keys(self) -> list[tuple[Event, str]]:
        """Events in time order, each with the config key it came from."""
        items: list[tuple[Event, str]] = [
            (
                Event(
                    0.0,
                    "seed",
                    cells=self.seed_cells,
                    viability=self.seed_viability,
                    volume_ml=self.seed_volume_ml,
                    glucose_mM=self.medium_glucose_mM,
                    il2_IU_per_mL=self.medium_il2_IU_per_mL,
                ),
                "recipe.seed_cells",
            ),
            (Event(self.activation_time_h, "activate"), "recipe.activation_time_h"),
            (Event(self.transduction_time_h, "transduce", moi=self.moi), "recipe.moi"),
        ]
        for i, step in enumerate(self.exchanges):
            event = Event(
                step.time_h,
                "exchange",
                fraction=step.fraction,
                glucose_mM=self.medium_glucose_mM,
                il2_IU_per_mL=self.medium_il2_IU_per_mL,
            )
            items.append((event, f"recipe.exchanges[{i}]"))
        for i, step in enumerate(self.feeds):
            event = Event(
                step.time_h,
                "feed",
                volume_ml=step.volume_ml,
                glucose_mM=self.medium_glucose_mM,
                il2_IU_per_mL=self.medium_il2_IU_per_mL,
            )
            items.append((event, f"recipe.feeds[{i}]"))
        for i, time_h in enumerate(self.sample_times_h):
            event = Event(time_h, "sample", volume_ml=self.sample_volume_ml)
            items.append((event, f"recipe.sample_times_h[{i}]"))
        items.append((Event(self.harvest_time_h, "harvest"), "recipe.harvest_time_h"))
        after_harvest = [
            (e, key) for e, key in items if _is_number(e.time_h) and e.time_h > self.harvest_time_h
        ]
        if after_harvest and _is_number(self.harvest_time_h) and self.harvest_time_h >= 0:
            event, key = after_harvest[0]
            raise TwinInputError(
                f"{_time_key(key)}={event.time_h:g} is after recipe.harvest_time_h="
                f"{self.harvest_time_h:g}"
            )
        # The seed stays first and the harvest last whatever the times are, so that a bad time
        # is reported against its own key, not as a misplaced seed or harvest.
        items.sort(
            key=lambda item: (
                item[0].operation != "seed",
                item[0].operation == "harvest",
                _sort_time(item[0].time_h),
                SAME_TIME_ORDER[item[0].operation],
            )
        )
        return items

    def events(
        self, *, capacity_ml: float | None = None, bounds: PlausibilityBounds = DEFAULT_BOUNDS
    ) -> list[Event]:
        """The recipe's events, checked (contract, plausibility ``bounds``, ``capacity_ml``:
        the cartridge's volume, default ``bounds.cartridge_capacity_ml``).

        **Raises:** :class:`~twin.TwinInputError` naming the offending config key and value,
        each once (a medium value shared by several events is one problem).
        """
        if capacity_ml is not None and not (_is_number(capacity_ml) and capacity_ml > 0):
            raise TwinInputError(f"cartridge_capacity_ml={capacity_ml!r}: must be > 0")
        items = self.events_with_keys()
        events = [event for event, _ in items]
        problems = check_events(
            events, capacity_ml=capacity_ml, require_harvest=True, bounds=bounds
        )
        if problems:
            lines = []
            for problem in problems:
                key = items[problem.index][1]
                key = _field_key(key, problem.field)
                lines.append(f"{key}={problem.value!r}: {problem.message}")
            lines = list(dict.fromkeys(lines))
            raise TwinInputError(lines[0], problems=lines)
        return events

    def schedule(
        self,
        *,
        capacity_ml: float | None = None,
        n_events: int | None = None,
        bounds: PlausibilityBounds = DEFAULT_BOUNDS,
    ) -> Schedule:
        """Compile to a padded :class:`Schedule` (see :func:`build_schedule`)."""
        return build_schedule(
            self.events(capacity_ml=capacity_ml, bounds=bounds),
            medium_glucose_mM=self.medium_glucose_mM,
            medium_il2_IU_per_mL=self.medium_il2_IU_per_mL,
            n_events=n_events,
        )


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _sort_time(t: object) -> float:
    return float(t) if _is_number(t) else float("inf")


def _time_key(key: str) -> str:
    if key.endswith("]") and "sample_times_h" in key:
        return key
    return _field_key(key, "time_h")


_SCALAR_KEYS = {
    # event field -> recipe key, for the top-level events (seed, activate, transduce, harvest)
    ("recipe.seed_cells", "cells"): "recipe.seed_cells",
    ("recipe.seed_cells", "viability"): "recipe.seed_viability",
    ("recipe.seed_cells", "volume_ml"): "recipe.seed_volume_ml",
    ("recipe.seed_cells", "glucose_mM"): "recipe.medium_glucose_mM",
    ("recipe.seed_cells", "il2_IU_per_mL"): "recipe.medium_il2_IU_per_mL",
    ("recipe.moi", "time_h"): "recipe.transduction_time_h",
}


def _field_key(key: str, field: str) -> str:
    """The config key a problem in ``field`` of the event from ``key`` points at."""
    if (key, field) in _SCALAR_KEYS:
        return _SCALAR_KEYS[key, field]
    if key.endswith("]"):  # a list item: exchanges[i].fraction, feeds[i].time_h, ...
        if "sample_times_h" in key:
            return key if field == "time_h" else "recipe.sample_volume_ml"
        if field in ("glucose_mM", "il2_IU_per_mL"):
            return f"recipe.medium_{field}"
        return f"{key}.{field}"
    return key
