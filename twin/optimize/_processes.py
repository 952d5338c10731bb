"""Processes other than the twin's own that a recipe is evaluated on, exactly (pass/fail).

Two kinds, both answering "how does this recipe do on *that* process, for new donors?":

- :class:`TwinVariantProcess`: the twin's equations with another structure, other parameters
  and other donor variation (e.g. the generator of the shipped example); simulated in one
  batch through the decision vector, like the search itself.
- :class:`EventsProcess`: any process behind a callable that takes a batch record (an events
  table in RUN_DATA.md format, one run) and returns the harvest observables of its sampled
  donors, e.g. an independent virtual plant (``twin.plants``) or a site's own simulator. The
  twin's downstream and release specification then decides which batches conform.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .._errors import TwinInputError
from ..kinetics import (
    PARAMETER_NAMES,
    PARAMETER_TABLE,
    KineticParameters,
    ModelStructure,
    default_parameters,
)
from ..observe import observables
from ..process import (
    EVENT_FIELDS,
    Downstream,
    Event,
    Recipe,
    build_schedule,
    product,
    stack_schedules,
)
from ..simulate import SolverSettings, simulate_batch
from ._config import HoldoutConfig
from ._population import DonorPopulation

# Observables at harvest an EventsProcess must return, per donor (twin.observe names and units).
HARVEST_OBSERVABLES: tuple[str, ...] = (
    "viable_cells",
    "viability",
    "car_pos_fraction",
    "vcn_per_transduced_cell",
)

EventsEvaluator = Callable[[pd.DataFrame], Mapping[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class TwinVariantProcess:
    """The twin's equations as another process: ``population`` (its donors), ``structure``,
    ``n_donors`` fresh donors drawn from ``seed``. ``name`` names its output table."""

    name: str
    description: str
    population: DonorPopulation
    structure: ModelStructure
    n_donors: int
    seed: int

    def donors(self) -> KineticParameters:
        return self.population.sample(jax.random.PRNGKey(self.seed), self.n_donors)


@dataclasses.dataclass(frozen=True)
class EventsProcess:
    """A process behind ``evaluate(events) -> {observable: per-donor array}`` (see the module
    doc and :data:`HARVEST_OBSERVABLES`); a donor whose batch failed carries NaN, counted as
    not conforming. ``name`` names its output table."""

    name: str
    description: str
    evaluate: EventsEvaluator

    def outcomes(self, events: pd.DataFrame, downstream: Downstream) -> dict[str, np.ndarray]:
        """Per-donor ``conforming`` (0/1), ``product_viable_car_pos_cells``,
        ``conforming_doses`` and ``success`` of the batch record ``events``."""
        harvest = self.evaluate(events)
        missing = [name for name in HARVEST_OBSERVABLES if name not in harvest]
        if missing:
            raise ValueError(f"{self.description}: the evaluator returned no {missing}")
        values = {name: np.asarray(harvest[name], float) for name in HARVEST_OBSERVABLES}
        ok = np.all([np.isfinite(v) for v in values.values()], axis=0)
        safe = {k: jnp.asarray(np.where(ok, v, 0.5)) for k, v in values.items()}
        released = {k: np.asarray(v) for k, v in product(safe, downstream).items()}
        conforming = ok & released["conforming"].astype(bool)
        return {
            "conforming": conforming.astype(float),
            "product_viable_car_pos_cells": np.where(
                ok, released["product_viable_car_pos_cells"], 0.0
            ),
            "conforming_doses": np.where(conforming, released["doses"], 0.0),
            "success": ok.astype(float),
        }


def holdout_process(
    holdout: HoldoutConfig, params: KineticParameters, structure: ModelStructure
) -> TwinVariantProcess:
    """The unseen process of a ``holdout`` config: ``params`` with ``holdout.parameters``
    overridden, ``structure`` with ``holdout.structure``, donors with ``holdout.donor_sd``.

    **Raises:** :class:`~twin.TwinInputError` naming the ``holdout.*`` key and value.
    """
    values = {name: float(getattr(params, name)) for name in PARAMETER_NAMES}
    for name, value in holdout.parameters.items():
        if name not in values:
            raise TwinInputError(f"holdout.parameters.{name}: not a kinetic parameter")
        spec = next(s for s in PARAMETER_TABLE if s.name == name)
        ok = math.isfinite(value) and (value > 0 if spec.transform == "log" else 0 < value < 1)
        if not ok:
            domain = "> 0" if spec.transform == "log" else "in (0, 1)"
            raise TwinInputError(f"holdout.parameters.{name}={value!r}: must be {domain}")
        values[name] = float(value)
    for name, sd in holdout.donor_sd.items():
        if name not in values:
            raise TwinInputError(f"holdout.donor_sd.{name}: not a kinetic parameter")
        if not sd >= 0:
            raise TwinInputError(f"holdout.donor_sd.{name}={sd!r}: must be >= 0")
    if not holdout.n_donors >= 1:
        raise TwinInputError(f"holdout.n_donors={holdout.n_donors!r}: must be >= 1")
    try:
        variant = dataclasses.replace(structure, **dict(holdout.structure))
    except (TypeError, ValueError) as error:
        raise TwinInputError(f"holdout.structure={dict(holdout.structure)!r}: {error}") from None
    population = DonorPopulation(default_parameters(**values), dict(holdout.donor_sd))
    return TwinVariantProcess(
        "holdout",
        holdout.description,
        population,
        variant,
        int(holdout.n_donors),
        int(holdout.seed),
    )


def twin_events_evaluator(
    process: TwinVariantProcess,
    *,
    solver: SolverSettings = SolverSettings(),
    n_events: int = 64,
    medium_glucose_mM: float = Recipe.medium_glucose_mM,
    medium_il2_IU_per_mL: float = Recipe.medium_il2_IU_per_mL,
) -> EventsEvaluator:
    """A twin variant as an :data:`EventsEvaluator`: any batch record (padded to ``n_events``
    slots, so every record of that size shares one compile) simulated for the process's
    donors; blank medium cells take the given medium."""
    donors = process.donors()
    n = process.n_donors

    def evaluate(events: pd.DataFrame) -> dict[str, np.ndarray]:
        record = [
            Event(
                float(row["time_h"]),
                row["operation"],
                **{f: None if pd.isna(row[f]) else float(row[f]) for f in EVENT_FIELDS},
            )
            for _, row in events.iterrows()
        ]
        schedule = build_schedule(
            record,
            medium_glucose_mM=medium_glucose_mM,
            medium_il2_IU_per_mL=medium_il2_IU_per_mL,
            n_events=n_events,
        )
        schedules = stack_schedules([schedule] * n)
        save = jnp.zeros((n, 1))
        trajectory = simulate_batch(donors, schedules, save, process.structure, solver)
        harvest = observables(trajectory.end_state)
        ok = np.asarray(trajectory.success)
        return {k: np.where(ok, np.asarray(harvest[k]), np.nan) for k in HARVEST_OBSERVABLES}

    return evaluate


def plant_evaluator(plant: str, n_donors: int = 200, seed: int = 0) -> EventsEvaluator:
    """A virtual plant of the mismatch bench (``twin.plants``) as an :data:`EventsEvaluator`:
    ``n_donors`` donors of its population drawn from ``seed``, each batch simulated with the
    plant's own equations (``twin.plants.evaluate_events``); a failed batch reads NaN.

    For ``evaluate_on`` in ``configs/optimize.yaml``, e.g.
    ``+evaluate_on.signal._target_=twin.optimize.plant_evaluator +evaluate_on.signal.plant=signal``.
    """
    from .. import plants  # the bench's own code; imported only when a plant is asked for

    def evaluate(events: pd.DataFrame) -> dict[str, np.ndarray]:
        table = plants.evaluate_events(plant, events, n_donors=n_donors, seed=seed)
        ok = table["success"].to_numpy(bool)
        return {
            name: np.where(ok, table[name].to_numpy(float), np.nan)
            if name in table
            else np.full(len(table), np.nan)
            for name in HARVEST_OBSERVABLES
        }

    return evaluate
