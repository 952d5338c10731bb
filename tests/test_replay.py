"""Replaying a recorded batch: events.csv -> schedule -> the same trajectory as the recipe."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import tree_allclose

from twin import (
    ModelStructure,
    Recipe,
    SolverSettings,
    default_parameters,
    observables,
    simulate,
)
from twin.data import RunData, read_run_data, write_run_data
from twin.process import EVENT_FIELDS, OPERATION_CODE, build_schedule

RUN_ID = "B-001"
# The save times experiments/simulate.py uses for the default recipe (hourly to harvest), and
# its call signature (structure and solver passed positionally), so that the in-process and the
# script's solves share one compiled function.
SAVE_TIMES_H = np.arange(0.0, Recipe().harvest_time_h + 1.0)


def solve(schedule):
    return simulate(
        default_parameters(), schedule, SAVE_TIMES_H, ModelStructure(), SolverSettings()
    )


def recipe_as_run_data(recipe: Recipe, *, medium_in_events: bool = True):
    """A one-run dataset holding the recipe's batch record and a few measurements."""
    rows = []
    for event in recipe.events():
        values = {field: event.value(field) for field in EVENT_FIELDS}
        if not medium_in_events:  # leave the medium empty: the replay must use its defaults
            values["glucose_mM"] = values["il2_IU_per_mL"] = None
        values = {k: math.nan if v is None else v for k, v in values.items()}
        rows.append(
            {"run_id": RUN_ID, "time_h": event.time_h, "operation": event.operation, **values}
        )
    measurements = pd.DataFrame(
        {
            "run_id": RUN_ID,
            "time_h": [72.0, 72.0, 192.0],
            "variable": ["viable_cells", "glucose_mM", "viable_cells"],
            "value": [3.0e8, 8.5, 1.9e9],
        }
    )
    return RunData(
        runs=pd.DataFrame({"run_id": [RUN_ID], "donor_id": ["D-7"]}),
        events=pd.DataFrame(rows),
        measurements=measurements,
    )


@pytest.fixture(scope="module")
def recipe_trajectory():
    recipe = Recipe()
    return solve(recipe.schedule())


@pytest.mark.parametrize("medium_in_events", [True, False], ids=["medium-recorded", "medium-empty"])
def test_recorded_batch_replays_to_the_recipe_trajectory(
    tmp_path, recipe_trajectory, medium_in_events
):
    recipe = Recipe()
    folder = write_run_data(
        recipe_as_run_data(recipe, medium_in_events=medium_in_events), tmp_path / "data"
    )
    data = read_run_data(folder)
    assert data.run_ids == [RUN_ID]
    assert data.is_finished(RUN_ID)
    assert len(data.measurements_for(RUN_ID)) == 3

    schedule = build_schedule(
        data.events_for(RUN_ID),
        medium_glucose_mM=recipe.medium_glucose_mM,
        medium_il2_IU_per_mL=recipe.medium_il2_IU_per_mL,
    )
    assert tree_allclose(schedule, recipe.schedule(), rtol=0, atol=0)  # the same schedule, exactly
    replayed = solve(schedule)

    assert bool(replayed.success) and bool(recipe_trajectory.success)
    assert tree_allclose(
        observables(replayed.states), observables(recipe_trajectory.states), rtol=1e-10, atol=0
    )
    assert tree_allclose(
        observables(replayed.end_state),
        observables(recipe_trajectory.end_state),
        rtol=1e-10,
        atol=0,
    )


def test_replay_uses_the_recipes_medium_for_empty_medium_cells(tmp_path):
    recipe = Recipe()
    data = read_run_data(
        write_run_data(recipe_as_run_data(recipe, medium_in_events=False), tmp_path / "data")
    )
    schedule = build_schedule(
        data.events_for(RUN_ID), medium_glucose_mM=20.0, medium_il2_IU_per_mL=0.0
    )
    codes = [OPERATION_CODE[op] for op in ("seed", "exchange", "feed")]
    media = np.isin(np.asarray(schedule.operation), codes)
    assert media.sum() == 1 + len(recipe.exchanges) + len(recipe.feeds)
    assert np.all(np.asarray(schedule.glucose_mM)[media] == 20.0)
    assert np.all(np.asarray(schedule.il2_IU_per_mL)[media] == 0.0)


# --- the same replay through experiments/simulate.py -------------------------------------------


def _load_script(path):
    spec = importlib.util.spec_from_file_location("simulate_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_simulate_script_replays_a_recorded_batch(tmp_path, repo_root, recipe_trajectory):
    from hydra import compose, initialize_config_dir

    import twin.config  # noqa: F401  (registers the config schemas with Hydra)

    folder = write_run_data(recipe_as_run_data(Recipe()), tmp_path / "data")
    script = _load_script(repo_root / "experiments" / "simulate.py")
    with initialize_config_dir(config_dir=str(repo_root / "configs"), version_base="1.3"):
        cfg = compose("simulate", overrides=[f"data_dir={folder}", f"run_id={RUN_ID}"])
    out_dir = tmp_path / "out"
    summary = script.run(cfg, out_dir)

    for name in ("trajectory.nc", "batch.png", "summary.csv", "resolved_config.yaml"):
        assert (out_dir / name).is_file(), name
    provenance = json.loads((out_dir / "provenance.json").read_text())
    assert "versions" in provenance

    with xr.open_dataset(out_dir / "trajectory.nc") as stored:
        dataset = stored.load()
    assert dataset.attrs["run_id"] == RUN_ID
    assert dataset["time_h"].attrs["units"] == "h"
    for name, variable in dataset.data_vars.items():
        if name != "operation":
            assert "units" in variable.attrs, name
    assert dataset["viable_cells"].attrs["units"] == "cells"
    assert dataset["car_pos_fraction"].attrs["units"] == "fraction"

    # The script's trajectory is the recipe's trajectory.
    np.testing.assert_array_equal(dataset["time_h"].values, SAVE_TIMES_H)
    expected = observables(recipe_trajectory.states)
    for name in ("viable_cells", "viability", "glucose_mM", "car_pos_fraction", "vcn_per_cell"):
        np.testing.assert_allclose(dataset[name].values, np.asarray(expected[name]), rtol=1e-10)

    table = pd.read_csv(out_dir / "summary.csv", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(table, summary)
    harvest = dict(zip(table["quantity"], table["value"].astype(float), strict=True))
    assert harvest["harvest_time_h"] == 192
    assert harvest["solver_success"] == 1
    assert harvest["harvest_viable_cells"] == pytest.approx(
        float(expected["viable_cells"][-1]),
        rel=5e-3,  # printed to 3 significant digits
    )
