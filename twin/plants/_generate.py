"""Bench data from a plant: train/ and test/ run-data folders with their truth, and the
outcome of any batch record over sampled donors (to score optimized recipes on a plant)."""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import TwinInputError
from ..data import RunData, write_run_data
from ..process import EVENT_FIELDS, Downstream, Event, Recipe, product
from ._assays import VARIABLES, Assays
from ._base import Plant
from ._design import CAPACITY_ML, DesignRanges, design_recipes
from ._engine import PlantRun, simulate_events
from ._registry import get_plant

TRUTH_OUTCOMES: tuple[str, ...] = (
    "viable_cells",
    "viability",
    "glucose_mM",
    "lactate_mM",
    "car_pos_fraction",
    "vcn_per_cell",
    "vcn_per_transduced_cell",
    "viable_car_pos_cells",
)


def plant_seed(plant: Plant, seed: int) -> np.random.SeedSequence:
    """A seed stream per (plant, seed): plants never share their random draws."""
    return np.random.SeedSequence([seed, zlib.crc32(plant.name.encode())])


def assays_for(plant: Plant) -> Assays:
    return Assays(glucose_detection_limit_mM=plant.glucose_detection_limit_mM)


def events_from_table(events: pd.DataFrame) -> list[Event]:
    """One run's events.csv rows (RUN_DATA.md columns; empty cells NaN) as events in order."""
    out = []
    for row in events.itertuples(index=False):
        values = {}
        for field in EVENT_FIELDS:
            value = getattr(row, field, None)
            values[field] = None if value is None or pd.isna(value) else float(value)
        out.append(Event(time_h=float(row.time_h), operation=str(row.operation), **values))
    return out


def _event_rows(run_id: str, recipe: Recipe) -> list[dict]:
    rows = []
    for event in recipe.events(capacity_ml=CAPACITY_ML):
        values = {f: np.nan if event.value(f) is None else event.value(f) for f in EVENT_FIELDS}
        rows.append(
            {"run_id": run_id, "time_h": event.time_h, "operation": event.operation, **values}
        )
    return rows


def _transduction_time(events: Sequence[Event]) -> float | None:
    times = [e.time_h for e in events if e.operation == "transduce"]
    return min(times) if times else None


def measure(
    run: PlantRun, events: Sequence[Event], assays: Assays, rng: np.random.Generator
) -> list[tuple[float, str, float]]:
    """Noisy assay readings ``(time_h, variable, value)`` at every sample of ``run``."""
    t_transduce = _transduction_time(events)
    rows = []
    for time_h, truth in zip(run.sample_times_h, run.samples, strict=True):
        for variable in VARIABLES:
            if assays.measured(variable, time_h, t_transduce):
                rows.append((time_h, variable, assays.read(rng, variable, truth[variable])))
    return rows


def simulate_dataset(
    plant: Plant,
    recipes: Sequence[Recipe],
    donors: Sequence[dict],
    run_ids: Sequence[str],
    donor_ids: Sequence[str],
    rng: np.random.Generator,
) -> tuple[RunData, pd.DataFrame, pd.DataFrame]:
    """Simulate and measure each run (its recipe, its donor's parameters).

    **Returns:** ``(run_data, true_parameters, true_harvest)``. A run whose solve fails is left
    out of the run data and marked ``success = False`` with its reason in ``true_harvest``.
    """
    assays = assays_for(plant)
    runs, event_rows, measurements, truth_p, truth_h = [], [], [], [], []
    for run_id, donor_id, recipe, p in zip(run_ids, donor_ids, recipes, donors, strict=True):
        rows = _event_rows(run_id, recipe)
        events = events_from_table(pd.DataFrame(rows))
        run = simulate_events(plant, events, p)
        truth_p.append({"run_id": run_id, "donor_id": donor_id, **p})
        outcome = {"run_id": run_id, "donor_id": donor_id, "success": run.success}
        outcome["message"] = run.message
        outcome["harvest_time_h"] = recipe.harvest_time_h
        if run.success:
            outcome |= {k: float(run.harvest[k]) for k in TRUTH_OUTCOMES}
            runs.append({"run_id": run_id, "donor_id": donor_id})
            event_rows += rows
            measurements += [(run_id, *m) for m in measure(run, events, assays, rng)]
        truth_h.append(outcome)
    data = RunData(
        runs=pd.DataFrame(runs, columns=["run_id", "donor_id"]),
        events=pd.DataFrame(event_rows),
        measurements=pd.DataFrame(measurements, columns=["run_id", "time_h", "variable", "value"]),
    )
    return data, pd.DataFrame(truth_p), pd.DataFrame(truth_h)


def generate(
    plant: Plant | str,
    out_dir: str | Path,
    n_train_donors: int = 12,
    runs_per_donor: int = 3,
    n_test_donors: int = 20,
    seed: int = 0,
    ranges: DesignRanges | None = None,
) -> dict[str, Path]:
    """Write ``out_dir/train`` (``n_train_donors x runs_per_donor`` runs, split-donor recipes)
    and ``out_dir/test`` (one run each of ``n_test_donors`` new donors) for ``plant``.

    Each folder holds the run data (``runs.csv``, ``events.csv``, ``measurements.csv``), the
    truth (``true_parameters.csv``: each run's donor parameters; ``true_harvest.csv``: the
    noise-free harvest outcomes incl. ``viable_car_pos_cells``) and ``plant.json``.

    **Returns:** ``{"train": path, "test": path}``.
    """
    plant = get_plant(plant) if isinstance(plant, str) else plant
    ranges = DesignRanges() if ranges is None else ranges
    if n_train_donors < 1 or runs_per_donor < 1 or n_test_donors < 1:
        raise TwinInputError(
            f"n_train_donors={n_train_donors}, runs_per_donor={runs_per_donor}, "
            f"n_test_donors={n_test_donors}: each must be >= 1"
        )
    streams = plant_seed(plant, seed).spawn(4)
    rng_donors, rng_design, rng_train, rng_test = (np.random.default_rng(s) for s in streams)
    train_donors = plant.sample_donors(rng_donors, n_train_donors)
    test_donors = plant.sample_donors(rng_donors, n_test_donors)
    n_train = n_train_donors * runs_per_donor
    recipes = design_recipes(n_train + n_test_donors, rng_design, ranges)
    donor_of = np.repeat(np.arange(n_train_donors), runs_per_donor)
    meta = {
        "plant": plant.name,
        "summary": plant.summary,
        "seed": seed,
        "n_train_donors": n_train_donors,
        "runs_per_donor": runs_per_donor,
        "n_test_donors": n_test_donors,
        "population": plant.population(),
        "donor_sd": {k: v.donor_sd for k, v in plant.parameters.items() if v.donor_sd > 0},
        "glucose_detection_limit_mM": plant.glucose_detection_limit_mM,
        "design": {k: list(v) for k, v in ranges.__dict__.items()},
    }
    parts = {
        "train": (
            recipes[:n_train],
            [train_donors[d] for d in donor_of],
            [f"R{i + 1:03d}" for i in range(n_train)],
            [f"D{d + 1:02d}" for d in donor_of],
            rng_train,
        ),
        "test": (
            recipes[n_train:],
            test_donors,
            [f"H{i + 1:03d}" for i in range(n_test_donors)],
            [f"N{i + 1:02d}" for i in range(n_test_donors)],
            rng_test,
        ),
    }
    out = {}
    for part, (part_recipes, donors, run_ids, donor_ids, rng) in parts.items():
        data, truth_p, truth_h = simulate_dataset(
            plant, part_recipes, donors, run_ids, donor_ids, rng
        )
        extra = {
            "true_parameters.csv": truth_p.to_csv(index=False),
            "true_harvest.csv": truth_h.to_csv(index=False),
            "plant.json": json.dumps({**meta, "part": part}, indent=2) + "\n",
        }
        out[part] = write_run_data(data, Path(out_dir) / part, extra_files=extra)
    return out


def evaluate_events(
    plant: Plant | str,
    events: pd.DataFrame | Sequence[Event],
    n_donors: int = 200,
    seed: int = 0,
    downstream: Downstream | None = None,
    donors: Sequence[dict] | None = None,
) -> pd.DataFrame:
    """The outcome of one batch record (a recipe) on ``plant`` for each of ``n_donors`` donors
    drawn from its population (or the given ``donors``): one row per donor with ``success``,
    the true harvest outcomes and the product after the twin's downstream and release checks
    (``conforming``, ``doses``, ...). Share conforming: ``result["conforming"].mean()``.
    """
    plant = get_plant(plant) if isinstance(plant, str) else plant
    downstream = Downstream() if downstream is None else downstream
    if isinstance(events, pd.DataFrame):
        if "run_id" in events and events["run_id"].nunique() > 1:
            raise TwinInputError(
                f"evaluate_events: one run's events expected, got runs "
                f"{sorted(events['run_id'].unique())}"
            )
        events = events_from_table(events)
    events = list(events)
    if donors is None:
        rng = np.random.default_rng(plant_seed(plant, seed).spawn(5)[4])
        donors = plant.sample_donors(rng, n_donors)
    rows = []
    for i, p in enumerate(donors):
        run = simulate_events(plant, events, p)
        row = {"donor": i, "success": run.success, "message": run.message}
        if run.success and run.harvest is not None:
            harvest = {k: float(run.harvest[k]) for k in TRUTH_OUTCOMES}
            released = product(
                {
                    k: np.asarray(harvest[k])
                    for k in (
                        "viable_cells",
                        "viability",
                        "car_pos_fraction",
                        "vcn_per_transduced_cell",
                    )
                },
                downstream,
            )
            row |= harvest | {k: np.asarray(v).item() for k, v in released.items()}
        elif run.success:
            row |= {"success": False, "message": "the batch record has no harvest event"}
        rows.append(row)
    result = pd.DataFrame(rows)
    if "conforming" in result:
        result["conforming"] = result["conforming"].fillna(False).astype(bool)
    else:
        result["conforming"] = False
    return result
