"""The factory's discrete-event model (no biology: fast): resources never double-booked,
operations in recipe order, closed forms without contention, Little's law and utilization
identities, determinism, monotonicity in module durations, config errors, cost lines."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from twin import TwinInputError
from twin.facility import (
    FacilityConfig,
    ModuleSpec,
    QCSpec,
    check_config,
    compile_plans,
    run_des_only,
)
from twin.facility._cost import annual_fixed_cost_usd, batch_costs
from twin.facility._run import MODULE_LOG_COLUMNS


def _log(des) -> pd.DataFrame:
    return pd.DataFrame(des.module_log, columns=list(MODULE_LOG_COLUMNS))


def _busy_config(**changes) -> FacilityConfig:
    """Two small Shuttles under heavy demand, with frequent breakdowns: lots of contention."""
    modules = {
        "enrichment": ModuleSpec(capacity=1, duration_h=3.0, mtbf_h=60.0, mttr_h=5.0),
        "fluidics": ModuleSpec(capacity=2, duration_h=1.5, mtbf_h=40.0, mttr_h=3.0),
        "sampling": ModuleSpec(capacity=1, duration_h=0.5, mtbf_h=80.0, mttr_h=2.0),
        "harvest": ModuleSpec(capacity=1, duration_h=2.0, mtbf_h=80.0, mttr_h=4.0),
        "fill_finish": ModuleSpec(capacity=1, duration_h=1.5),
    }
    base = dict(
        shuttles=2,
        bays_per_shuttle=6,
        modules=modules,
        arrivals_per_week=14.0,
        horizon_days=60.0,
        robot_move_h=0.2,
        qc=QCSpec(capacity=1, in_process_assay_h=0.5),
    )
    base.update(changes)
    return FacilityConfig(**base)


@pytest.fixture(scope="module")
def busy():
    cfg = _busy_config(horizon_days=30.0)
    des, plans, arrivals = run_des_only(cfg)
    return cfg, des, plans, arrivals


def test_no_unit_or_bay_is_double_booked(busy):
    cfg, des, _, _ = busy
    log = _log(des)
    assert (log["operation"] == "repair").any(), "the test needs breakdowns"
    for (module, unit), ops in log.groupby(["module", "unit"]):
        ops = ops.sort_values("start_h")
        overlap = ops["start_h"].to_numpy()[1:] < ops["end_h"].to_numpy()[:-1] - 1e-9
        assert not overlap.any(), f"{module} unit {unit} double-booked"
        assert (ops["end_h"] >= ops["start_h"]).all()
    bays = pd.DataFrame(
        {
            "shuttle": des.shuttle,
            "bay": des.bay,
            "start": des.bay_start_h,
            "end": np.where(np.isnan(des.bay_end_h), np.inf, des.bay_end_h),
        }
    )
    bays = bays[bays["shuttle"] >= 0]
    assert len(bays) > cfg.shuttles * cfg.bays_per_shuttle, "bays must be reused in the test"
    for _, held in bays.groupby(["shuttle", "bay"]):
        held = held.sort_values("start")
        assert (held["start"].to_numpy()[1:] >= held["end"].to_numpy()[:-1]).all()


def test_each_batch_runs_its_operations_in_recipe_order(busy):
    _, des, plans, arrivals = busy
    log = _log(des)
    work = log[~log["module"].isin(["robot", "qc"]) & (log["batch_id"] >= 0)]
    done = np.flatnonzero(~np.isnan(des.fill_finish_end_h))
    assert len(done) > 20
    for batch in np.flatnonzero(~np.isnan(des.harvest_h)):  # finished or not
        assert des.lateness_h[batch] is not None
    for batch, ops in work.groupby("batch_id"):
        if batch not in done:
            continue
        plan = plans[arrivals.recipe[batch]]
        ops = ops.sort_values("start_h", kind="stable")
        assert tuple(ops["operation"]) == plan.operations
        assert tuple(ops["module"]) == plan.modules
        assert (ops["start_h"].to_numpy()[1:] >= ops["end_h"].to_numpy()[:-1]).all()
        assert ops["start_h"].iloc[0] >= des.bay_start_h[batch] >= arrivals.arrival_h[batch]
        # no operation starts before its plan: lateness is never negative
        assert (des.lateness_h[batch] >= 0).all()


def test_one_bay_without_contention_follows_the_plan_exactly():
    """Closed form: one bay, so nothing contends; every time follows from the plan."""
    cfg = FacilityConfig(bays_per_shuttle=1, arrivals_per_week=1.0, horizon_days=120.0)
    des, plans, arrivals = run_des_only(cfg)
    plan = plans[0]
    done = np.flatnonzero(~np.isnan(des.release_h))
    assert len(done) >= 5
    move = cfg.robot_move_h
    for b in done:
        assert all(np.all(des.lateness_h[b] == 0.0) for b in done)
        start = des.bay_start_h[b]
        seed_h = start + move + plan.duration_h[0]
        assert des.seed_h[b] == pytest.approx(seed_h, abs=1e-9)
        harvest_k = plan.operations.index("harvest")
        expected_harvest = seed_h + plan.offset_h[harvest_k] + move
        assert des.harvest_h[b] == pytest.approx(expected_harvest, abs=1e-9)
        assert des.planned_harvest_h[b] == pytest.approx(expected_harvest, abs=1e-9)
        fill_end = seed_h + plan.offset_h[-1] + move + plan.duration_h[-1]
        assert des.fill_finish_end_h[b] == pytest.approx(fill_end, abs=1e-9)
        release = fill_end + cfg.qc.release_assay_h + 24.0 * 14.0
        assert des.release_h[b] >= release - 1e-9  # QC may queue behind in-process assays
        assert des.release_h[b] <= release + 24.0
    # The bay is taken on arrival or when the previous batch leaves it.
    for prev, b in zip(done[:-1], done[1:], strict=True):
        assert des.bay_start_h[b] == pytest.approx(
            max(arrivals.arrival_h[b], des.bay_end_h[prev]), abs=1e-9
        )


def _time_average_in_bays(des, t0: float, t1: float) -> float:
    start = np.clip(des.bay_start_h, t0, t1)
    end = np.clip(np.where(np.isnan(des.bay_end_h), t1, des.bay_end_h), t0, t1)
    held = np.where(np.isnan(des.bay_start_h), 0.0, end - start)
    return held.sum() / (t1 - t0)


def test_littles_law_and_utilization_on_a_stable_factory():
    """L = lambda W for the bays and rho = lambda x work / units for a module, in steady state
    (no breakdowns, demand ~70 % of capacity), within sampling error of a long run."""
    cfg = FacilityConfig(arrivals_per_week=9.0, horizon_days=300.0, seed=3)
    des, plans, arrivals = run_des_only(cfg)
    t0, t1 = 24.0 * 30, 24.0 * 270  # skip the empty start and the unfinished end
    entered = (des.bay_start_h >= t0) & (des.bay_start_h < t1)
    rate_per_h = entered.sum() / (t1 - t0)
    sojourn_h = (des.bay_end_h - des.bay_start_h)[entered]
    assert not np.isnan(sojourn_h).any()
    in_bays = _time_average_in_bays(des, t0, t1)
    assert in_bays == pytest.approx(rate_per_h * sojourn_h.mean(), rel=0.03)
    # Arrival rate as configured (Poisson count over 240 days: ~310, sd ~6 %)
    assert rate_per_h * 168.0 == pytest.approx(cfg.arrivals_per_week, rel=0.15)
    # Sampling: one unit, 8 samples per batch; a unit is held from the robot's move in
    # (0.05 h, plus any wait for the robot: small here) to the end of its 0.1 h of work.
    log = _log(des)
    samples = log[(log["module"] == "sampling") & (log["start_h"] >= t0) & (log["end_h"] < t1)]
    n_samples = sum(op == "sample" for op in plans[0].operations)
    busy = (samples["end_h"] - samples["start_h"]).sum() / (t1 - t0)
    expected = rate_per_h * n_samples * (cfg.modules["sampling"].duration_h + cfg.robot_move_h)
    assert busy == pytest.approx(expected, rel=0.05)
    # Bays: busy fraction = time-average number in bays / bays
    assert 0.5 < in_bays / cfg.bays_per_shuttle < 0.9


def test_deterministic_for_a_seed():
    cfg = _busy_config(horizon_days=20.0)
    a, _, _ = run_des_only(cfg)
    b, _, _ = run_des_only(cfg)
    c, _, _ = run_des_only(dataclasses.replace(cfg, seed=1))
    assert a.module_log == b.module_log
    np.testing.assert_array_equal(a.release_h, b.release_h)
    assert a.module_log != c.module_log


@pytest.mark.parametrize(
    "module",
    [
        "fluidics",
        pytest.param("enrichment", marks=pytest.mark.slow),
        pytest.param("harvest", marks=pytest.mark.slow),
    ],
)
def test_longer_module_durations_never_raise_throughput(module):
    """Same arrivals and fault histories (common random numbers), slower module."""
    cfg = _busy_config(horizon_days=45.0, seed=5)
    finished = []
    for factor in (1.0, 2.0, 4.0, 8.0):
        modules = dict(cfg.modules)
        spec = modules[module]
        modules[module] = dataclasses.replace(spec, duration_h=spec.duration_h * factor)
        des, _, _ = run_des_only(dataclasses.replace(cfg, modules=modules))
        finished.append(int(np.sum(des.fill_finish_end_h <= des.horizon_h)))
    assert all(b <= a for a, b in zip(finished, finished[1:], strict=False)), finished
    assert finished[-1] < finished[0]


def test_bad_settings_name_their_key():
    cfg = FacilityConfig(bays_per_shuttle=0)
    with pytest.raises(TwinInputError, match=r"facility\.bays_per_shuttle=0"):
        check_config(cfg)
    cfg = FacilityConfig(operation_modules={"seed": "nowhere"})
    with pytest.raises(TwinInputError, match=r"facility\.operation_modules\.seed='nowhere'"):
        check_config(cfg)
    cfg = FacilityConfig(modules={"fill_finish": ModuleSpec(duration_h=-1.0)})
    with pytest.raises(TwinInputError) as error:
        check_config(cfg)
    assert error.value.problems[0].startswith("facility.modules.fill_finish.duration_h=-1.0")
    cfg = FacilityConfig(donor_sd={"growth": 0.1})
    with pytest.raises(TwinInputError, match=r"facility\.donor_sd\.growth"):
        check_config(cfg)


def test_cost_lines_add_up_and_fixed_costs_are_spread_over_finished_batches():
    cfg = FacilityConfig(shuttles=2, horizon_days=73.0)
    plans = compile_plans(cfg)
    finished = np.array([True, True, False, True])
    lines = batch_costs(cfg, plans, np.zeros(4, int), finished)
    parts = [v for k, v in lines.items() if k != "cost_usd"]
    np.testing.assert_allclose(sum(parts), lines["cost_usd"])
    assert lines["facility_usd"].sum() == pytest.approx(annual_fixed_cost_usd(cfg) * 73.0 / 365)
    assert lines["facility_usd"][2] == 0.0
    c = cfg.cost
    expected_fixed = 2 * (
        c.area_ft2_per_shuttle * c.facility_capex_usd_per_ft2 + c.equipment_capex_usd_per_shuttle
    )
    assert annual_fixed_cost_usd(cfg) == pytest.approx(expected_fixed / c.depreciation_years)
    # the default recipe: 5 TU/cell x 1e8 cells at 1e8 TU/mL = 5 mL of vector
    assert plans[0].vector_ml == pytest.approx(5.0)
    assert lines["vector_usd"][0] == pytest.approx(
        5.0 * cfg.recipes["standard"].vector_price_usd_per_mL
    )


def test_realized_schedule_is_the_recipe_shifted_by_each_lateness():
    from twin.facility._biology import batch_schedules

    cfg = FacilityConfig()
    plans = compile_plans(cfg)
    recipe_schedule = cfg.recipes["standard"].recipe.schedule()
    n = len(plans[0].events)
    late = np.zeros(n)
    late[5:] = 2.5  # every operation from the 6th on waited 2.5 h
    realized, planned = batch_schedules(plans, np.array([0, 0]), [np.zeros(n), late])
    np.testing.assert_array_equal(planned["time_h"][0], np.asarray(recipe_schedule.time_h))
    np.testing.assert_array_equal(realized["time_h"][0], np.asarray(recipe_schedule.time_h))
    np.testing.assert_array_equal(realized["time_h"][1], planned["time_h"][1] + late)
    for field in ("operation", "moi", "fraction", "volume_ml", "cells"):
        np.testing.assert_array_equal(realized[field], planned[field])
