"""The command-line entry points in experiments/ (run as subprocesses) and every shipped config.

Each script start costs a few seconds (imports) and each successful simulation a JIT compile,
so these tests are few; the bad-input runs are started together and run concurrently.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest
import xarray as xr
import yaml
from omegaconf import OmegaConf

import twin.optimize  # noqa: F401  (registers the optimize schema, whatever the test order)

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"
TIMEOUT_S = 600


def _command(script: str, *overrides: str) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "experiments" / script), *overrides]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)  # Hydra's own errors must stay one short message
    return env


def run_script(script: str, *overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(script, *overrides),
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# --- simulate ------------------------------------------------------------------------------------


def test_simulate_default_recipe_prints_a_summary(tmp_path):
    run_dir = tmp_path / "run"
    result = run_script("simulate.py", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    header = next(line for line in result.stdout.splitlines() if "quantity" in line)
    assert header.split() == ["quantity", "value", "unit"]
    for quantity in ("harvest_viable_cells", "harvest_car_pos_fraction", "doses", "conforming"):
        assert quantity in result.stdout
    for name in ("trajectory.nc", "batch.png", "summary.csv", "resolved_config.yaml"):
        assert (run_dir / name).is_file(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing else in the cwd


@pytest.mark.slow
def test_simulate_multirun_writes_one_folder_per_value(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_script(
        "simulate.py", "-m", "recipe.moi=2,8", f"hydra.sweep.dir={sweep}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    car_pos = {}
    for job in jobs:
        assert (job / "trajectory.nc").is_file()
        moi = OmegaConf.load(job / "resolved_config.yaml").recipe.moi
        with xr.open_dataset(job / "trajectory.nc") as dataset:
            assert float(dataset["event_moi"].max()) == moi
            car_pos[moi] = float(dataset["harvest_car_pos_fraction"])
    assert sorted(car_pos) == [2.0, 8.0]
    assert car_pos[8.0] > car_pos[2.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]


# (overrides, text the error must contain); None: Hydra's own error, any message.
BAD_INPUTS = {
    "negative-moi": (["recipe.moi=-1"], ["recipe.moi", "-1"]),
    "exchange-fraction": (
        ["recipe.exchanges=[{time_h:120,fraction:1.5}]"],
        ["recipe.exchanges[0].fraction", "1.5", "[0, 1]"],
    ),
    "over-capacity": (["cartridge_capacity_ml=200"], ["recipe.feeds[0]", "200 mL"]),
    "unknown-key": (["recipe.mio=3"], None),
    "negative-parameter": (
        ["model.parameters.max_growth_rate_per_h=-1"],
        ["model.parameters.max_growth_rate_per_h", "-1", "> 0"],
    ),
    "run-id-without-data": (["run_id=R001"], ["run_id", "R001", "data_dir"]),
    "unknown-solver": (["model.solver.solver=rk4"], ["model.solver", "'rk4'", "tsit5"]),
}


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory):
    """Start every bad-input run at once; return name -> (returncode, stdout, stderr, cwd)."""
    started = {}
    for name, (overrides, _) in BAD_INPUTS.items():
        cwd = tmp_path_factory.mktemp(name)
        command = _command("simulate.py", *overrides, f"hydra.run.dir={cwd / 'run'}")
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started[name] = (process, cwd)
    results = {}
    for name, (process, cwd) in started.items():
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
        results[name] = (process.returncode, stdout, stderr, cwd)
    return results


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_with_one_clear_line(bad_runs, case):
    returncode, _, stderr, cwd = bad_runs[case]
    expected = BAD_INPUTS[case][1]
    assert returncode != 0
    assert "Traceback" not in stderr
    if expected is None:  # Hydra rejects the key before the script runs
        assert "mio" in stderr
        return
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert not (cwd / "run" / "trajectory.nc").exists()  # nothing simulated


# --- generate and validate -----------------------------------------------------------------------


@pytest.mark.slow
def test_generate_writes_a_valid_dataset_and_refuses_to_overwrite(tmp_path):
    dataset = tmp_path / "ds"
    overrides = ["n_donors=2", "runs_per_donor=1", f"out_dir={dataset}"]
    result = run_script("generate.py", *overrides, f"hydra.run.dir={tmp_path / 'g1'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert str(dataset) in result.stdout
    for name in ("runs.csv", "events.csv", "measurements.csv", "true_parameters.csv"):
        assert (dataset / name).is_file(), name

    check = run_script(
        "validate.py", f"data_dir={dataset}", f"hydra.run.dir={tmp_path / 'v'}", cwd=tmp_path
    )
    assert check.returncode == 0, check.stderr
    assert "runs: 2 (2 finished, 0 running)" in check.stdout
    assert "donors: 2" in check.stdout

    before = {p.name: p.read_bytes() for p in dataset.iterdir()}
    again = run_script("generate.py", *overrides, f"hydra.run.dir={tmp_path / 'g2'}", cwd=tmp_path)
    assert again.returncode != 0
    assert "Traceback" not in again.stderr
    lines = error_lines(again.stderr)
    assert len(lines) == 1, again.stderr
    assert "out_dir=" in lines[0] and "overwrite=true" in lines[0]
    assert {p.name: p.read_bytes() for p in dataset.iterdir()} == before  # left untouched


# --- every shipped config composes ---------------------------------------------------------------

PRIMARY_CONFIGS = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
GROUP_OPTIONS = sorted(
    (p.parent.name, p.stem) for p in CONFIGS.glob("*/*.yaml") if p.parent.name != "hydra"
)


def _primary_using(group: str) -> tuple[str, str]:
    """A primary config whose defaults list names ``group`` (else generate, with ``+``)."""
    for name in PRIMARY_CONFIGS:
        defaults = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()).get("defaults", [])
        if any(isinstance(entry, dict) and group in entry for entry in defaults):
            return name, ""
    return "generate", "+"  # e.g. experiment/*: `python experiments/generate.py +experiment=...`


def _compose(config_name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    import twin.config  # noqa: F401  (registers the schemas the configs start from)

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name, overrides=overrides)


def _check_composed(cfg) -> None:
    """Resolve the config and build the twin's objects from the groups it has."""
    import twin.config as twin_config

    OmegaConf.to_container(cfg, resolve=True)
    if "model" in cfg:
        twin_config.model_from_config(cfg.model)
    if "recipe" in cfg:
        capacity = cfg.get("cartridge_capacity_ml")
        twin_config.recipe_from_config(cfg.recipe).events(capacity_ml=capacity)
    if "downstream" in cfg:
        twin_config.downstream_from_config(cfg.downstream)
    if "noise" in cfg:
        twin_config.noise_from_config(cfg.noise)
    if "bounds" in cfg:
        twin_config.bounds_from_config(cfg.bounds)
    if "design" in cfg:  # generate: the design, the donor variation and the assay plan
        import numpy as np

        from twin.kinetics import default_parameters
        from twin.virtual import AssayPlan, design_recipes, sample_donor_parameters

        container = OmegaConf.to_container(cfg, resolve=True)
        recipe = twin_config.recipe_from_config(cfg.recipe)
        for design in design_recipes(recipe, 4, np.random.default_rng(0), **container["design"]):
            design.events(capacity_ml=cfg.cartridge_capacity_ml)
        sample_donor_parameters(
            jax.random.PRNGKey(0), default_parameters(), container["population"]["donor_sd"], 2
        )
        AssayPlan(variables=tuple(cfg.assays.variables))


def test_the_expected_configs_are_present():
    assert {"simulate", "generate", "validate", "benchmark"} <= set(PRIMARY_CONFIGS)


@pytest.mark.parametrize("config_name", PRIMARY_CONFIGS)
def test_primary_config_composes(config_name):
    _check_composed(_compose(config_name, []))


@pytest.mark.parametrize(
    ("group", "option"), GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS]
)
def test_config_group_option_composes(group, option):
    config_name, prefix = _primary_using(group)
    cfg = _compose(config_name, [f"{prefix}{group}={option}"])
    _check_composed(cfg)
