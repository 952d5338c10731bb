"""Run data (RUN_DATA.md): reading valid data, `RunData`, and lossless CSV / NetCDF round trips."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twin._errors import TwinInputError
from twin.data import (
    COLUMNS,
    MEASUREMENT_VARIABLES,
    RunData,
    read_netcdf,
    read_run_data,
    run_data_from_xarray,
    run_data_to_xarray,
    write_netcdf,
    write_run_data,
)
from twin.process._schedule import EVENT_FIELDS, Event

# Three runs from two donors (donor "007" must stay text); R3 is still running (no harvest).
# Measurements of R3 are not in canonical order; two values need 17 significant digits.
VALID_FILES = {
    "runs.csv": """\
run_id,donor_id
R1,D1
R2,D1
R3,007
""",
    "events.csv": """\
run_id,time_h,operation,cells,viability,volume_ml,moi,fraction,glucose_mM,il2_IU_per_mL
R1,0,seed,5e7,0.95,70,,,25,100
R1,0,activate,,,,,,,
R1,24,transduce,,,,5,,,
R1,72,exchange,,,,,0.5,20,100
R1,96,feed,,,30,,,25,
R1,120,sample,,,1.5,,,,
R1,192,harvest,,,,,,,
R2,0,seed,4.2e7,0.9,70,,,,
R2,0,activate,,,,,,,
R2,24,transduce,,,,2.5,,,
R2,168,harvest,,,,,,,
R3,0,seed,6e7,0.97,70,,,,
R3,0.5,activate,,,,,,,
R3,24,transduce,,,,5,,,
R3,48,sample,,,1,,,,
""",
    "measurements.csv": """\
run_id,time_h,variable,value
R1,0,viable_cells,4.75e7
R1,0,viability,0.95
R1,120,viable_cells,3.1e8
R1,120,glucose_mM,14.2
R1,120,lactate_mM,9.8
R1,192,viable_cells,1.2e9
R1,192,car_pos_fraction,0.42
R1,192,vcn_per_cell,2.1
R2,0,viable_cells,3.78e7
R2,168,viable_cells,8.0e8
R2,168,viability,0.30000000000000004
R2,168,il2_IU_per_mL,35.5
R3,48,glucose_mM,0.3333333333333333
R3,48,viable_cells,9.9e7
""",
}


def write_valid_dataset(folder: Path) -> Path:
    """Write the valid example dataset (:data:`VALID_FILES`) to ``folder``; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in VALID_FILES.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def assert_same_run_data(actual: RunData, expected: RunData) -> None:
    for table in ("runs", "events", "measurements"):
        pd.testing.assert_frame_equal(getattr(actual, table), getattr(expected, table))


def csv_texts(folder: Path) -> dict[str, str]:
    return {name: (folder / name).read_text(encoding="utf-8") for name in VALID_FILES}


@pytest.fixture
def data(tmp_path: Path) -> RunData:
    return read_run_data(write_valid_dataset(tmp_path / "valid"))


def test_contract_event_columns_are_the_schedule_event_fields():
    assert COLUMNS["events"] == ("run_id", "time_h", "operation", *EVENT_FIELDS)


def test_run_data_accessors(data: RunData):
    assert data.run_ids == ["R1", "R2", "R3"]
    assert [data.donor_of(run_id) for run_id in data.run_ids] == ["D1", "D1", "007"]
    assert [data.is_finished(run_id) for run_id in data.run_ids] == [True, True, False]
    events = data.events_for("R1")
    assert events[0] == Event(
        time_h=0.0,
        operation="seed",
        cells=5e7,
        viability=0.95,
        volume_ml=70.0,
        glucose_mM=25.0,
        il2_IU_per_mL=100.0,
    )
    assert events[2] == Event(time_h=24.0, operation="transduce", moi=5.0)
    assert [e.operation for e in data.events_for("R3")] == [
        "seed",
        "activate",
        "transduce",
        "sample",
    ]
    r3 = data.measurements_for("R3")
    assert r3["variable"].tolist() == ["viable_cells", "glucose_mM"]  # canonical order
    assert r3["value"].tolist() == [9.9e7, 0.3333333333333333]
    with pytest.raises(KeyError, match="R9"):
        data.events_for("R9")


def test_select_keeps_whole_runs_in_runs_order(data: RunData):
    chosen = data.select(["R3", "R1"])
    assert chosen.run_ids == ["R1", "R3"]
    assert chosen.events_for("R1") == data.events_for("R1")
    assert chosen.events_for("R3") == data.events_for("R3")
    pd.testing.assert_frame_equal(chosen.measurements_for("R3"), data.measurements_for("R3"))
    assert len(chosen.events) == len(data.events) - len(data.events_for("R2"))
    with pytest.raises(KeyError, match="R9"):
        data.select(["R1", "R9"])


def test_as_of_cuts_every_run_at_a_time(data: RunData):
    at_120 = data.as_of(120.0)
    assert at_120.run_ids == data.run_ids
    assert [at_120.is_finished(r) for r in at_120.run_ids] == [False, False, False]
    assert [e.time_h for e in at_120.events_for("R1")] == [0, 0, 24, 72, 96, 120]  # inclusive
    assert at_120.measurements["time_h"].max() == 120.0
    assert len(at_120.measurements_for("R1")) == 5
    assert at_120.events_for("R3") == data.events_for("R3")  # nothing after 48 h to cut
    assert [data.as_of(500.0).is_finished(r) for r in data.run_ids] == [True, True, False]
    with pytest.raises(ValueError, match="time_h=-1"):
        data.as_of(-1.0)


def test_run_data_tables_have_contract_columns_and_dtypes(data: RunData):
    for table in ("runs", "events", "measurements"):
        frame = getattr(data, table)
        assert tuple(frame.columns) == COLUMNS[table]
        assert isinstance(frame.index, pd.RangeIndex)
    assert data.events["moi"].dtype == np.float64
    assert math.isnan(data.events.loc[0, "moi"])  # empty cell = not applicable


def test_csv_round_trip_is_lossless(data: RunData, tmp_path: Path):
    first = write_run_data(data, tmp_path / "first")
    again = read_run_data(first)
    assert_same_run_data(again, data)
    second = write_run_data(again, tmp_path / "second")
    assert csv_texts(second) == csv_texts(first)
    assert "R2,168.0,viability,0.30000000000000004\n" in csv_texts(first)["measurements.csv"]
    assert "R2,24.0,transduce,,,,2.5,,,\n" in csv_texts(first)["events.csv"]


def test_csv_columns_may_come_in_any_order_with_bom_and_crlf(tmp_path: Path):
    folder = write_valid_dataset(tmp_path / "data")
    (folder / "runs.csv").write_bytes(b"\xef\xbb\xbfdonor_id,run_id\r\nD1,R1\r\nD1,R2\r\nD2,R3\r\n")
    assert read_run_data(folder).run_ids == ["R1", "R2", "R3"]


def test_netcdf_round_trip_is_lossless(data: RunData, tmp_path: Path):
    nc_file = write_netcdf(data, tmp_path / "run_data.nc")
    back = read_netcdf(nc_file)
    assert_same_run_data(back, data)
    via_netcdf = write_run_data(back, tmp_path / "via_netcdf")
    direct = write_run_data(data, tmp_path / "direct")
    assert csv_texts(via_netcdf) == csv_texts(direct)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_xarray_layout(data: RunData):
    ds = run_data_to_xarray(data)
    assert dict(ds.sizes) == {"run": 3, "time": 5, "event": 7}
    assert ds["run"].values.tolist() == ["R1", "R2", "R3"]
    assert ds["donor_id"].values.tolist() == ["D1", "D1", "007"]
    assert ds["time_h"].values.tolist() == [0.0, 48.0, 120.0, 168.0, 192.0]
    assert ds["time_h"].attrs["units"] == "h"
    assert ds["viable_cells"].attrs["units"] == "cells"
    assert ds["event_moi"].attrs["units"] == "TU/cell"
    assert set(MEASUREMENT_VARIABLES) <= set(ds.data_vars)
    r3 = ds.sel(run="R3")
    assert np.isnan(r3["viable_cells"].values).tolist() == [True, False, True, True, True]
    assert (
        r3["event_operation"].values.tolist()
        == ["seed", "activate", "transduce", "sample"] + [""] * 3
    )
    assert np.isnan(r3["event_time_h"].values[4:]).all()
    assert_same_run_data(run_data_from_xarray(ds), data)


def test_write_replaces_an_existing_dataset_atomically(data: RunData, tmp_path: Path):
    target = write_valid_dataset(tmp_path / "data")
    (target / "runs.csv").write_text("stale", encoding="utf-8")
    write_run_data(data, target)
    assert_same_run_data(read_run_data(target), data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "valid"]  # no temporary left


def test_write_refuses_a_folder_holding_other_files(data: RunData, tmp_path: Path):
    target = tmp_path / "data"
    target.mkdir()
    (target / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(TwinInputError, match="notes.txt"):
        write_run_data(data, target)
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]


def test_invalid_data_is_never_written(data: RunData, tmp_path: Path):
    events = data.events.copy()
    events.loc[2, "moi"] = -1.0
    bad = RunData(runs=data.runs, events=events, measurements=data.measurements)
    with pytest.raises(TwinInputError) as error:
        write_run_data(bad, tmp_path / "bad")
    assert error.value.problems == ["events row 3, column moi: value '-1.0' must be >= 0"]
    with pytest.raises(TwinInputError):
        write_netcdf(bad, tmp_path / "bad.nc")
    assert list(tmp_path.iterdir()) == [tmp_path / "valid"]


def test_read_netcdf_reports_bad_content_and_bad_files(data: RunData, tmp_path: Path):
    ds = run_data_to_xarray(data)
    ds["viability"].loc[{"run": "R1", "time": 0}] = 1.5
    ds.to_netcdf(tmp_path / "bad.nc")
    with pytest.raises(TwinInputError) as error:
        read_netcdf(tmp_path / "bad.nc")
    assert error.value.problems == [
        "bad.nc: measurements row 2, column value: value '1.5' must be a fraction in [0, 1] "
        "for viability"
    ]

    ds.drop_vars("event_moi").to_netcdf(tmp_path / "incomplete.nc")
    with pytest.raises(TwinInputError, match="incomplete.nc: missing variable 'event_moi'"):
        read_netcdf(tmp_path / "incomplete.nc")
    (tmp_path / "text.nc").write_text("not netcdf", encoding="utf-8")
    with pytest.raises(TwinInputError, match="not a readable NetCDF file"):
        read_netcdf(tmp_path / "text.nc")
    with pytest.raises(TwinInputError, match="not found"):
        read_netcdf(tmp_path / "missing.nc")
