"""The start of an optimization from the user's own process: one recorded batch (events.csv).

A batch record is turned into a :class:`~twin.process.Recipe` whose events are the recorded
ones (same times, volumes, medium), so that the decision values
(:data:`~twin.process.DESIGN_VALUES`) start from what the process actually did, and
everything the decisions do not move (medium,
volumes, feeds, exchange and sample times) stays as recorded. A recipe holds one medium
composition and one sample volume per run, one activation and one transduction: a record that
needs more is refused with the file, line, column and value that do not fit.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd

from .._errors import TwinInputError
from ..data import read_events_file
from ..process import ExchangeStep, FeedStep, Recipe


@dataclasses.dataclass(frozen=True)
class StartRecord:
    """A recorded batch to optimize from.

    **Fields:** ``recipe`` (the record as a recipe; its events equal the recorded ones up to
    the order of events at one time), ``run_id``, ``path`` (the events file) and ``events``
    (the run's rows as recorded, RUN_DATA.md columns).
    """

    recipe: Recipe
    run_id: str
    path: Path
    events: pd.DataFrame


def read_start_events(
    path: str | Path,
    *,
    run_id: str | None = None,
    medium_glucose_mM: float = Recipe.medium_glucose_mM,
    medium_il2_IU_per_mL: float = Recipe.medium_il2_IU_per_mL,
    key: str = "start_events",
    run_key: str = "start_run_id",
) -> StartRecord:
    """Read one run's batch record from an events file (RUN_DATA.md ``events.csv`` format).

    ``run_id`` picks the run when the file holds several. Seed, exchange and feed rows without
    a medium composition use ``medium_glucose_mM`` / ``medium_il2_IU_per_mL`` (as everywhere
    in the twin: the ``recipe`` config's medium).

    **Raises:** :class:`~twin.TwinInputError` naming the config ``key`` / ``run_key``, or the
    file, line and column and the value that cannot be used.
    """
    path = Path(path)
    try:
        events, lines = read_events_file(path)
    except TwinInputError as error:
        raise TwinInputError(
            f"{key}={str(path)!r}: {error.problems[0]}",
            [f"{key}={str(path)!r}: {line}" for line in error.problems],
        ) from None
    run_ids = list(dict.fromkeys(events["run_id"]))
    if not run_ids:
        raise TwinInputError(f"{key}={str(path)!r}: the file holds no events")
    if run_id is None:
        if len(run_ids) > 1:
            shown = ", ".join(run_ids[:8]) + (", ..." if len(run_ids) > 8 else "")
            raise TwinInputError(
                f"{key}={str(path)!r}: the file holds {len(run_ids)} runs ({shown}); "
                f"choose one with {run_key}=RUN_ID"
            )
        run_id = run_ids[0]
    elif str(run_id) not in run_ids:
        raise TwinInputError(
            f"{run_key}={run_id!r}: no such run in {path.name} (runs: {', '.join(run_ids[:8])}"
            + (", ...)" if len(run_ids) > 8 else ")")
        )
    run_id = str(run_id)
    mask = (events["run_id"] == run_id).to_numpy()
    rows = events[mask].reset_index(drop=True)
    run_lines = [line for line, keep in zip(lines, mask, strict=True) if keep]
    recipe = recipe_from_record(
        rows,
        [f"{path.name} line {line}" for line in run_lines],
        medium_glucose_mM=medium_glucose_mM,
        medium_il2_IU_per_mL=medium_il2_IU_per_mL,
    )
    return StartRecord(recipe=recipe, run_id=run_id, path=path, events=rows)


def recipe_from_record(
    rows: pd.DataFrame,
    where: list[str],
    *,
    medium_glucose_mM: float,
    medium_il2_IU_per_mL: float,
) -> Recipe:
    """One run's validated events (``rows``, RUN_DATA.md columns) as a recipe; ``where[i]``
    names row ``i`` in messages (e.g. ``"events.csv line 7"``).

    **Raises:** :class:`~twin.TwinInputError` for a record a recipe cannot hold: no harvest
    (a batch still running), not exactly one activation and one transduction, a medium that
    differs between seed, exchanges and feeds, or sample volumes that differ.
    """
    problems: list[str] = []

    def cell(i: int, column: str) -> float:
        value = rows[column].iat[i]
        return math.nan if pd.isna(value) else float(value)

    def problem(i: int, column: str, message: str) -> None:
        value = rows[column].iat[i]
        shown = "" if pd.isna(value) else (value if isinstance(value, str) else repr(float(value)))
        problems.append(f"{where[i]}, column {column}: value {shown!r} {message}")

    operations = rows["operation"].tolist()
    by_operation: dict[str, list[int]] = {}
    for i, operation in enumerate(operations):
        by_operation.setdefault(operation, []).append(i)
    run_id = rows["run_id"].iat[0]
    if "harvest" not in by_operation:
        raise TwinInputError(
            f"run {run_id!r} ({where[0].split(' line ')[0]}) has no harvest event: an "
            "optimization starts from a finished batch record (add its harvest)"
        )
    for operation in ("activate", "transduce"):
        found = by_operation.get(operation, [])
        if not found:
            raise TwinInputError(
                f"run {run_id!r} ({where[0].split(' line ')[0]}) has no {operation} event: the "
                f"optimizer moves one {operation} step of the record"
            )
        for i in found[1:]:
            problem(i, "operation", f"is the run's second {operation} event; one is supported")

    seed = by_operation["seed"][0]
    glucose = cell(seed, "glucose_mM")
    il2 = cell(seed, "il2_IU_per_mL")
    glucose = medium_glucose_mM if math.isnan(glucose) else glucose
    il2 = medium_il2_IU_per_mL if math.isnan(il2) else il2
    for operation in ("exchange", "feed"):
        for i in by_operation.get(operation, []):
            for column, seed_value, default, unit in (
                ("glucose_mM", glucose, medium_glucose_mM, "mM"),
                ("il2_IU_per_mL", il2, medium_il2_IU_per_mL, "IU/mL"),
            ):
                value = cell(i, column)
                value = default if math.isnan(value) else value
                if not math.isclose(value, seed_value, rel_tol=1e-12, abs_tol=0.0):
                    problem(
                        i,
                        column,
                        f"differs from the seed medium's {seed_value:g} {unit}: the optimizer "
                        "keeps one medium composition per run (seed, exchanges and feeds)",
                    )
    samples = by_operation.get("sample", [])
    sample_volume = cell(samples[0], "volume_ml") if samples else Recipe.sample_volume_ml
    for i in samples[1:]:
        if not math.isclose(cell(i, "volume_ml"), sample_volume, rel_tol=1e-12):
            problem(
                i,
                "volume_ml",
                f"differs from the run's first sample volume {sample_volume:g} mL: the "
                "optimizer keeps one sample volume per run",
            )
    if problems:
        raise TwinInputError(problems[0], problems=problems)

    transduce = by_operation["transduce"][0]
    return Recipe(
        seed_cells=cell(seed, "cells"),
        seed_viability=cell(seed, "viability"),
        seed_volume_ml=cell(seed, "volume_ml"),
        medium_glucose_mM=glucose,
        medium_il2_IU_per_mL=il2,
        activation_time_h=cell(by_operation["activate"][0], "time_h"),
        transduction_time_h=cell(transduce, "time_h"),
        moi=cell(transduce, "moi"),
        exchanges=[
            ExchangeStep(cell(i, "time_h"), cell(i, "fraction"))
            for i in by_operation.get("exchange", [])
        ],
        feeds=[
            FeedStep(cell(i, "time_h"), cell(i, "volume_ml")) for i in by_operation.get("feed", [])
        ],
        sample_times_h=[cell(i, "time_h") for i in samples],
        sample_volume_ml=sample_volume,
        harvest_time_h=cell(by_operation["harvest"][0], "time_h"),
    )
