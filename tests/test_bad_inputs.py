"""The bad-input corpus (tests/bad_inputs/cases.yaml): every malformed input is refused with
its one-line error, naming the file/line/column or the config key and value, before any work.

Run in process (entry points' ``run(cfg)``, the validators and the loaders; Hydra's compose for
overrides), so the whole corpus costs seconds; tests/test_reliability.py starts the real
commands for a few of the cases.
"""

from __future__ import annotations

import importlib.util
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

import twin.config  # noqa: F401  (registers the schemas)
import twin.optimize  # noqa: F401  (registers the optimize schema)
from twin import TwinInputError, default_parameters
from twin._cli import unknown_added_keys
from twin.assays import AssayNoise
from twin.calibrate import Calibration, write_calibration
from twin.forecast._io import calibration_from_path
from twin.kinetics import ModelStructure, to_unconstrained
from twin.simulate import SolverSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).parent / "bad_inputs"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text())
# Functions that would start real work (a compile, a fit): a case that reaches one was accepted.
_HEAVY = (
    "simulate",
    "calibrate",
    "forecast",
    "generate_dataset",
    "run_backtest",
    "optimize",
    "run_facility",
    "demand_sweep",
    "run_sweep",
)
_SECONDS_PER_CASE = 10


def _entry_point(command: str):
    spec = importlib.util.spec_from_file_location(
        f"entry_{command}", REPO_ROOT / "experiments" / f"{command}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def entry_points():
    return {}


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory) -> Path:
    """A valid calibration.nc (a known calibration; no fit needed)."""
    fitted = ("max_growth_rate_per_h", "susceptible_fraction")
    population = to_unconstrained(default_parameters())
    calibration = Calibration(
        fitted=fitted,
        donor_level=fitted[:1],
        donor_ids=("D0",),
        run_ids=("R0",),
        run_donor_ids=("D0",),
        model_parameters=default_parameters(),
        estimate=np.array([float(getattr(population, n)) for n in fitted]),
        donor_effects=np.zeros((1, 1)),
        covariance=np.diag([0.01, 0.02, 0.04]),
        prior_sd=np.full(2, 0.3),
        donor_sd=np.array([0.2]),
        noise=AssayNoise(),
        initial_noise=AssayNoise(),
        structure=ModelStructure(),
        solver=SolverSettings(),
        objective=0.0,
        n_observations=0,
        observations=pd.DataFrame(
            columns=["run_id", "time_h", "variable", "observed", "predicted", "scaled_residual"]
        ),
        diagnostics=pd.DataFrame({"selected": [True], "converged": [True], "failed_runs": [0]}),
        profiles=pd.DataFrame(),
        prior_dominated_ratio=0.7,
        high_correlation=0.95,
    )
    path = tmp_path_factory.mktemp("calibration") / "calibration.nc"
    write_calibration(calibration, path)
    assert calibration_from_path(str(path)).fitted == fitted  # the undamaged file loads
    return path


def _damage(source: Path, target: Path, damage) -> None:
    if damage == "truncate":
        target.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
        return
    if damage in ("text", "empty"):
        target.write_text("run_id,value\nR1,3\n" if damage == "text" else "")
        return
    with xr.open_dataset(source) as opened:
        ds = opened.load()
    ((how, what),) = damage.items()
    if how == "drop":
        ds = ds.drop_vars(what)
    elif how == "attr":
        name, value = what
        if value is None:
            del ds.attrs[name]
        else:
            ds.attrs[name] = value
    elif how in ("rename_parameter", "rename_kinetic"):
        dim = "parameter" if how == "rename_parameter" else "kinetic_parameter"
        names = [what[1] if n == what[0] else n for n in ds[dim].values]
        ds = ds.assign_coords({dim: np.array(names, dtype=object)})
    elif how == "nan":
        values = ds[what].values.copy()
        values.flat[0] = np.nan
        ds[what] = (ds[what].dims, values)
    elif how == "scale":
        ds[what[0]] = ds[what[0]] * what[1]
    ds.to_netcdf(target)


def _apply_edits(folder: Path, edits) -> None:
    for name, old, new in edits:
        path = folder / name
        if old is None:
            path.unlink()
        elif old == "*":
            path.write_text(new)
        else:
            text = path.read_text()
            assert old in text, f"{name}: {old!r} not found (the corpus is stale)"
            path.write_text(text.replace(old, new, 1))


_HYDRA = {"dir": None}


@pytest.fixture(scope="module", autouse=True)
def _hydra_teardown():
    """Hydra is initialized once per config folder (not per case); cleared at the end."""
    yield
    GlobalHydra.instance().clear()
    _HYDRA["dir"] = None


def _compose(config_dir: Path, command: str, overrides: list[str]):
    if _HYDRA["dir"] != config_dir or not GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
        initialize_config_dir(config_dir=str(config_dir), version_base="1.3").__enter__()
        _HYDRA["dir"] = config_dir
    if not any(o.startswith("+") for o in overrides):  # Hydra's runtime config not needed
        return compose(command, overrides=overrides)
    cfg = compose(command, overrides=overrides, return_hydra_config=True)
    problems = unknown_added_keys(cfg, overrides, cfg.hydra.runtime.choices)
    if problems:
        raise TwinInputError(problems[0], problems)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def _run(case, tmp_path, calibration_file, entry_points, monkeypatch) -> str:
    """The error message the case produces (``AssertionError`` if it is accepted)."""
    kind = case["kind"]
    if kind == "data":
        folder = tmp_path / "data"
        shutil.copytree(CORPUS / "base", folder)
        _apply_edits(folder, case["edits"])
        if "validate" not in entry_points:
            entry_points["validate"] = _entry_point("validate")
        entry_points["validate"].run(OmegaConf.create({"data_dir": str(folder)}))
        raise AssertionError("the data folder was accepted")
    elif kind == "calibration":
        damaged = tmp_path / "calibration.nc"
        _damage(calibration_file, damaged, case["damage"])
        calibration_from_path(str(damaged))
        raise AssertionError("the damaged calibration file was accepted")
    else:
        command, overrides = case["command"], list(case.get("overrides", []))
    config_dir = REPO_ROOT / "configs"
    if kind == "config":
        config_dir = tmp_path / "configs"
        shutil.copytree(REPO_ROOT / "configs", config_dir)
        _apply_edits(config_dir, case["edits"])
    monkeypatch.chdir(tmp_path)  # relative paths from the user's folder, not the repository
    cfg = _compose(config_dir, command, overrides)
    if command not in entry_points:
        entry_points[command] = _entry_point(command)
    module = entry_points[command]
    for name in _HEAVY:
        if hasattr(module, name):
            monkeypatch.setattr(module, name, _accepted)
    if command == "validate":
        module.run(cfg)
    else:
        module.run(cfg, tmp_path / "out")
    raise AssertionError(f"{command} {overrides} was accepted")


def _accepted(*args, **kwargs):
    raise AssertionError("the input was accepted: real work started")


def _timeout(signum, frame):
    raise AssertionError(f"no error within {_SECONDS_PER_CASE} s")


def test_the_corpus_is_large_and_covers_every_kind():
    assert len(CASES) >= 60
    assert len({case["id"] for case in CASES}) == len(CASES)
    assert {case["kind"] for case in CASES} == {"data", "override", "calibration", "config"}
    commands = {case.get("command", "validate") for case in CASES}
    assert {"validate", "simulate", "calibrate", "forecast", "backtest", "generate"} <= commands


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_bad_input_is_refused_with_its_one_line_error(
    case, tmp_path, calibration_file, entry_points, monkeypatch
):
    previous = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(_SECONDS_PER_CASE)
    start = time.perf_counter()
    try:
        with pytest.raises(Exception) as caught:  # noqa: PT011  (which kind is checked below)
            _run(case, tmp_path, calibration_file, entry_points, monkeypatch)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    error = caught.value
    assert not isinstance(error, AssertionError), str(error)
    assert time.perf_counter() - start < _SECONDS_PER_CASE
    if isinstance(error, TwinInputError):
        lines = error.problems
        assert all("\n" not in line for line in lines), lines
        assert any(case["error"] in line for line in lines), (case["error"], lines)
        if "lines" in case:
            assert len(lines) == case["lines"], lines
        if case["kind"] == "calibration":
            assert all("calibration.nc" in line for line in lines), lines
    else:  # Hydra's own composition errors: printed as a short message, no traceback
        assert case["kind"] in ("override", "config"), repr(error)
        assert case["error"] in str(error), (case["error"], str(error))
        assert "Traceback" not in str(error)
