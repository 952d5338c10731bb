"""Sweeps without the simulator (fast): designs, bounds checks, the store's commit markers and
resume (including a real SIGKILL), shard merging and the analysis, all on a closed-form
stand-in for the simulation so every expected value is known. The simulator itself is in
tests/test_sweep_simulate.py (slow)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from twin import TwinInputError
from twin.sweep import (
    FAILURES,
    OUTCOMES,
    SweepPlan,
    design_blocks,
    design_size,
    design_space_region,
    merge_stores,
    open_sweep,
    plot_design_space,
    response_surface,
    run_sweep,
    sensitivity_indices,
    shard_range,
    sweep_space,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SPACE = {
    "moi": [1.0, 10.0],
    "harvest_time_h": [192.0, 264.0],
    "max_growth_rate_per_h": [0.02, 0.05],
}


def synthetic(x: np.ndarray, params=None) -> dict[str, np.ndarray]:
    """A closed-form stand-in for the simulation: viable CAR+ cells linear in the swept values
    (``1e6 (2 moi + harvest_time_h / 10)``, the third name has no effect), points with
    moi > 9.5 fail (to check failure marking), conforming where moi < 5."""
    n = x.shape[0]
    fail = x[:, 0] > 9.5
    value = 1e6 * (2 * x[:, 0] + x[:, 1] / 10)
    out = {}
    for name, (_, dtype) in OUTCOMES.items():
        if dtype == "f8":
            out[name] = np.where(fail, np.nan, value if name == "viable_car_pos_cells" else 1.0)
        elif dtype == "bool":
            out[name] = ~fail & (x[:, 0] < 5) if name != "success" else ~fail
        else:
            out[name] = np.where(fail, 1, 0).astype(np.int8)
    assert set(out) == set(OUTCOMES) and all(v.shape == (n,) for v in out.values())
    return out


def plan_for(design="sobol", n_points=40, chunk_size=8, start=None, stop=None) -> SweepPlan:
    space = sweep_space(SPACE)
    total = design_size(design, n_points, space.dimension)
    return SweepPlan(
        space, design, n_points, 3, chunk_size, 0, start or 0, total if stop is None else stop, {}
    )


def _values(ds: xr.Dataset) -> dict[str, np.ndarray]:
    return {k: np.asarray(ds[k].values) for k in [*ds.data_vars, *ds.coords]}


def _assert_same(a: xr.Dataset, b: xr.Dataset) -> None:
    va, vb = _values(a), _values(b)
    assert sorted(va) == sorted(vb)
    for key in va:
        np.testing.assert_array_equal(va[key], vb[key], err_msg=key)


# --- designs and the space ---------------------------------------------------------------


def test_grid_is_the_full_factorial_with_the_box_edges():
    space = sweep_space({"moi": [1, 10], "seed_cells": [5e7, 2e8]})
    assert design_size("grid", 30, 2) == 25  # 5 levels per name
    (_, _, x), *_ = design_blocks(space, "grid", 30, 0, 0, 25, 100)
    assert sorted(set(x[:, 0])) == pytest.approx([1, 3.25, 5.5, 7.75, 10])
    assert len({tuple(row) for row in x}) == 25


@pytest.mark.parametrize("design", ["grid", "lhs", "sobol", "saltelli"])
def test_any_range_of_a_design_is_the_same_points(design):
    space = sweep_space(SPACE)
    total = design_size(design, 32, 3)
    whole = np.concatenate([b for *_, b in design_blocks(space, design, 32, 7, 0, total, 5)])
    part = np.concatenate([b for *_, b in design_blocks(space, design, 32, 7, 11, total, 64)])
    np.testing.assert_array_equal(whole[11:], part)
    assert np.all((whole >= space.low) & (whole <= space.high))


def test_latin_hypercube_puts_one_point_in_each_stratum():
    space = sweep_space({"moi": [0.0, 1.0], "seed_cells": [1.0, 2.0]})
    (_, _, x), *_ = design_blocks(space, "lhs", 50, 1, 0, 50, 50)
    for column, low in zip(x.T, (0.0, 1.0), strict=True):
        assert sorted(np.floor((column - low) * 50).astype(int)) == list(range(50))


def test_bad_space_entries_are_named_with_their_values():
    with pytest.raises(TwinInputError) as info:
        sweep_space(
            {
                "moi": [10, 1],
                "bogus": [0, 1],
                "exchange_time_h": [24, 48],
                "exchange_fraction": [0.2, 1.5],
                "susceptible_fraction": [0.0, 0.5],
                "seed_cells": [1, "x"],
            }
        )
    problems = "\n".join(info.value.problems)
    assert "sweep.space.moi=[10, 1]: expected finite low < high" in problems
    assert "sweep.space.bogus: not a recipe decision" in problems
    assert "sweep.space.exchange_time_h: a vector of step times" in problems
    assert "sweep.space.exchange_fraction=[0.2, 1.5]: a fraction needs high <= 1" in problems
    assert "sweep.space.susceptible_fraction=[0, 0.5]" in problems
    assert "sweep.space.seed_cells=[1, 'x']: expected [low, high]" in problems


# --- the store: chunks, markers, resume --------------------------------------------------


def test_sweep_writes_outcomes_and_marks_failures(tmp_path):
    plan = plan_for()
    (tmp_path / ".s.zarr.init-999" / "moi").mkdir(parents=True)  # a build killed midway
    report = run_sweep(tmp_path / "s.zarr", plan, synthetic, None, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]
    ds = open_sweep(tmp_path / "s.zarr")
    assert report.chunks_computed == 5 and report.chunks_resumed == 0
    moi, harvest = ds["moi"].values, ds["harvest_time_h"].values
    fail = moi > 9.5
    assert fail.any() and (~fail).any()
    assert report.failed_simulations == fail.sum()
    np.testing.assert_array_equal(ds["success"].values, ~fail)
    np.testing.assert_array_equal(ds["failure"].values, fail.astype(int))
    assert ds["failure"].attrs["failure_messages"]["1"] == FAILURES[1]
    expected = np.where(fail, np.nan, 1e6 * (2 * moi + harvest / 10))
    np.testing.assert_array_equal(ds["viable_car_pos_cells"].values, expected)
    assert not ds["conforming"].values[fail].any()
    assert list(ds["point"].values) == list(range(40))


def test_an_interrupted_sweep_resumes_without_recomputing(tmp_path):
    plan = plan_for()
    calls = []

    def crashing(x, params):
        if len(calls) == 2:
            raise KeyboardInterrupt  # stands for a crash between two chunks
        calls.append(x.shape[0])
        return synthetic(x)

    with pytest.raises(KeyboardInterrupt):
        run_sweep(tmp_path / "a.zarr", plan, crashing, None, progress=False)
    partial = open_sweep(tmp_path / "a.zarr", allow_incomplete=True)
    assert list(partial["chunk_done"].values) == [True, True, False, False, False]
    assert np.isnan(partial["viable_car_pos_cells"].values[16:]).all()
    assert (partial["failure"].values[16:] == -1).all()  # "not computed", not "ok"
    with pytest.raises(TwinInputError, match="3 of 5 chunks not done"):
        open_sweep(tmp_path / "a.zarr")
    seen = []

    def counting(x, params):
        seen.append(x[0, 0])
        return synthetic(x)

    report = run_sweep(tmp_path / "a.zarr", plan, counting, None, progress=False)
    assert report.chunks_computed == 3 and report.chunks_resumed == 2 and len(seen) == 3
    run_sweep(tmp_path / "b.zarr", plan, synthetic, None, progress=False)
    _assert_same(open_sweep(tmp_path / "a.zarr"), open_sweep(tmp_path / "b.zarr"))


def test_resuming_with_other_settings_is_refused(tmp_path):
    run_sweep(tmp_path / "s.zarr", plan_for(), synthetic, None, progress=False)
    with pytest.raises(TwinInputError, match="different chunk_size"):
        run_sweep(tmp_path / "s.zarr", plan_for(chunk_size=4), synthetic, None, progress=False)


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_sweep import plan_for, synthetic
    from twin.sweep import run_sweep

    def slow(x, params):
        time.sleep(0.1)
        return synthetic(x)

    run_sweep(sys.argv[1], plan_for(n_points=48, chunk_size=4), slow, None, progress=False)
    """
)


@pytest.mark.slow  # ~20 s on the shared machine (a second Python process importing JAX)
def test_a_sweep_killed_at_a_random_moment_resumes_to_the_same_store(tmp_path):
    """SIGKILL a real sweep process mid-run: the store opens, done chunks are intact, the
    rerun computes only the rest and ends bit-identical to an uninterrupted sweep."""
    store = tmp_path / "killed.zarr"
    script = tmp_path / "sweep_script.py"
    script.write_text(KILL_SCRIPT.format(tests=str(REPO_ROOT / "tests")))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen([sys.executable, str(script), str(store)], env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = store / "chunk_done" / "c"
            if done.is_dir() and len(list(done.iterdir())) >= 2:
                break
            time.sleep(0.02)
        time.sleep(np.random.default_rng().uniform(0, 0.2))  # anywhere inside a chunk
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(30)
    assert process.returncode == -signal.SIGKILL
    partial = open_sweep(store, allow_incomplete=True)
    done = np.asarray(partial["chunk_done"].values)
    assert 2 <= done.sum() < done.size
    for name in OUTCOMES:  # every variable reads: nothing torn
        partial[name].values  # noqa: B018
    plan = plan_for(n_points=48, chunk_size=4)
    report = run_sweep(store, plan, synthetic, None, progress=False)
    assert report.chunks_computed == done.size - done.sum()
    run_sweep(tmp_path / "whole.zarr", plan, synthetic, None, progress=False)
    _assert_same(open_sweep(store), open_sweep(tmp_path / "whole.zarr"))


# --- shards and merge ---------------------------------------------------------------------


@pytest.mark.slow  # five stores: ~6 s here; tests/test_sweep_simulate.py merges real shards too
def test_shards_merge_into_the_single_process_store(tmp_path):
    total = design_size("lhs", 45, 3)
    # 3 chunks of 16 (the last 13) over 4 shards: whole chunks, one shard empty
    ranges = [shard_range(total, 16, i, 4) for i in range(4)]
    assert ranges == [(0, 0), (0, 16), (16, 32), (32, 45)]
    for i, (a, b) in enumerate(ranges):
        plan = plan_for("lhs", 45, 16, a, b)
        run_sweep(tmp_path / f"shard_{i}" / "sweep.zarr", plan, synthetic, None, progress=False)
    run_sweep(tmp_path / "single.zarr", plan_for("lhs", 45, 16), synthetic, None, progress=False)
    shards = sorted(tmp_path.glob("shard_*/sweep.zarr"))
    with pytest.raises(TwinInputError, match="cover points 0-16 of 45"):
        merge_stores(shards[:2], tmp_path / "partial.zarr")
    merged = merge_stores(shards[::-1], tmp_path / "merged.zarr")
    single, joined = open_sweep(tmp_path / "single.zarr"), open_sweep(merged)
    _assert_same(single, joined)
    assert joined.attrs == single.attrs
    a, b = zarr.open_group(tmp_path / "single.zarr"), zarr.open_group(merged)
    assert all(a[k].chunks == b[k].chunks for k in a.array_keys())


# --- analysis -----------------------------------------------------------------------------


def test_response_surface_is_the_binned_mean_of_a_known_function(tmp_path):
    run_sweep(tmp_path / "s.zarr", plan_for("grid", 1000, 500), synthetic, None, progress=False)
    ds = open_sweep(tmp_path / "s.zarr")
    surface = response_surface(ds, "moi", "harvest_time_h", "viable_car_pos_cells", bins=10)
    # A 10-level grid with 10 bins: one level per bin, so each bin's mean is the function at
    # the level (the third name has no effect); moi's last level (10) failed: empty, NaN.
    moi = np.linspace(1, 10, 10)[:, None]
    harvest = np.linspace(192, 264, 10)[None, :]
    expected = 1e6 * (2 * moi + harvest / 10) * np.ones((10, 10))
    expected[-1] = np.nan
    np.testing.assert_allclose(surface.values, expected, rtol=1e-12)
    assert surface.attrs["failed_points"] == 100
    at = float(np.linspace(0.02, 0.05, 10)[3])
    at = {"max_growth_rate_per_h": at}
    sliced = response_surface(ds, "moi", "harvest_time_h", "viable_car_pos_cells", bins=10, at=at)
    assert (sliced["count"].values[:-1] == 1).all()
    region, summary = design_space_region(ds)
    np.testing.assert_array_equal(region.values, ds["moi"].values < 5)
    assert summary["inside"] == 400 and summary["moi"] == [1.0, 4.0]


def test_design_space_figure_shows_the_share_meeting_specification_per_bin(tmp_path):
    """Over every point (not a strided subsample): on a Sobol design, conforming where
    moi < 5 and failed where moi > 9.5, so per moi bin the share is 1 below 5, 0 above."""
    run_sweep(tmp_path / "s.zarr", plan_for("sobol", 4096, 4096), synthetic, None, progress=False)
    ds = open_sweep(tmp_path / "s.zarr")
    region, summary = design_space_region(ds)
    fig = plot_design_space(ds, region, "moi", "harvest_time_h", summary["rule"], bins=6)
    share = np.asarray(fig.axes[0].collections[0].get_array()).reshape(6, 6).T  # (moi, harvest)
    np.testing.assert_array_equal(share[:2], 1.0)  # moi 1-4: every point conforms
    np.testing.assert_array_equal(share[3:], 0.0)  # moi 5.5-10: none (failures included)
    np.testing.assert_allclose(share[2], 2 / 3, atol=0.1)  # moi 4-5.5: conforming below 5
    assert "max_growth_rate_per_h" in fig.axes[0].get_title()  # what it is marginal over


def test_sensitivity_indices_of_a_linear_function_match_the_closed_form(tmp_path):
    """y = 1e6 (2 moi + harvest / 10) on uniform inputs: S_i = a_i^2 Var(x_i) / sum, the
    third name 0 (no interactions, so first-order = total)."""
    space = dict(SPACE, moi=[1.0, 9.0])  # no failures: the estimator needs every point
    plan = SweepPlan(sweep_space(space), "saltelli", 1024, 0, 2048, 0, 0, 1024 * 8, {})
    run_sweep(tmp_path / "s.zarr", plan, synthetic, None, progress=False)
    table = sensitivity_indices(open_sweep(tmp_path / "s.zarr"), "viable_car_pos_cells")
    var = np.array([4 * 8**2 / 12, 0.01 * 72**2 / 12, 0.0])
    expected = var / var.sum()
    np.testing.assert_allclose(table["S1"].values, expected, atol=0.02)
    np.testing.assert_allclose(table["ST"].values, expected, atol=0.02)
    assert list(table.index) == list(SPACE)


def test_sensitivity_refuses_failed_points_and_other_designs(tmp_path):
    run_sweep(tmp_path / "s.zarr", plan_for(chunk_size=40), synthetic, None, progress=False)
    with pytest.raises(TwinInputError, match="need sweep.design=saltelli"):
        sensitivity_indices(open_sweep(tmp_path / "s.zarr"), "viable_car_pos_cells")
    plan = SweepPlan(sweep_space(SPACE), "saltelli", 16, 0, 64, 0, 0, 128, {})
    run_sweep(tmp_path / "t.zarr", plan, synthetic, None, progress=False)
    with pytest.raises(TwinInputError, match="point\\(s\\) failed to simulate"):
        sensitivity_indices(open_sweep(tmp_path / "t.zarr"), "viable_car_pos_cells")


# --- the command's settings -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sweep.design=foo", "sweep.design='foo': choose from"),
        ("sweep.n_points=0", "sweep.n_points=0: must be an integer >= 1"),
        ("sweep.shard=2", r"sweep.shard=2: must be in \[0, 1\)"),
        ("sweep.chunk_size=0", "sweep.chunk_size=0"),
        ("sweep.float64=2", "sweep.float64=2: must be true or false"),
        ("sweep.space={moi:[1,10],bogus:[0,1]}", "sweep.space.bogus: not a recipe decision"),
        ("sweep.space={harvest_time_h:[264,192]}", r"sweep.space.harvest_time_h=\[264, 192\]"),
        ("sweep.design=saltelli sweep.n_points=1000", "sweep.n_points=1000: the Saltelli design"),
    ],
)
def test_bad_settings_stop_the_command_before_any_work(override, message, tmp_path):
    from hydra import compose, initialize_config_dir

    import twin.config  # noqa: F401  (registers the schemas)

    sys.path.insert(0, str(REPO_ROOT / "experiments"))
    try:
        import sweep as sweep_experiment
    finally:
        sys.path.pop(0)
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose("sweep", overrides=[*override.split(" "), "sweep.n_donors=0"])
    with pytest.raises(TwinInputError, match=message):
        sweep_experiment.run(cfg, tmp_path)
    assert not (tmp_path / "sweep.zarr").exists()


def test_a_swept_parameter_cannot_also_vary_per_donor(tmp_path):
    from hydra import compose, initialize_config_dir

    import twin.config  # noqa: F401

    sys.path.insert(0, str(REPO_ROOT / "experiments"))
    try:
        import sweep as sweep_experiment
    finally:
        sys.path.pop(0)
    overrides = ["sweep.space={max_growth_rate_per_h:[0.02,0.05]}", "sweep.n_donors=4"]
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose("sweep", overrides=overrides)
    with pytest.raises(TwinInputError, match="sweep.space.max_growth_rate_per_h: swept and also"):
        sweep_experiment.run(cfg, tmp_path)
