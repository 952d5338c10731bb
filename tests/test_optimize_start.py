"""Optimizing the user's own process: the recorded start, the batch record written back, the
recipe file's resolution, the decisions' reach and the calibration's convergence warning.

Nothing here compiles a simulation (the search itself is tested in test_optimize.py and, end
to end, in test_optimize_run.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import twin
from twin import TwinInputError
from twin.data import read_events_file, read_run_data
from twin.optimize import (
    RESOLUTION,
    decision_space,
    read_start_events,
    recipe_events,
    recipe_from_record,
    rounded_recipe,
)
from twin.process import Recipe, recipe_values, recipe_with_values

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "twin" / "data" / "example"
HEADER = "run_id,time_h,operation,cells,viability,volume_ml,moi,fraction,glucose_mM,il2_IU_per_mL"
DECISIONS = {  # the decisions of issue 13: what the optimizer may move in a recorded batch
    "seed_cells": (5e7, 2e8),
    "transduction_delay_h": (12.0, 48.0),
    "moi": (1.0, 15.0),
    "exchange_fraction": (0.2, 0.9),
    "medium_il2_IU_per_mL": (20.0, 300.0),
    "harvest_time_h": (144.0, 264.0),
}


def _record(tmp_path: Path, *rows: str, name: str = "batch.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


RECORD = (
    "B7,0,seed,9e7,0.93,120,,,11.1,80",
    "B7,0,activate,,,,,,,",
    "B7,24,sample,,,2,,,,",
    "B7,30.5,transduce,,,,4.2,,,",
    "B7,72,feed,,,150,,,11.1,80",
    "B7,120,exchange,,,,,0.6,11.1,80",
    "B7,144,sample,,,2,,,,",
    "B7,150,exchange,,,,,0.4,,",  # blank medium: the recipe config's (11.1 mM, 80 IU/mL here)
    "B7,192,harvest,,,,,,,",
)


# --- reading the start ---------------------------------------------------------------------------


def test_a_record_becomes_the_start_recipe_with_its_own_values(tmp_path):
    start = read_start_events(_record(tmp_path, *RECORD), medium_il2_IU_per_mL=80.0)
    r = start.recipe
    assert start.run_id == "B7"
    assert (r.seed_cells, r.seed_viability, r.seed_volume_ml) == (9e7, 0.93, 120.0)
    assert (r.medium_glucose_mM, r.medium_il2_IU_per_mL) == (11.1, 80.0)
    assert (r.activation_time_h, r.transduction_time_h, r.moi) == (0.0, 30.5, 4.2)
    assert [(s.time_h, s.fraction) for s in r.exchanges] == [(120.0, 0.6), (150.0, 0.4)]
    assert [(s.time_h, s.volume_ml) for s in r.feeds] == [(72.0, 150.0)]
    assert (r.sample_times_h, r.sample_volume_ml, r.harvest_time_h) == ([24.0, 144.0], 2.0, 192.0)


def test_every_example_run_round_trips_through_its_recipe():
    """record -> recipe -> events gives the record back, for all 30 runs of the example."""
    events, lines = read_events_file(EXAMPLE / "events.csv")
    for run_id, recorded in events.groupby("run_id", sort=False):
        where = [f"events.csv line {lines[i]}" for i in recorded.index]
        recipe = recipe_from_record(
            recorded.reset_index(drop=True),
            where,
            medium_glucose_mM=Recipe.medium_glucose_mM,
            medium_il2_IU_per_mL=Recipe.medium_il2_IU_per_mL,
        )
        written = recipe_events(recipe, run_id=run_id)
        key = ["time_h", "operation"]
        pd.testing.assert_frame_equal(
            written.sort_values(key).reset_index(drop=True),
            recorded.sort_values(key).reset_index(drop=True),
            check_exact=True,
        )
    assert events["run_id"].nunique() == 30


@pytest.mark.parametrize(
    ("rows", "run_id", "message"),
    [
        (RECORD + ("B8,0,seed,9e7,0.93,120,,,11.1,80",), None, "the file holds 2 runs (B7, B8)"),
        (RECORD, "B9", "start_run_id='B9': no such run in batch.csv (runs: B7)"),
        (
            tuple(r.replace("4.2", "-4.2") for r in RECORD),
            None,
            "batch.csv line 5, column moi: value '-4.2'",
        ),
        (
            tuple(r.replace("B7,0,seed,9e7", "B7,0,seed,lots") for r in RECORD),
            None,
            "batch.csv line 2, column cells: value 'lots' is not a number",
        ),
        (
            RECORD[:5] + ("B7,72,feed,,,150,,,5.5,80",) + RECORD[6:],
            None,
            "batch.csv line 7, column glucose_mM: value '5.5' differs from the seed medium's 11.1",
        ),
        (
            RECORD[:6] + ("B7,144,sample,,,3,,,,",) + RECORD[7:],
            None,
            "batch.csv line 8, column volume_ml: value '3.0' differs from the run's first sample",
        ),
        (
            RECORD[:4] + ("B7,31,transduce,,,,1.0,,,",) + RECORD[4:],
            None,
            "batch.csv line 6, column operation: value 'transduce' is the run's second",
        ),
        (RECORD[:-1], None, "run 'B7' (batch.csv) has no harvest event"),
    ],
)
def test_bad_records_name_file_line_column_and_value(tmp_path, rows, run_id, message):
    path = _record(tmp_path, *rows)
    with pytest.raises(TwinInputError) as error:
        read_start_events(path, run_id=run_id, medium_il2_IU_per_mL=80.0)
    assert message in str(error.value), str(error.value)


def test_a_missing_file_names_the_key(tmp_path):
    with pytest.raises(TwinInputError, match="start_events='.*nope.csv': .*not found"):
        read_start_events(tmp_path / "nope.csv")


# --- what the decisions may move ------------------------------------------------------------------


def test_decisions_leave_medium_volumes_and_other_steps_as_recorded(tmp_path):
    start = read_start_events(_record(tmp_path, *RECORD), medium_il2_IU_per_mL=80.0).recipe
    values = {k: np.asarray(v) for k, v in recipe_values(start).items()}
    moved = {
        "seed_cells": 1.3e8,
        "transduction_delay_h": 20.0,
        "moi": 6.5,
        "exchange_fraction": np.array([0.7, 0.8]),
        "medium_il2_IU_per_mL": 150.0,
        "harvest_time_h": 200.0,
    }
    optimized = recipe_events(recipe_with_values(start, {**values, **moved}))
    recorded = recipe_events(start)
    assert optimized["run_id"].unique().tolist() == ["optimized"]
    by_op = {op: rows.reset_index(drop=True) for op, rows in optimized.groupby("operation")}
    was = {op: rows.reset_index(drop=True) for op, rows in recorded.groupby("operation")}
    # moved: exactly the decision values
    assert by_op["seed"]["cells"][0] == 1.3e8 and by_op["transduce"]["moi"][0] == 6.5
    assert by_op["transduce"]["time_h"][0] == 20.0 and by_op["harvest"]["time_h"][0] == 200.0
    assert by_op["exchange"]["fraction"].tolist() == [0.7, 0.8]
    for op in ("seed", "exchange", "feed"):
        assert (by_op[op]["il2_IU_per_mL"] == 150.0).all()
        # medium and volumes as recorded
        pd.testing.assert_series_equal(by_op[op]["glucose_mM"], was[op]["glucose_mM"])
        pd.testing.assert_series_equal(by_op[op]["volume_ml"], was[op]["volume_ml"])
        pd.testing.assert_series_equal(by_op[op]["time_h"], was[op]["time_h"])
    for op in ("sample", "activate"):
        pd.testing.assert_frame_equal(
            by_op[op].drop(columns="run_id"), was[op].drop(columns="run_id")
        )
    assert by_op["seed"]["viability"][0] == 0.93


def test_a_start_on_the_edge_of_the_covered_range_may_move_inward():
    """A recorded harvest at the shortest culture the data cover is not held there."""
    space = decision_space(Recipe(harvest_time_h=168.0), {"harvest_time_h": (168.0, 240.0)})
    z = space.start()
    assert z[0] == -np.inf
    assert float(space.to_values(z)["harvest_time_h"]) == 168.0  # the start exactly
    assert np.isfinite(space.search_start()).all()
    inside = float(space.to_values(space.search_start())["harvest_time_h"])
    assert 168.0 < inside < 0.1 * (240 - 168) + 168.0


# --- files --------------------------------------------------------------------------------------


def test_optimized_events_round_trip_through_the_reader_and_validator(tmp_path):
    start = read_start_events(EXAMPLE / "events.csv", run_id="R001").recipe
    values = {k: np.asarray(v) for k, v in recipe_values(start).items()}
    values.update(moi=np.asarray(4.123456789012345), harvest_time_h=np.asarray(201.98765432101))
    events = recipe_events(recipe_with_values(start, values))
    folder = tmp_path / "data"
    folder.mkdir()
    events.to_csv(folder / "optimized_events.csv", index=False)  # as write_optimization does
    back, lines = read_events_file(folder / "optimized_events.csv")
    pd.testing.assert_frame_equal(back, events, check_exact=True)
    assert lines[0] == 2
    # The whole run-data contract: the file as events.csv beside runs and (empty) measurements.
    (folder / "optimized_events.csv").rename(folder / "events.csv")
    (folder / "runs.csv").write_text("run_id,donor_id\noptimized,virtual\n")
    (folder / "measurements.csv").write_text("run_id,time_h,variable,value\n")
    data = read_run_data(folder)
    assert data.run_ids == ["optimized"] and data.is_finished("optimized")
    transduce = next(e for e in data.events_for("optimized") if e.operation == "transduce")
    assert transduce.moi == 4.123456789012345  # full precision
    harvest = next(e for e in data.events_for("optimized") if e.operation == "harvest")
    assert harvest.time_h == 201.98765432101


def test_recipe_file_values_are_rounded_inside_their_boxes():
    start = Recipe(transduction_time_h=24.0)
    bounds = {"moi": (1.0, 15.0), "harvest_time_h": (150.0, 200.3), "seed_cells": (5e7, 2e8)}
    space = decision_space(start, bounds)
    values = {k: np.asarray(v) for k, v in recipe_values(start).items()}
    values.update(moi=np.asarray(3.449), harvest_time_h=np.asarray(200.29))
    rounded = rounded_recipe(start, space, values)
    assert rounded.moi == 3.4 and str(rounded.moi) == "3.4"  # no float noise in the yaml
    assert rounded.harvest_time_h == 200.0  # 200.5 would leave the box: one step back
    assert rounded.seed_cells == start.seed_cells  # not moved: exactly as it was
    assert RESOLUTION["harvest_time_h"] == 0.5 and RESOLUTION["moi"] == 0.1


# --- the calibration's convergence ---------------------------------------------------------------


def _experiment():
    sys.path.insert(0, str(REPO_ROOT / "experiments"))
    try:
        import optimize as experiment
    finally:
        sys.path.pop(0)
    return experiment


@pytest.mark.parametrize(("flag", "warned"), [(0, True), (1, False)])
def test_a_calibration_marked_not_converged_is_warned_about(tmp_path, flag, warned):
    path = tmp_path / "calibration.nc"
    xr.Dataset(attrs={"converged": np.int8(flag)}).to_netcdf(path)
    line = _experiment().calibration_warning(str(path))
    assert (line is not None) == warned
    if warned:
        assert "did not converge" in line and "\n" not in line and str(path) in line


def test_settings_are_checked_by_the_config_class():
    from twin.optimize import OptimizeConfig

    with pytest.raises(ValueError, match=r"optimize.steps=0: must be >= 1"):
        OptimizeConfig(steps=0)
    assert twin.optimize.DATA_GUARDS == ("restrict", "flag")


def _cfg(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        return compose(config_name="optimize", overrides=list(overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([f"start_events={EXAMPLE / 'events.csv'}"], "the file holds 30 runs"),
        (["start_run_id=R001"], "start_run_id='R001': needs start_events=FILE"),
    ],
)
def test_run_refuses_an_ambiguous_start_before_any_work(tmp_path, overrides, message):
    with pytest.raises(TwinInputError, match=message):
        _experiment().run(_cfg(*overrides, "~holdout"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_events_process_applies_the_twins_release_checks():
    """An outside process returns harvest observables; the twin's downstream decides, and a
    failed batch (NaN) counts as not conforming."""
    from twin.optimize import EventsProcess
    from twin.process import Downstream

    seen = []

    def plant(events):
        seen.append(events)
        return {
            "viable_cells": np.array([2e9, 2e9, 2e8, np.nan]),
            "viability": np.array([0.95, 0.6, 0.95, 0.9]),
            "car_pos_fraction": np.full(4, 0.4),
            "vcn_per_transduced_cell": np.full(4, 2.0),
        }

    events = recipe_events(Recipe(), "start")
    out = EventsProcess("p", "a plant", plant).outcomes(events, Downstream())
    # donor 0 passes; 1 fails viability; 2 yields 0.4 x 0.87 x 0.9 x 2e8 = 6.3e7 < one dose
    np.testing.assert_array_equal(out["conforming"], [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(out["success"], [1.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(out["product_viable_car_pos_cells"][0], 0.4 * 0.87 * 0.9 * 2e9)
    assert out["conforming_doses"][0] == 6.0  # floor(6.26e8 / 1e8)
    assert seen[0] is events
