"""Varied recipes for the bench, in the ranges of the shipped example dataset
(``twin/data/example/generate_config.yaml``): harvest day 7-10, MOI 2-10, transduction at
18-36 h, 60-150 million seed cells, and an exchange schedule that varies in start and fraction.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..process import ExchangeStep, FeedStep, Recipe

HARVEST_DAYS_H: tuple[float, ...] = (168.0, 192.0, 216.0, 240.0)
CAPACITY_ML = 1000.0


@dataclasses.dataclass(frozen=True)
class DesignRanges:
    """Ranges the recipes are drawn from (uniform unless a tuple of choices)."""

    moi: tuple[float, float] = (2.0, 10.0)
    transduction_time_h: tuple[float, float] = (18.0, 36.0)
    seed_cells: tuple[float, float] = (6e7, 1.5e8)
    exchange_fraction: tuple[float, float] = (0.35, 0.65)
    first_exchange_h: tuple[float, ...] = (96.0, 120.0, 144.0)
    harvest_time_h: tuple[float, ...] = HARVEST_DAYS_H


def base_recipe() -> Recipe:
    """The example dataset's base recipe (feeds at 72 and 96 h, daily samples to harvest)."""
    return Recipe(
        seed_cells=1e8,
        seed_viability=0.95,
        seed_volume_ml=100.0,
        medium_glucose_mM=11.1,
        medium_il2_IU_per_mL=100.0,
        transduction_time_h=24.0,
        moi=5.0,
        exchanges=[ExchangeStep(t, 0.5) for t in (120.0, 144.0, 168.0, 192.0, 216.0)],
        feeds=[FeedStep(72.0, 150.0), FeedStep(96.0, 300.0)],
        sample_times_h=[24.0 * k for k in range(1, 11)],
        sample_volume_ml=1.0,
        harvest_time_h=240.0,
    )


def design_recipes(
    n: int, rng: np.random.Generator, ranges: DesignRanges = DesignRanges()
) -> list[Recipe]:
    """``n`` recipes varying the base recipe: harvest days cycle (shuffled per block of four),
    the rest is drawn. Exchanges, feeds and samples at or after harvest are dropped; a sample
    is always taken at harvest."""
    base = base_recipe()
    harvests = []
    while len(harvests) < n:
        harvests += list(rng.permutation(ranges.harvest_time_h))
    recipes = []
    for i in range(n):
        harvest = float(harvests[i])
        fraction = float(rng.uniform(*ranges.exchange_fraction))
        first = float(rng.choice(ranges.first_exchange_h))
        exchanges = [ExchangeStep(float(t), fraction) for t in np.arange(first, harvest, 24.0)]
        recipes.append(
            dataclasses.replace(
                base,
                moi=float(rng.uniform(*ranges.moi)),
                transduction_time_h=float(rng.uniform(*ranges.transduction_time_h)),
                seed_cells=float(rng.uniform(*ranges.seed_cells)),
                exchanges=exchanges,
                feeds=[f for f in base.feeds if f.time_h < harvest],
                sample_times_h=[t for t in base.sample_times_h if t < harvest] + [harvest],
                harvest_time_h=harvest,
            )
        )
    return recipes
