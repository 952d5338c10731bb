"""Differentiable recipes: process values as traced arrays -> event schedule.

:meth:`Recipe.schedule` is Python-level (checked, for configs and records). Optimization needs
the opposite: a schedule that is a smooth function of the process values, under ``jit``,
``vmap`` and ``grad``. :func:`schedule_from_values` keeps the base recipe's events (its slots)
and sets the decision values on them; events are re-ordered by time on every call (the
permutation is locally constant, so gradients flow through times and values), and events that
the harvest time overtakes become no-ops, as a recipe would drop them.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jaxtyping import Array, Float

from ._operations import EVENT_FIELDS, OPERATION_CODE, UNIT_OPERATION, UNIT_OPERATIONS
from ._recipe import ExchangeStep, FeedStep, Recipe
from ._schedule import Schedule

# Decision values and their units. Exchange/feed values are vectors (one entry per step of the
# base recipe); the others are scalars.
DESIGN_VALUES: dict[str, str] = {
    "seed_cells": "cells",
    "seed_volume_ml": "mL",
    "transduction_delay_h": "h after activation",
    "moi": "TU/cell",
    "medium_il2_IU_per_mL": "IU/mL",
    "harvest_time_h": "h",
    "exchange_time_h": "h",
    "exchange_fraction": "fraction",
    "feed_time_h": "h",
    "feed_volume_ml": "mL",
}


def recipe_values(recipe: Recipe) -> dict[str, Float[Array, ...]]:
    """The decision values of a recipe (see :data:`DESIGN_VALUES`)."""
    return {
        "seed_cells": jnp.asarray(recipe.seed_cells, float),
        "seed_volume_ml": jnp.asarray(recipe.seed_volume_ml, float),
        "transduction_delay_h": jnp.asarray(
            recipe.transduction_time_h - recipe.activation_time_h, float
        ),
        "moi": jnp.asarray(recipe.moi, float),
        "medium_il2_IU_per_mL": jnp.asarray(recipe.medium_il2_IU_per_mL, float),
        "harvest_time_h": jnp.asarray(recipe.harvest_time_h, float),
        "exchange_time_h": jnp.asarray([s.time_h for s in recipe.exchanges], float),
        "exchange_fraction": jnp.asarray([s.fraction for s in recipe.exchanges], float),
        "feed_time_h": jnp.asarray([s.time_h for s in recipe.feeds], float),
        "feed_volume_ml": jnp.asarray([s.volume_ml for s in recipe.feeds], float),
    }


def recipe_with_values(recipe: Recipe, values: dict[str, Array]) -> Recipe:
    """A concrete recipe carrying ``values`` (floats; for configs and batch records).

    Exchanges, feeds and samples after the new harvest time are dropped, as the schedule of
    :func:`schedule_from_values` turns them into no-ops.
    """
    v = {k: jnp.asarray(x) for k, x in values.items()}
    harvest = float(v["harvest_time_h"])
    exchanges = [
        ExchangeStep(float(t), float(f))
        for t, f in zip(v["exchange_time_h"], v["exchange_fraction"], strict=True)
        if float(t) <= harvest
    ]
    feeds = [
        FeedStep(float(t), float(vol))
        for t, vol in zip(v["feed_time_h"], v["feed_volume_ml"], strict=True)
        if float(t) <= harvest
    ]
    samples = [t for t in recipe.sample_times_h if t <= harvest]
    return dataclasses.replace(
        recipe,
        seed_cells=float(v["seed_cells"]),
        seed_volume_ml=float(v["seed_volume_ml"]),
        transduction_time_h=recipe.activation_time_h + float(v["transduction_delay_h"]),
        moi=float(v["moi"]),
        medium_il2_IU_per_mL=float(v["medium_il2_IU_per_mL"]),
        harvest_time_h=harvest,
        exchanges=exchanges,
        feeds=feeds,
        sample_times_h=samples,
    )


def schedule_from_values(recipe: Recipe, values: dict[str, Array]) -> Schedule:
    """The schedule of ``recipe`` with the decision ``values`` (traceable; fixed length).

    Slots: each operation's :meth:`~UnitOperation.design_block` in code order (seed, activate,
    transduce, the base recipe's exchanges, feeds and samples, harvest). Any event later than
    the harvest becomes a no-op at the harvest time.
    """
    times, codes, order, fields = [], [], [], {f: [] for f in EVENT_FIELDS}
    for operation in UNIT_OPERATIONS:  # code order
        block = operation.design_block(recipe, values)
        if block is None:
            continue
        t, given = block
        n = t.shape[0]
        times.append(t)
        codes.append(jnp.full(n, operation.code))
        order.append(jnp.full(n, operation.same_time_order))
        for field in EVENT_FIELDS:
            fields[field].append(given.get(field, jnp.zeros(n)))
    time_h = jnp.concatenate(times)
    code = jnp.concatenate(codes)
    harvest = values["harvest_time_h"]
    late = (time_h > harvest) & (code != OPERATION_CODE["harvest"])
    code = jnp.where(late, OPERATION_CODE["noop"], code)
    time_h = jnp.minimum(time_h, harvest)
    priority = jnp.where(late, UNIT_OPERATION["noop"].same_time_order, jnp.concatenate(order))
    permutation = jnp.lexsort((priority, time_h))
    return Schedule(
        time_h=time_h[permutation],
        operation=code[permutation],
        **{f: jnp.concatenate(v)[permutation] for f, v in fields.items()},
    )
