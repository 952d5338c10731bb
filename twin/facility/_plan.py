"""From a recipe to the operations a Shuttle performs, with each one's planned start.

A recipe's events (``Recipe.events``) keep their order; events at the same recipe time form a
*visit*: the cartridge goes from module to module, each operation after a robot move. The
biology treats a visit as instantaneous (as the recipe does), so the planned offset of an
operation inside its visit is the time the visit's earlier operations take; an operation's
*lateness* is how much later than that plan it actually starts, and its event time for the
biology is its recipe time plus its lateness.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..process import EVENT_FIELDS, OPERATION_CODE, Event, Recipe
from ._config import FILL_FINISH, FacilityConfig, RecipeOption


@dataclasses.dataclass(frozen=True)
class RecipePlan:
    """One recipe option, compiled.

    **Fields:** ``recipe`` (the MOI capped by the available vector), ``events``;
    ``operations`` and ``modules`` (per event, plus a final ``fill_finish``); ``time_h`` (recipe
    time of each event); ``offset_h`` (planned start of each operation's module request after
    the seed, the visit's earlier operations included); ``duration_h`` per operation;
    ``schedule`` (numpy arrays of the padded schedule fields); ``vector_ml``, ``medium_L``,
    ``il2_million_IU`` (consumables per batch).
    """

    name: str
    recipe: Recipe
    events: tuple[Event, ...]
    operations: tuple[str, ...]
    modules: tuple[str, ...]
    time_h: np.ndarray
    offset_h: np.ndarray
    duration_h: np.ndarray
    schedule: dict[str, np.ndarray]
    vector_ml: float
    medium_L: float
    il2_million_IU: float


def effective_recipe(option: RecipeOption) -> tuple[Recipe, float]:
    """The recipe with the MOI the vector allows, and the vector volume used (mL)."""
    recipe = option.recipe
    needed_TU = recipe.moi * recipe.seed_cells
    max_TU = option.max_vector_volume_ml * option.vector_functional_titer_TU_per_mL
    moi = recipe.moi if needed_TU <= max_TU else max_TU / recipe.seed_cells
    used_ml = moi * recipe.seed_cells / option.vector_functional_titer_TU_per_mL
    return dataclasses.replace(recipe, moi=float(moi)), float(used_ml)


def _medium_used(events: list[Event]) -> float:
    """Fresh medium (mL): the seed volume, feeds and the exchanged part of the culture."""
    volume = used = 0.0
    for event in events:
        if event.operation == "seed":
            volume = used = event.volume_ml
        elif event.operation == "feed":
            volume += event.volume_ml
            used += event.volume_ml
        elif event.operation == "sample":
            volume -= event.volume_ml
        elif event.operation == "exchange":
            used += event.fraction * volume
    return used


def compile_plan(name: str, option: RecipeOption, cfg: FacilityConfig, n_events: int) -> RecipePlan:
    """Compile one recipe option for a Shuttle configured by ``cfg``."""
    recipe, vector_ml = effective_recipe(option)
    events = recipe.events(capacity_ml=cfg.cartridge_capacity_ml)
    operations = tuple(e.operation for e in events) + (FILL_FINISH,)
    modules = tuple(cfg.operation_modules[op] for op in operations[:-1]) + (FILL_FINISH,)
    duration = np.array([cfg.modules[m].duration_h for m in modules])
    time_h = np.array([e.time_h for e in events] + [events[-1].time_h])
    offset = np.zeros(len(operations))
    # The seed visit starts the clock (seed_h = the end of the seed operation); every later
    # operation's module request is planned at its recipe time plus its visit's earlier work.
    for k in range(1, len(operations)):
        same_visit = k > 1 and time_h[k] == time_h[k - 1]
        step = cfg.robot_move_h + duration[k - 1]
        offset[k] = offset[k - 1] + step if same_visit else time_h[k]
    schedule = _schedule_arrays(recipe, events, n_events)
    medium_ml = _medium_used(events)
    return RecipePlan(
        name=name,
        recipe=recipe,
        events=tuple(events),
        operations=operations,
        modules=modules,
        time_h=time_h,
        offset_h=offset,
        duration_h=duration,
        schedule=schedule,
        vector_ml=vector_ml,
        medium_L=medium_ml / 1000.0,
        il2_million_IU=medium_ml * recipe.medium_il2_IU_per_mL / 1e6,
    )


def _schedule_arrays(recipe: Recipe, events: list[Event], n_events: int) -> dict[str, np.ndarray]:
    """The recipe's schedule as numpy arrays, padded with no-ops to ``n_events``."""
    schedule = recipe.schedule(n_events=n_events)
    arrays = {f: np.asarray(getattr(schedule, f)) for f in ("time_h", *EVENT_FIELDS)}
    arrays["operation"] = np.asarray(schedule.operation)
    if len(events) < n_events:
        assert np.all(arrays["operation"][len(events) :] == OPERATION_CODE["noop"])
    return arrays


def compile_plans(cfg: FacilityConfig) -> list[RecipePlan]:
    """Every recipe option of ``cfg``, padded to one schedule length (one compile)."""
    lengths = []
    for option in cfg.recipes.values():
        recipe, _ = effective_recipe(option)
        lengths.append(len(recipe.events(capacity_ml=cfg.cartridge_capacity_ml)))
    n_events = max(lengths)
    return [compile_plan(name, opt, cfg, n_events) for name, opt in cfg.recipes.items()]
