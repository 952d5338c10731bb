"""Run data (RUN_DATA.md): every kind of bad input is reported with its file, line and column;
and the ``experiments/validate.py`` entry point."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from test_data_io import VALID_FILES, write_valid_dataset

from twin._errors import TwinInputError
from twin.data import read_run_data

REPO_ROOT = Path(__file__).resolve().parents[1]


def set_line(name: str, line: int, text: str) -> Callable[[Path], None]:
    """Replace line ``line`` (1-based) of file ``name``."""

    def edit(folder: Path) -> None:
        lines = (folder / name).read_text(encoding="utf-8").splitlines()
        lines[line - 1] = text
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")

    return edit


def insert_line(name: str, line: int, text: str) -> Callable[[Path], None]:
    """Insert ``text`` so that it becomes line ``line`` of file ``name``."""

    def edit(folder: Path) -> None:
        lines = (folder / name).read_text(encoding="utf-8").splitlines()
        lines.insert(line - 1, text)
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")

    return edit


def set_file(name: str, content: str | bytes | None) -> Callable[[Path], None]:
    """Give file ``name`` new content (bytes as is); ``None`` deletes it."""

    def edit(folder: Path) -> None:
        if content is None:
            (folder / name).unlink()
        elif isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content, encoding="utf-8")

    return edit


def edits(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    """Apply several edits in turn."""

    def edit(folder: Path) -> None:
        for step in steps:
            step(folder)

    return edit


RUNS = VALID_FILES["runs.csv"]
MEASUREMENTS = VALID_FILES["measurements.csv"]

# (edit, expected file, line, column, part of the message); None: the problem has no line/column.
BAD_INPUTS = {
    "missing file": (
        set_file("measurements.csv", None),
        "measurements.csv",
        None,
        None,
        "not found",
    ),
    "empty file": (set_file("events.csv", ""), "events.csv", None, None, "empty"),
    "header only": (set_file("runs.csv", "run_id,donor_id\n"), "runs.csv", None, None, "no runs"),
    "missing column": (
        set_file("runs.csv", "run_id\nR1\nR2\nR3\n"),
        "runs.csv",
        1,
        "donor_id",
        "required column is missing",
    ),
    "misspelled column": (
        set_line(
            "events.csv", 1, VALID_FILES["events.csv"].splitlines()[0].replace("viab", "vaib")
        ),
        "events.csv",
        1,
        "vaibility",
        "unknown column (did you mean 'viability'?)",
    ),
    "extra column": (
        set_file("runs.csv", "run_id,donor_id,notes\nR1,D1,\nR2,D1,split\nR3,D2,\n"),
        "runs.csv",
        1,
        "notes",
        "unknown column",
    ),
    "semicolon delimiter": (
        set_file("runs.csv", RUNS.replace(",", ";")),
        "runs.csv",
        1,
        None,
        "separated by ';'",
    ),
    "tab delimiter": (
        set_file("measurements.csv", MEASUREMENTS.replace(",", "\t")),
        "measurements.csv",
        1,
        None,
        "separated by tabs",
    ),
    "latin-1 encoding": (
        set_file("runs.csv", RUNS.replace("R2,D1", "R2,Dö").encode("latin-1")),
        "runs.csv",
        3,
        None,
        "not UTF-8",
    ),
    "utf-16 encoding": (
        set_file("runs.csv", RUNS.encode("utf-16")),
        "runs.csv",
        None,
        None,
        "UTF-16",
    ),
    "utf-16 without byte-order mark": (
        set_file("runs.csv", RUNS.encode("utf-16-le")),
        "runs.csv",
        1,
        None,
        "NUL bytes",
    ),
    "too few values": (
        set_line("events.csv", 5, "R1,72,exchange,,,,0.5,20,100"),
        "events.csv",
        5,
        None,
        "expected 10 comma-separated values, found 9",
    ),
    "unknown operation": (
        set_line("events.csv", 6, "R1,96,centrifuge,,,30,,,25,"),
        "events.csv",
        6,
        "operation",
        "unknown operation",
    ),
    "unknown variable": (
        set_line("measurements.csv", 6, "R1,120,lactate,9.8"),
        "measurements.csv",
        6,
        "variable",
        "value 'lactate' is not a known variable (did you mean 'lactate_mM'?)",
    ),
    "non-numeric event field": (
        set_line("events.csv", 4, "R1,24,transduce,,,,five,,,"),
        "events.csv",
        4,
        "moi",
        "value 'five' is not a number",
    ),
    "decimal comma": (
        set_line("measurements.csv", 5, 'R1,120,glucose_mM,"14,2"'),
        "measurements.csv",
        5,
        "value",
        "decimal separator",
    ),
    "non-numeric time": (
        set_line("measurements.csv", 4, "R1,5 days,viable_cells,3.1e8"),
        "measurements.csv",
        4,
        "time_h",
        "is not a number",
    ),
    "nan time": (
        set_line("events.csv", 4, "R1,nan,transduce,,,,5,,,"),
        "events.csv",
        4,
        "time_h",
        "must be a finite number",
    ),
    "infinite value": (
        set_line("measurements.csv", 9, "R1,192,vcn_per_cell,inf"),
        "measurements.csv",
        9,
        "value",
        "must be a finite number",
    ),
    "empty measurement time": (
        set_line("measurements.csv", 9, "R1,,vcn_per_cell,2.1"),
        "measurements.csv",
        9,
        "time_h",
        "is empty",
    ),
    "negative event field": (
        set_line("events.csv", 4, "R1,24,transduce,,,,-1,,,"),
        "events.csv",
        4,
        "moi",
        "value '-1' must be >= 0",
    ),
    "negative event time": (
        set_line("events.csv", 3, "R1,-1,activate,,,,,,,"),
        "events.csv",
        3,
        "time_h",
        "must be >= 0",
    ),
    "negative measurement": (
        set_line("measurements.csv", 4, "R1,120,viable_cells,-3.1e8"),
        "measurements.csv",
        4,
        "value",
        "must be >= 0",
    ),
    "negative measurement time": (
        set_line("measurements.csv", 10, "R2,-1,viable_cells,3.78e7"),
        "measurements.csv",
        10,
        "time_h",
        "must be >= 0",
    ),
    "seed viability above 1": (
        set_line("events.csv", 2, "R1,0,seed,5e7,1.2,70,,,25,100"),
        "events.csv",
        2,
        "viability",
        "must be a fraction in [0, 1]",
    ),
    "exchange fraction above 1": (
        set_line("events.csv", 5, "R1,72,exchange,,,,,1.5,20,100"),
        "events.csv",
        5,
        "fraction",
        "must be a fraction in [0, 1]",
    ),
    "car_pos_fraction above 1": (
        set_line("measurements.csv", 8, "R1,192,car_pos_fraction,1.3"),
        "measurements.csv",
        8,
        "value",
        "must be a fraction in [0, 1]",
    ),
    "negative measured viability": (
        set_line("measurements.csv", 3, "R1,0,viability,-0.1"),
        "measurements.csv",
        3,
        "value",
        "must be a fraction in [0, 1]",
    ),
    "duplicated event row": (
        insert_line("events.csv", 17, "R3,0.5,activate,,,,,,,"),
        "events.csv",
        17,
        None,
        "duplicate of line 14",
    ),
    "duplicated run_id": (
        insert_line("runs.csv", 5, "R2,D2"),
        "runs.csv",
        5,
        "run_id",
        "listed twice (also on line 3)",
    ),
    "duplicated measurement": (
        insert_line("measurements.csv", 16, "R1,120.0,glucose_mM,15"),
        "measurements.csv",
        16,
        "variable",
        "measured twice at this time (line 5)",
    ),
    "events out of order": (
        set_line("events.csv", 5, "R1,12,exchange,,,,,0.5,20,100"),
        "events.csv",
        5,
        "time_h",
        "out of order",
    ),
    "event after harvest": (
        insert_line("events.csv", 13, "R2,170,sample,,,1,,,,"),
        "events.csv",
        13,
        "operation",
        "event after harvest",
    ),
    "no seed": (
        set_line("events.csv", 13, "R3,0,activate,,,,,,,"),
        "events.csv",
        13,
        "operation",
        "no seed event",
    ),
    "two seeds": (
        set_line("events.csv", 10, "R2,0,seed,1e7,0.9,70,,,,"),
        "events.csv",
        10,
        "operation",
        "a second seed event",
    ),
    "seed not at time 0": (
        set_line("events.csv", 9, "R2,1,seed,4.2e7,0.9,70,,,,"),
        "events.csv",
        9,
        "time_h",
        "the seed event must be at time 0",
    ),
    "missing required field": (
        set_line("events.csv", 2, "R1,0,seed,,0.95,70,,,25,100"),
        "events.csv",
        2,
        "cells",
        "value '' required for seed events",
    ),
    "value where the operation takes none": (
        set_line("events.csv", 3, "R1,0,activate,,,,5,,,"),
        "events.csv",
        3,
        "moi",
        "not applicable to activate events",
    ),
    "sample larger than the culture": (
        set_line("events.csv", 16, "R3,48,sample,,,100,,,,"),
        "events.csv",
        16,
        "volume_ml",
        "sample volume is not less than the culture volume",
    ),
    "run without events": (
        insert_line("runs.csv", 5, "R4,D2"),
        "runs.csv",
        5,
        "run_id",
        "value 'R4' has no events in events.csv",
    ),
    "events of an unlisted run": (
        insert_line("events.csv", 17, "R9,0,seed,1e7,0.9,70,,,,"),
        "events.csv",
        17,
        "run_id",
        "value 'R9' is not listed in runs.csv",
    ),
    "measurements of an unlisted run": (
        insert_line("measurements.csv", 16, "R9,0,viable_cells,1e7"),
        "measurements.csv",
        16,
        "run_id",
        "value 'R9' is not listed in runs.csv",
    ),
    "measurement after harvest": (
        set_line("measurements.csv", 11, "R2,170,viable_cells,8.0e8"),
        "measurements.csv",
        11,
        "time_h",
        "after the run's harvest at 168 h (events.csv line 12)",
    ),
    "empty run_id": (
        set_line("measurements.csv", 2, ",0,viable_cells,4.75e7"),
        "measurements.csv",
        2,
        "run_id",
        "is empty",
    ),
    "empty donor_id": (set_line("runs.csv", 2, "R1,"), "runs.csv", 2, "donor_id", "is empty"),
    "spaces around a value": (
        set_line("runs.csv", 3, "R2, D1"),
        "runs.csv",
        3,
        "donor_id",
        "value ' D1' has leading or trailing spaces",
    ),
    "blank line keeps line numbers": (
        edits(
            set_line("events.csv", 4, "R1,24,transduce,,,,-1,,,"), insert_line("events.csv", 2, "")
        ),
        "events.csv",
        5,
        "moi",
        "must be >= 0",
    ),
}


@pytest.mark.parametrize(
    ("edit", "file", "line", "column", "message"), BAD_INPUTS.values(), ids=BAD_INPUTS
)
def test_bad_input_is_reported_with_file_line_and_column(
    tmp_path, edit, file, line, column, message
):
    folder = write_valid_dataset(tmp_path / "data")
    edit(folder)
    with pytest.raises(TwinInputError) as error:
        read_run_data(folder)
    location = file if line is None else f"{file} line {line}"
    if column is not None:
        location += f", column {column}"
    matching = [p for p in error.value.problems if p.startswith(location) and message in p]
    assert matching, f"no problem '{location}...{message}' in {error.value.problems}"


def test_every_problem_is_reported_in_file_order(tmp_path):
    folder = write_valid_dataset(tmp_path / "data")
    set_line("measurements.csv", 3, "R1,0,viability,1.5")(folder)
    set_line("events.csv", 4, "R1,24,transduce,,,,-1,,,")(folder)
    set_line("events.csv", 3, "R1,0,activate,,,,,,,7")(folder)
    set_line("runs.csv", 4, "R3,")(folder)
    with pytest.raises(TwinInputError) as error:
        read_run_data(folder)
    assert error.value.problems == [
        "runs.csv line 4, column donor_id: value '' is empty (a donor identifier is required)",
        "events.csv line 3, column il2_IU_per_mL: value '7' not applicable to activate events "
        "(leave it empty)",
        "events.csv line 4, column moi: value '-1' must be >= 0",
        "measurements.csv line 3, column value: value '1.5' must be a fraction in [0, 1] for "
        "viability",
    ]


def test_missing_folder(tmp_path):
    with pytest.raises(TwinInputError, match="data folder not found"):
        read_run_data(tmp_path / "nowhere")


def load_validate_script():
    spec = importlib.util.spec_from_file_location("validate", REPO_ROOT / "experiments/validate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_validate_summarizes_good_data(tmp_path):
    folder = write_valid_dataset(tmp_path / "data")
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose("validate", overrides=[f"data_dir={folder}"])
    summary = load_validate_script().run(cfg)
    assert "runs: 3 (2 finished, 1 running)" in summary
    assert "donors: 2" in summary
    assert "time span: 0 to 192 h" in summary
    assert "viable_cells      6" in summary


def test_validate_resolves_a_relative_data_dir_against_the_repo():
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        assert compose("validate").data_dir == "twin/data/example"
        cfg = compose("validate", overrides=["data_dir=twin/data/no_such_folder"])
    with pytest.raises(
        TwinInputError, match=f"not found: {REPO_ROOT / 'twin/data/no_such_folder'}"
    ):
        load_validate_script().run(cfg)


def test_validate_command_reports_bad_data_without_traceback(tmp_path):
    folder = write_valid_dataset(tmp_path / "data")
    set_line("events.csv", 4, "R1,24,transduce,,,,-1,,,")(folder)
    set_file("measurements.csv", None)(folder)
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "experiments/validate.py"),
            f"data_dir={folder}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
            ),
        },
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = result.stderr.splitlines()
    assert errors == [
        "error: events.csv line 4, column moi: value '-1' must be >= 0",
        f"error: measurements.csv: file not found in {folder}",
    ]
