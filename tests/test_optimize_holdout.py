"""Optimization guards: covered data ranges, the extrapolation guard, the unseen (holdout)
process recipes are evaluated on, and the optimize config checks.

One compile here (the holdout process's outcomes for two donors, two decisions); the rest
reads data and configs.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

import twin
import twin.config  # registers the config schemas the yaml files start from
from twin import TwinInputError
from twin.optimize import (
    DonorPopulation,
    Prices,
    RobustProblem,
    covered_ranges,
    decision_space,
    outside_ranges,
    restrict_to_ranges,
)
from twin.process import Downstream, Recipe, recipe_values

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "twin" / "data" / "example"


def _experiment():
    sys.path.insert(0, str(REPO_ROOT / "experiments"))
    try:
        import optimize as experiment
    finally:
        sys.path.pop(0)
    return experiment


def _holdout(cfg, params, structure):
    """The unseen process of ``cfg`` as ``(population, structure)``, or ``None`` without one."""
    from omegaconf import OmegaConf

    from twin.optimize import holdout_process

    if cfg.get("holdout") is None:
        return None
    process = holdout_process(OmegaConf.to_object(cfg.holdout), params, structure)
    return process.population, process.structure


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        return compose(config_name="optimize", overrides=list(overrides))


# --- covered ranges and the extrapolation guard ---------------------------------------------------


@pytest.fixture(scope="module")
def example():
    return twin.data.read_run_data(EXAMPLE)


def test_covered_ranges_of_the_example_data(example):
    ranges = covered_ranges(example)
    events = example.events
    moi = events.loc[events["operation"] == "transduce", "moi"]
    assert ranges["moi"] == (moi.min(), moi.max())
    assert ranges["harvest_time_h"] == (168.0, 240.0)
    # The design drew transduction at 18-36 h after activation at 0 h.
    low, high = ranges["transduction_delay_h"]
    assert 18.0 <= low < high <= 36.0
    # Never varied in the example: every run ran IL-2 100 IU/mL and half exchanges.
    assert ranges["medium_il2_IU_per_mL"] == (100.0, 100.0)
    assert ranges["exchange_fraction"] == (0.5, 0.5)
    # A subset of runs covers less.
    first = covered_ranges(example, ["R001"])
    assert first["moi"][0] == first["moi"][1] and first["harvest_time_h"] == (168.0, 168.0)


def test_python_defaults_are_the_config_files():
    """``OptimizeConfig()`` from Python and ``configs/optimize.yaml`` search alike."""
    from omegaconf import OmegaConf

    from twin.optimize import OptimizeConfig

    from_yaml = OmegaConf.to_object(_cfg().optimize)
    for field in dataclasses.fields(OptimizeConfig):
        if field.name not in ("decisions", "donor_sd"):  # maps: empty in Python (docstring)
            assert getattr(OptimizeConfig(), field.name) == getattr(from_yaml, field.name), field


def test_restrict_narrows_boxes_and_holds_uncovered_decisions(example):
    ranges = covered_ranges(example)
    bounds = {
        "moi": (1.0, 15.0),
        "medium_il2_IU_per_mL": (20.0, 300.0),
        "seed_volume_ml": (50.0, 200.0),
    }
    narrowed, held = restrict_to_ranges(bounds, recipe_values(Recipe()), ranges)
    assert narrowed == {"moi": ranges["moi"]}
    assert set(held) == {"medium_il2_IU_per_mL", "seed_volume_ml"}
    assert "data cover only 100-100" in held["medium_il2_IU_per_mL"]
    unknown, none_held = restrict_to_ranges({"moi": (1.0, 15.0)}, recipe_values(Recipe()), {})
    assert unknown == {"moi": (1.0, 15.0)} and none_held == {}


def test_outside_ranges_names_the_value_and_the_range():
    ranges = {"moi": (2.0, 10.0), "exchange_time_h": (120.0, 216.0)}
    values = {"moi": 12.5, "exchange_time_h": np.array([110.0, 150.0]), "harvest_time_h": 300.0}
    notes = outside_ranges(values, ranges, ["moi", "exchange_time_h", "harvest_time_h"])
    assert notes == {
        "moi": "moi=12.5 (data 2-10)",
        "exchange_time_h": "exchange_time_h=110 (data 120-216)",
    }
    assert outside_ranges({"moi": 10.0}, ranges, ["moi"]) == {}


def test_coverage_comes_from_the_calibration_runs(tmp_path):
    from test_forecast import known_calibration

    from twin.calibrate import write_calibration

    calibration = dataclasses.replace(
        known_calibration(),
        run_ids=("R001", "R002"),
        run_donor_ids=("D0", "D0"),
        config="data_dir: twin/data/example\n",
    )
    write_calibration(calibration, tmp_path / "calibration.nc")
    experiment = _experiment()
    ranges, source = experiment._coverage(_cfg(f"calibration={tmp_path}"))
    expected = covered_ranges(twin.data.read_run_data(EXAMPLE), ["R001", "R002"])
    assert ranges == expected and "(2 runs)" in source
    # optimize.data_dir takes every run of its folder; data_ranges override.
    ranges, _ = experiment._coverage(
        _cfg(f"optimize.data_dir={EXAMPLE}", "+optimize.data_ranges.moi=[1.0,3.0]")
    )
    assert ranges["harvest_time_h"] == (168.0, 240.0) and ranges["moi"] == (1.0, 3.0)
    # No calibration, no folder: nothing known.
    assert experiment._coverage(_cfg())[0] == {}


# --- the unseen process ---------------------------------------------------------------------------


def test_holdout_process_is_the_example_generator():
    from omegaconf import OmegaConf

    cfg = _cfg()
    params, structure, _ = twin.config.model_from_config(cfg.model)
    population, holdout_structure = _holdout(cfg, params, structure)
    assert holdout_structure.lag_stages == 6 and structure.lag_stages == 2
    # Every form the example was generated with, not the twin's defaults of the day.
    made_with = OmegaConf.load(REPO_ROOT / "twin/data/example/generate_config.yaml").model.structure
    for name, value in made_with.items():
        assert holdout_structure.as_dict()[name] == value, name
    generator = (REPO_ROOT / "configs" / "experiment" / "example_dataset.yaml").read_text()
    for name, sd in population.donor_sd.items():
        assert f"{name}: {sd}" in generator
    assert "glucose_per_new_cell_pmol" in population.donor_sd
    assert _holdout(_cfg("~holdout"), params, structure) is None


def test_holdout_evaluation_simulates_the_unseen_process():
    """The holdout problem's outcome for a donor is the 6-stage process's (SciPy reference),
    and differs from what the twin's 4-stage equations give the same donor."""
    from twin.observe import observables
    from twin.process import product
    from twin.reference import ReferenceSolver

    cfg = _cfg("holdout.n_donors=2")
    params, structure, _ = twin.config.model_from_config(cfg.model)
    population, holdout_structure = _holdout(cfg, params, structure)
    donors = population.sample(jax.random.PRNGKey(cfg.holdout.seed), 2)
    recipe, downstream = Recipe(), Downstream()
    space = decision_space(recipe, {"moi": (1.0, 15.0)})
    holdout = RobustProblem(space, downstream, Prices(), structure=holdout_structure)
    out = holdout.outcomes(space.start(), donors)
    assert np.all(out["success"] == 1.0)

    one = jax.tree.map(lambda x: x[0], donors)
    schedule = recipe.schedule()

    def reference_yield(structure):
        _, end = ReferenceSolver(structure).solve(one, schedule, np.array([0.0]), rtol=1e-8)
        return float(product(observables(end), downstream)["product_viable_car_pos_cells"])

    six, four = reference_yield(holdout_structure), reference_yield(structure)
    np.testing.assert_allclose(out["product_viable_car_pos_cells"][0], six, rtol=1e-3)
    assert abs(six / four - 1) > 0.01


def test_holdout_donors_differ_from_the_twins():
    population = DonorPopulation(twin.default_parameters(), {"glucose_per_new_cell_pmol": 0.15})
    donors = population.sample(jax.random.PRNGKey(0), 200)
    assert abs(np.std(np.log(np.asarray(donors.glucose_per_new_cell_pmol))) - 0.15) < 0.03


# --- config checks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimize.max_vector_TU_ratio=-1"], "optimize.max_vector_TU_ratio=-1"),
        (["optimize.data_guard=clip"], "optimize.data_guard='clip': choose from"),
        (["optimize.data_dir=/no/such/folder"], "optimize.data_dir='/no/such/folder'"),
        (["+holdout.parameters.not_a_parameter=1.0"], "holdout.parameters.not_a_parameter"),
        (["+holdout.parameters.activation_efficiency=1.5"], "holdout.parameters.activation_eff"),
        (["+holdout.donor_sd.not_a_parameter=0.1"], "holdout.donor_sd.not_a_parameter"),
        (["holdout.structure.lag_stages=0"], "holdout.structure={'lag_stages': 0,"),
        (["holdout.n_donors=0"], "holdout.n_donors=0"),
    ],
)
def test_bad_settings_name_the_key(overrides, message, tmp_path):
    with pytest.raises(TwinInputError) as error:
        _experiment().run(_cfg(*overrides), tmp_path / "out")
    assert str(error.value).startswith(message), str(error.value)


def test_bad_setting_exits_with_one_error_line(tmp_path):
    script = REPO_ROOT / "experiments" / "optimize.py"
    result = subprocess.run(
        [sys.executable, str(script), "optimize.data_guard=clip", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: optimize.data_guard='clip': choose from ['restrict', 'flag']"]
