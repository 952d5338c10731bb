"""`experiments/optimize.py`'s `run(cfg)` in process, from a recorded batch, on tiny settings.

One run (module fixture; about two minutes of compiles on the 2-core machine, hence slow)
starting from run R001 of the example data, with a demanding dose so that the start conforms
about half the time; every test reads its result and files.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

import twin.config  # noqa: F401  (registers the schemas the configs start from)
from twin.data import read_events_file, read_run_data
from twin.optimize import RESOLUTION, recipe_events

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "twin" / "data" / "example"

pytestmark = pytest.mark.slow

TINY = [
    "optimize.n_donors=4",
    "optimize.n_eval_donors=8",
    "optimize.starts=1",
    "optimize.steps=8",
    "optimize.learning_rate=0.3",
    "optimize.temperature=0.3",
    "optimize.pareto_cost_weights=[0.0]",
    "optimize.pareto_steps=2",
    "optimize.n_bootstrap=50",
    "~holdout",
    # A demanding dose: P(conforming) of the start is near one half, the surrogate has a slope.
    "downstream.dose_car_pos_cells=3e8",
]


def closed_form_plant(events: pd.DataFrame) -> dict[str, np.ndarray]:
    """A stand-in for an independent process (two donors): yield grows with seeded cells,
    culture time and MOI in closed form; it also checks what it is handed."""
    assert events["run_id"].nunique() == 1
    seed = events[events["operation"] == "seed"].iloc[0]
    transduce = events[events["operation"] == "transduce"].iloc[0]
    harvest_h = float(events.loc[events["operation"] == "harvest", "time_h"].iloc[0])
    cells = seed["cells"] * np.exp(0.02 * harvest_h) * np.array([0.5, 1.0])
    car_pos = 1 - math.exp(-0.1 * transduce["moi"])
    return {
        "viable_cells": cells,
        "viability": np.array([0.9, np.nan]),  # the second donor's batch failed
        "car_pos_fraction": np.full(2, car_pos),
        "vcn_per_transduced_cell": np.full(2, 2.0),
    }


def _experiment():
    sys.path.insert(0, str(REPO_ROOT / "experiments"))
    try:
        import optimize as experiment
    finally:
        sys.path.pop(0)
    return experiment


@pytest.fixture(scope="module")
def optimized(tmp_path_factory):
    folder = tmp_path_factory.mktemp("optimize")
    record = read_run_data(EXAMPLE).events
    record = record[record["run_id"] == "R001"]
    record.to_csv(folder / "R001.csv", index=False)
    overrides = [
        *TINY,
        f"start_events={folder / 'R001.csv'}",
        f"optimize.data_dir={EXAMPLE}",
        "+evaluate_on.closed_form._target_=test_optimize_run.closed_form_plant",
        "+evaluate_on.closed_form._partial_=true",
    ]
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="optimize", overrides=overrides)
    out = folder / "out"
    result = _experiment().run(cfg, out)
    return result, out, record.reset_index(drop=True)


def test_run_writes_every_file(optimized):
    _, out, _ = optimized
    for name in (
        "optimized_recipe.yaml",
        "recipe/optimized.yaml",
        "optimized_events.csv",
        "comparison.csv",
        "closed_form.csv",
        "decisions.csv",
        "pareto.csv",
        "search.json",
        "convergence.png",
        "pareto.png",
        "resolved_config.yaml",
        "provenance.json",
    ):
        assert (out / name).is_file(), name
    assert not (out / "optimized_run").exists()


def test_optimized_events_are_the_optimum_at_full_precision(optimized):
    result, out, _ = optimized
    events, _ = read_events_file(out / "optimized_events.csv")
    assert events["run_id"].unique().tolist() == ["optimized"]
    pd.testing.assert_frame_equal(events, recipe_events(result.optimized), check_exact=True)
    transduce = events[events["operation"] == "transduce"].iloc[0]
    assert transduce["moi"] == float(result.values["moi"])


def test_medium_and_volumes_stay_as_recorded(optimized):
    result, out, record = optimized
    events, _ = read_events_file(out / "optimized_events.csv")
    for op in ("seed", "exchange", "feed", "sample"):
        now = events[events["operation"] == op].reset_index(drop=True)
        was = record[record["operation"] == op].reset_index(drop=True)
        assert len(now) <= len(was)  # a shorter culture may drop the last steps
        was = was.iloc[: len(now)]
        for column in ("volume_ml", "glucose_mM", "il2_IU_per_mL"):  # IL-2: held (data 100)
            pd.testing.assert_series_equal(now[column], was[column])
        if op != "seed":
            pd.testing.assert_series_equal(now["time_h"], was["time_h"])
    assert "medium_il2_IU_per_mL" in result.held and "exchange_fraction" in result.held


def test_the_search_improves_the_twins_objective_from_the_recorded_start(optimized):
    result, _, _ = optimized
    start_loss = result.record["start_smooth_loss_training"]
    assert math.isfinite(start_loss) and -0.95 < start_loss < -0.05  # the start is undecided
    assert result.gradient.loss < start_loss - 0.01, (start_loss, result.gradient.history)
    # ... and stays inside what the example data covered
    decisions = pd.read_csv(result_dir(optimized) / "decisions.csv")
    assert not decisions["outside_data_range"].any()
    free = decisions[decisions["status"] != "held"]
    assert (free["optimized"] >= free["data_low"] - 1e-9).all()
    assert (free["optimized"] <= free["data_high"] + 1e-9).all()


def result_dir(optimized) -> Path:
    return optimized[1]


def test_machine_files_are_tidy(optimized):
    _, out, _ = optimized
    booleans = {
        "comparison.csv": ["vector_limit_met", "extrapolates"],
        "closed_form.csv": ["vector_limit_met", "extrapolates"],
        "decisions.csv": ["outside_data_range"],
        "pareto.csv": ["non_dominated"],
    }
    for name, columns in booleans.items():
        text = (out / name).read_text()
        assert "[" not in text and "np.float" not in text, name  # no lists, no reprs
        frame = pd.read_csv(out / name, dtype=str)
        for column in columns:
            assert set(frame[column]) <= {"True", "False"}, (name, column)
    text = (out / "search.json").read_text()
    record = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in search.json"))
    assert record["start"].startswith("run R001 of")


def test_recipe_file_is_at_settable_resolution(optimized):
    import yaml

    result, out, _ = optimized
    text = (out / "optimized_recipe.yaml").read_text()
    assert "rounded for use" in text and "full precision" in text
    recipe = yaml.safe_load(text)
    for key, step in (("moi", RESOLUTION["moi"]), ("harvest_time_h", 0.5)):
        assert abs(recipe[key] / step - round(recipe[key] / step)) < 1e-9, (key, recipe[key])
    assert recipe["seed_volume_ml"] == result.start.seed_volume_ml
    feeds = [{"time_h": 72.0, "volume_ml": 150.0}, {"time_h": 96.0, "volume_ml": 300.0}]
    assert recipe["feeds"] == feeds


def test_an_events_process_scores_the_records(optimized):
    result, _, _ = optimized
    table = result.evaluations["closed_form"]
    assert list(table["recipe"]) == ["start", "gradient", "sobol"]
    assert (table["donors"] == 2).all()
    assert (table["solver_success"] == 0.5).all()  # the failed donor counts as failed
    assert (table["p_conforming"] <= 0.5).all()
