"""The factory coupled to the biology (each needs the simulator's compile: slow).

One bay and no donor variation: every batch's schedule is the recipe's exactly, and its outcome
is `simulate` of the recipe (to round-off).
Under contention, late operations change the realized outcome and on-time ones do not. The
entry point writes the files, columns and keys the issue lists.
"""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from twin import default_parameters, observables, simulate
from twin.facility import (
    BATCH_COLUMNS,
    MODULE_LOG_COLUMNS,
    SUMMARY_KEYS,
    FacilityConfig,
    ModuleSpec,
    run_facility,
)
from twin.process import Downstream, product

pytestmark = pytest.mark.slow
CHUNK = 8  # one vmapped shape for every test here: one compile


def test_one_bay_without_contention_equals_simulate_exactly():
    cfg = FacilityConfig(
        bays_per_shuttle=1,
        donor_variability=False,
        arrivals_per_week=3.0,
        horizon_days=60.0,
        biology_chunk=CHUNK,
    )
    params = default_parameters()
    downstream = Downstream()
    result = run_facility(cfg, params, downstream)
    batches = result.batches
    done = batches[batches["harvest_h"].notna()]
    assert len(done) >= 3
    assert (done["harvest_h"] == done["planned_harvest_h"]).all()

    assert (done["max_lateness_h"] == 0.0).all()  # so the realized schedule is the recipe's

    recipe = cfg.recipes["standard"].recipe
    trajectory = simulate(params, recipe.schedule(), jnp.zeros(1))
    harvest = observables(trajectory.end_state)
    made = product(harvest, downstream)
    # Equal to round-off: the vmapped solve and the single one are compiled apart and were
    # seen to differ in the last bit (2e-16 relative).
    for column, expected in (
        ("viable_car_pos_cells", harvest["viable_car_pos_cells"]),
        ("viable_car_pos_cells_if_on_time", harvest["viable_car_pos_cells"]),
        ("viability", harvest["viability"]),
        ("car_pos_fraction", harvest["car_pos_fraction"]),
        ("product_viability", made["product_viability"]),
    ):
        np.testing.assert_allclose(done[column], float(expected), rtol=1e-12, err_msg=column)
    np.testing.assert_array_equal(done["doses"], float(made["doses"]))
    assert (done["conforming"] == bool(made["conforming"])).all()


def test_delays_show_in_the_realized_outcome_only():
    slow_fluidics = ModuleSpec(capacity=1, duration_h=3.0)
    cfg = FacilityConfig(
        donor_variability=True,
        arrivals_per_week=14.0,
        horizon_days=40.0,
        biology_chunk=CHUNK,
        modules={**FacilityConfig().modules, "fluidics": slow_fluidics},
    )
    result = run_facility(cfg, default_parameters(), Downstream())
    done = result.batches[result.batches["harvest_h"].notna()]
    late = done["max_lateness_h"] > 0.5
    on_time = done["max_lateness_h"] == 0
    assert late.sum() >= 3
    same = done["viable_car_pos_cells"] == done["viable_car_pos_cells_if_on_time"]
    assert same[on_time].all()
    assert not same[late].any()
    # A later harvest shows in the times the batch table reports.
    assert (done["harvest_h"] >= done["planned_harvest_h"]).all()
    assert (done.loc[late, "harvest_h"] > done.loc[late, "planned_harvest_h"]).any()
    assert result.summary["failed_solves"] == 0


def test_the_entry_point_writes_what_the_issue_lists(tmp_path, repo_root):
    import sys

    sys.path.insert(0, str(repo_root / "experiments"))
    try:
        import facility as experiment
    finally:
        sys.path.pop(0)
    with initialize_config_dir(config_dir=str(repo_root / "configs"), version_base="1.3"):
        cfg = compose(
            "facility",
            overrides=[
                "facility=single_shuttle",
                "facility.horizon_days=30",
                f"facility.biology_chunk={CHUNK}",
                "progress=false",
                "demand_sweep.factors=[0.5,1.0]",
                "demand_sweep.horizon_days=60",
                "gantt.start_day=0",
            ],
        )
    summary = experiment.run(cfg, tmp_path)
    batches = pd.read_csv(tmp_path / "batches.csv")
    assert list(batches.columns[: len(BATCH_COLUMNS)]) == list(BATCH_COLUMNS)
    log = pd.read_csv(tmp_path / "module_log.csv")
    assert list(log.columns) == list(MODULE_LOG_COLUMNS)
    written = json.loads((tmp_path / "facility_summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(written)
    assert written["batches_started"] == summary["batches_started"] > 0
    for name in ("gantt.png", "utilization.png", "demand.png", "resolved_config.yaml"):
        assert (tmp_path / name).exists(), name
    assert json.loads((tmp_path / "provenance.json").read_text())["seed"] == 0
    # The summary agrees with the batch table it was computed from.
    assert written["batches_released"] == int(batches["released"].sum())
    assert written["doses_released"] == pytest.approx(
        batches.loc[batches["released"], "doses"].sum()
    )


def test_bad_config_exits_with_the_key(tmp_path, repo_root):
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            str(repo_root / "experiments" / "facility.py"),
            "facility.bays_per_shuttle=0",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "error: facility.bays_per_shuttle=0" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_horizon_shorter_than_a_culture_harvests_nothing_and_says_so():
    cfg = FacilityConfig(horizon_days=3.0, biology_chunk=CHUNK)  # the recipe takes 8 days
    result = run_facility(cfg, default_parameters(), Downstream())
    assert len(result.batches) > 0 and result.batches["harvest_h"].isna().all()
    assert result.summary["batches_released"] == 0 and result.timings_s["solves"] == 0
    assert result.batches["viable_car_pos_cells"].isna().all()  # not made-up outcomes
