"""Reliability plumbing: file modes, paths, run folders, overrides, provenance, versions."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

import twin
from twin import TwinInputError
from twin._atomic import atomic_path
from twin._cli import (
    REPO_ROOT,
    check_output_dir,
    resolve_user_path,
    unknown_added_keys,
)
from twin.calibrate import Calibration
from twin.data import read_run_data, write_run_data
from twin.process import PlausibilityBounds
from twin.provenance import RESULT_ENV_VARS, hash_path, write_provenance

BASE = Path(__file__).parent / "bad_inputs" / "base"


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_outputs_respect_the_umask(tmp_path, umask_022):
    with atomic_path(tmp_path / "out" / "file.txt") as tmp:
        tmp.write_text("x")
    assert (tmp_path / "out" / "file.txt").stat().st_mode & 0o777 == 0o644
    folder = write_run_data(read_run_data(BASE), tmp_path / "dataset")
    assert folder.stat().st_mode & 0o777 == 0o755
    assert (folder / "runs.csv").stat().st_mode & 0o777 == 0o644


def test_relative_paths_do_not_fall_back_to_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a folder of the repository, typed from elsewhere: stays relative (reported missing)
    assert resolve_user_path("tests/bad_inputs/base") == Path("tests/bad_inputs/base")
    with pytest.raises(TwinInputError, match="data folder not found: tests/bad_inputs/base"):
        read_run_data(resolve_user_path("tests/bad_inputs/base"))
    # the shipped example is found from anywhere
    assert resolve_user_path("twin/data/example") == REPO_ROOT / "twin" / "data" / "example"
    (tmp_path / "twin" / "data" / "example").mkdir(parents=True)  # a local one wins
    assert resolve_user_path("twin/data/example") == Path("twin/data/example")


def test_a_run_folder_with_results_is_refused_unless_overwrite(tmp_path):
    check_output_dir(tmp_path, overwrite=False)  # empty (Hydra's .hydra/ only): fine
    (tmp_path / "provenance.json").write_text("{}")
    with pytest.raises(TwinInputError, match="already holds the results of an earlier run"):
        check_output_dir(tmp_path, overwrite=False)
    check_output_dir(tmp_path, overwrite=True)


def test_default_run_folders_are_unique_to_the_microsecond():
    for path in sorted((REPO_ROOT / "configs").glob("*.yaml")):
        hydra = yaml.safe_load(path.read_text()).get("hydra", {})
        for section in ("run", "sweep"):
            if section in hydra:
                assert "%f" in hydra[section]["dir"], (path.name, section)
        config = yaml.safe_load(path.read_text())
        assert config.get("verbose") is False and config.get("overwrite") is False, path.name


def test_keys_added_to_free_form_mappings_and_groups_are_allowed():
    cfg = OmegaConf.create({"forecast": {"run_level_sd": {}}, "experiment": None})
    overrides = ["+forecast.run_level_sd.activation_lag_h=0.3", "+experiment=example_dataset"]
    assert unknown_added_keys(cfg, overrides, {"experiment": "example_dataset"}) == []
    assert unknown_added_keys(cfg, ["+seeed=1"], {}) != []


def test_provenance_records_revision_inputs_devices_and_environment(tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(BASE, data)
    cfg = OmegaConf.create({"data_dir": str(data), "optimize": {"data_dir": None}})
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    write_provenance(tmp_path / "out", cfg)
    record = json.loads((tmp_path / "out" / "provenance.json").read_text())
    head = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if head.returncode == 0:
        assert record["source"]["commit"] == head.stdout.strip()
        assert isinstance(record["source"]["dirty"], bool)
    assert record["input_sha256"] == {"data_dir": hash_path(data)}
    assert record["devices"]["device_count"] == jax.device_count()
    assert set(record["environment"]) == set(RESULT_ENV_VARS)
    assert record["environment"]["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false"
    assert record["seed"] is None and record["seed_note"] == "no random draws"
    before = hash_path(data)
    (data / "measurements.csv").write_text((data / "measurements.csv").read_text() + "\n")
    assert hash_path(data) != before  # one changed byte changes the hash


def test_package_version():
    assert isinstance(twin.__version__, str) and twin.__version__


def test_converged_is_false_when_a_run_failed():
    def calibration(failed_runs):
        diagnostics = pd.DataFrame(
            {"selected": [True], "converged": [True], "failed_runs": [failed_runs]}
        )
        return Calibration(*([None] * 18), diagnostics, None, 0.7, 0.95)

    assert calibration(0).converged
    assert not calibration(1).converged


def test_plausibility_bounds_are_configurable(tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(BASE, folder)
    small = PlausibilityBounds(cartridge_capacity_ml=200.0)
    with pytest.raises(TwinInputError, match="beyond the cartridge's 200 mL"):
        read_run_data(folder, bounds=small)
    with pytest.raises(ValueError, match="max_cells=-1.0: must be a finite number > 0"):
        PlausibilityBounds(max_cells=-1.0)


class _Reached(Exception):
    """Raised by a stand-in for the solve: the inputs were accepted; carries the schedule."""


def _compose(*requests: tuple[str, list[str]]):
    from hydra import compose, initialize_config_dir

    import twin.config  # noqa: F401  (registers the schemas)

    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        return [compose(command, overrides=overrides) for command, overrides in requests]


def _entry(command: str):
    spec = importlib.util.spec_from_file_location(
        f"bounds_{command}", REPO_ROOT / "experiments" / f"{command}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reach(*args, **kwargs):
    raise _Reached(args[1])  # simulate(params, schedule, ...)


def _with(cfg, **values):
    cfg = copy.deepcopy(cfg)
    for key, value in values.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def test_bounds_from_the_command_line_serve_the_data_and_the_recipe_path(tmp_path, monkeypatch):
    """5e12 seed cells: refused by default (1e12), accepted with bounds.max_cells=1e13, in a
    batch record (validate; simulate's replay, whose schedule is re-checked) and in a recipe."""
    folder = tmp_path / "data"
    shutil.copytree(BASE, folder)
    events = folder / "events.csv"
    events.write_text(events.read_text().replace("seed,100000000,", "seed,5e12,"))
    recipe, raised_recipe, data = _compose(
        ("simulate", ["recipe.seed_cells=5e12"]),
        ("simulate", ["recipe.seed_cells=5e12", "bounds.max_cells=1e13"]),
        ("validate", [f"data_dir={folder}"]),
    )
    assert raised_recipe.bounds.max_cells == 1e13 and data.bounds.max_cells == 1e12
    replay = _with(recipe, data_dir=str(folder), run_id="R1", **{"recipe.seed_cells": 1e8})
    validate, simulate = _entry("validate"), _entry("simulate")
    monkeypatch.setattr(simulate, "simulate", _reach)
    for refused, accepted in (
        (recipe, raised_recipe),
        (replay, _with(replay, **{"bounds.max_cells": 1e13})),
    ):
        with pytest.raises(TwinInputError, match=r"above bounds\.max_cells=1e\+12"):
            simulate.run(refused, tmp_path / "out")
        with pytest.raises(_Reached) as reached:
            simulate.run(accepted, tmp_path / "out")
        assert float(reached.value.args[0].cells[0]) == 5e12  # the seed, as given
    with pytest.raises(TwinInputError, match=r"line 2, column cells: value '5e12'"):
        validate.run(data)
    assert "runs: 1" in validate.run(_with(data, **{"bounds.max_cells": 1e13}))
    # the bounds hold only inside the command: afterwards the defaults are back
    with pytest.raises(TwinInputError, match="implausibly large"):
        read_run_data(folder)


def _script(name: str, *overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "experiments" / name), *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_command_refuses_an_escaping_run_id_in_one_line(tmp_path):
    """The real command (one subprocess): exit 2, one error line, no traceback."""
    data = tmp_path / "data"
    shutil.copytree(BASE, data)
    for name in ("runs.csv", "events.csv", "measurements.csv"):
        path = data / name
        path.write_text(path.read_text().replace("R1,", "x/../../escaped,"))
    run_dir = f"hydra.run.dir={tmp_path}/run"
    result = _script("validate.py", f"data_dir={data}", run_dir, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines[0].startswith(
        "error: runs.csv line 2, column run_id: value 'x/../../escaped' is not a safe identifier"
    )
    log = (tmp_path / "run" / "validate.log").read_text()
    assert "is not a safe identifier" in log  # the job log holds the error too


@pytest.mark.slow
def test_verbose_shows_the_traceback_and_added_keys_are_refused(tmp_path):
    result = _script("simulate.py", "+recipe.mio=3", f"hydra.run.dir={tmp_path}/a", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: +recipe.mio=3: 'recipe.mio' is not a config key" in result.stderr
    result = _script(
        "simulate.py", "recipe.moi=-1", "verbose=true", f"hydra.run.dir={tmp_path}/b", cwd=tmp_path
    )
    assert result.returncode != 0 and "Traceback" in result.stderr
    assert "recipe.moi=-1" in result.stderr


@pytest.mark.slow
def test_a_rerun_never_replaces_results_and_the_same_command_is_bit_identical(tmp_path):
    run = tmp_path / "run"
    first = _script("simulate.py", f"hydra.run.dir={run}", "save_interval_h=12", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    trajectory = (run / "trajectory.nc").read_bytes()
    again = _script("simulate.py", f"hydra.run.dir={run}", "save_interval_h=12", cwd=tmp_path)
    assert again.returncode == 2 and "already holds the results" in again.stderr
    assert (run / "trajectory.nc").read_bytes() == trajectory
    other = tmp_path / "other"
    second = _script("simulate.py", f"hydra.run.dir={other}", "save_interval_h=12", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    import xarray as xr

    with xr.open_dataset(run / "trajectory.nc") as a, xr.open_dataset(other / "trajectory.nc") as b:
        xr.testing.assert_identical(a.load(), b.load())  # bit-identical values and attrs
    record = json.loads((run / "provenance.json").read_text())
    assert record["devices"]["device_count"] >= 1


# --- every summary counts its failures (0 included) ----------------------------------------


def test_backtest_metrics_count_failed_runs_and_draws():
    from twin.forecast._backtest import backtest_metrics

    results = pd.DataFrame(
        {
            "median": [1.1e9, float("nan"), 4.0e8],  # the second run: every draw failed
            "relative_error": [0.1, float("nan"), 0.2],
            "log_error": [0.0, float("nan"), 0.0],
            "covered": [True, False, False],
            "noise_floor": [0.05] * 3,
            "failed_draws": [0, 200, 3],
        }
    )
    metrics = backtest_metrics(results, horizon_h=60)
    assert (metrics["runs"], metrics["failed_runs"], metrics["failed_draws"]) == (3, 1, 203)
    assert metrics["mean_relative_error"] == pytest.approx(0.15)  # over the forecast runs
    assert metrics["coverage_90"] == pytest.approx(1 / 3)  # a failed run is not covered
    assert backtest_metrics(results.iloc[[0]], 60)["failed_runs"] == 0


def test_validity_table_counts_failed_runs():
    from twin.plants._bench import format_table, metrics, summary_table

    rows = pd.DataFrame(
        {
            "method": "twin",
            "run_id": ["A", "B"],
            "observed": [5e8, 5e8],
            "median": [5.5e8, float("nan")],
            "relative_error": [0.1, float("nan")],
            "covered": [True, False],
        }
    )
    assert metrics(rows)["failed_runs"] == 1 and metrics(rows.iloc[:1])["failed_runs"] == 0
    results = pd.concat([rows.assign(bench="p1"), rows.iloc[:1].assign(bench="p2")])
    table = summary_table(results, {"p1": True, "p2": True})
    assert table["twin_failed_runs"].tolist() == [1, 0, 1]  # the plants' row: their sum
    assert format_table(table).splitlines()[0].endswith("| failed runs")
    assert format_table(table).splitlines()[2].endswith("| 1")


def _calibration(failed_runs: int) -> Calibration:
    from twin import default_parameters
    from twin.assays import AssayNoise
    from twin.kinetics import ModelStructure, to_unconstrained
    from twin.simulate import SolverSettings

    fitted = ("max_growth_rate_per_h",)
    population = to_unconstrained(default_parameters())
    return Calibration(
        fitted=fitted,
        donor_level=(),
        donor_ids=("D0",),
        run_ids=("R0", "R1"),
        run_donor_ids=("D0", "D0"),
        model_parameters=default_parameters(),
        estimate=np.array([float(population.max_growth_rate_per_h)]),
        donor_effects=np.zeros((1, 0)),
        covariance=np.diag([0.01]),
        prior_sd=np.full(1, 0.3),
        donor_sd=np.zeros(0),
        noise=AssayNoise(),
        initial_noise=AssayNoise(),
        structure=ModelStructure(),
        solver=SolverSettings(),
        objective=1.0,
        n_observations=4,
        observations=pd.DataFrame(
            columns=["run_id", "time_h", "variable", "observed", "predicted", "scaled_residual"]
        ),
        diagnostics=pd.DataFrame(
            {
                "selected": [True],
                "converged": [True],
                "failed_runs": [failed_runs],
                "steps": [5],
                "gradient_norm": [1e-9],
                "decrement": [1e-12],
            }
        ),
        profiles=pd.DataFrame(),
        prior_dominated_ratio=0.7,
        high_correlation=0.95,
    )


def test_calibrate_report_counts_failed_solves():
    report = _entry("calibrate").report
    assert "failed ODE solves at the estimate: 0 of 2 run(s)" in report(_calibration(0))
    text = report(_calibration(1))
    assert "warning: failed ODE solves at the estimate: 1 of 2 run(s) (penalized" in text
    assert "NOT converged" in text


def test_optimize_comparison_counts_failed_solves():
    from twin.optimize import OptimizeConfig
    from twin.optimize._optimize import _table

    def outcome(success):
        success = np.asarray(success)
        return {
            "conforming": success.astype(float),  # a failed batch does not conform
            "product_viable_car_pos_cells": np.where(success, 1e9, np.nan),
            "conforming_doses": success.astype(float),
            "success": success,
        }

    outcomes = {"start": outcome([True] * 4), "optimized": outcome([True, False, True, False])}
    opt = OptimizeConfig(objective="p_conforming", n_bootstrap=50)
    table = _table(outcomes, opt, np.random.default_rng(0), {"start": {}, "optimized": {}})
    assert table["failed_solves"].tolist() == [0, 2]
    assert table["solver_success"].tolist() == [1.0, 0.5]
