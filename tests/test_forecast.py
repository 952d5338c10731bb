"""Forecasting: conditioning on a run's own data, the forecast.csv contract, release odds,
harvest advice and the command line.

The tests start from a *known* calibration (population = the truth of the virtual data, small
population uncertainty) rather than a fitted one, so they test the forecast alone and share one
compile of the conditioning and of the draw simulation.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

import twin.config  # noqa: F401  (registers the config schemas)
from twin import TwinInputError, default_parameters
from twin.assays import AssayNoise
from twin.calibrate import (
    Calibration,
    CalibrationConfig,
    DiscrepancySettings,
    calibrate,
    write_calibration,
)
from twin.data import RunData
from twin.forecast import (
    FORECAST_COLUMNS,
    FORECAST_VARIABLES,
    ForecastSettings,
    forecast,
    planned_events,
)
from twin.forecast._condition import (
    conditioned_positions,
    effect_prior,
    heavy_tailed,
    structure_run_level_sd,
)
from twin.forecast._discrepancy import learn_discrepancy, learn_discrepancy_cross_fitted
from twin.forecast._forecast import DEFAULT_RUN_LEVEL_SD, _posterior, advice_window
from twin.forecast._io import observed_at_harvest, truncate
from twin.forecast._predictive import harvest_advice, release_odds
from twin.kinetics import ModelStructure, to_unconstrained
from twin.process import Downstream, Event, Recipe
from twin.simulate import SolverSettings
from twin.virtual import generate_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
FITTED = ("max_growth_rate_per_h", "susceptible_fraction", "activation_lag_h")
DONOR_LEVEL = ("max_growth_rate_per_h", "susceptible_fraction")
DONOR_SD = np.array([0.2, 0.4])
RUN_LEVEL_SD = {"activation_lag_h": 0.3}
SETTINGS = ForecastSettings(
    n_draws=64, use_known_donors=False, time_step_h=12.0, run_level_sd=RUN_LEVEL_SD
)


def known_calibration(donor_sd=DONOR_SD) -> Calibration:
    """A calibration whose population is the default parameters, with a small covariance."""
    population = to_unconstrained(default_parameters())
    estimate = np.array([float(getattr(population, n)) for n in FITTED])
    empty = pd.DataFrame()
    return Calibration(
        fitted=FITTED,
        donor_level=DONOR_LEVEL,
        donor_ids=("D0",),  # one seen donor (not one of the virtual data's)
        run_ids=("R0",),
        run_donor_ids=("D0",),
        model_parameters=default_parameters(),
        estimate=estimate,
        donor_effects=np.zeros((1, len(DONOR_LEVEL))),
        covariance=np.diag(np.r_[np.full(len(FITTED), 0.02**2), np.asarray(donor_sd) ** 2]),
        prior_sd=np.full(len(FITTED), 0.3),
        donor_sd=np.asarray(donor_sd, float),
        noise=AssayNoise(),
        initial_noise=AssayNoise(),
        structure=ModelStructure(),
        solver=SolverSettings(adjoint="forward"),
        objective=0.0,
        n_observations=0,
        observations=pd.DataFrame(
            columns=["run_id", "time_h", "variable", "observed", "predicted", "scaled_residual"]
        ),
        diagnostics=pd.DataFrame({"selected": [True], "converged": [True]}),
        profiles=empty,
        prior_dominated_ratio=0.7,
        high_correlation=0.95,
    )


@pytest.fixture(scope="module")
def virtual():
    """Two donors x two runs from the default population with the calibration's omega."""
    return generate_dataset(
        5,
        default_parameters(),
        dict(zip(DONOR_LEVEL, DONOR_SD, strict=True)),
        Recipe(),
        n_donors=2,
        runs_per_donor=2,
        uniform={"moi": [3.0, 8.0]},
    )


@pytest.fixture(scope="module")
def truncated(virtual):
    return truncate(virtual.run_data, virtual.run_data.run_ids, horizon_h=60.0)


@pytest.fixture(scope="module")
def result(truncated):
    return forecast(known_calibration(), truncated, Downstream(), SETTINGS)


def test_forecast_table_follows_the_contract(result, truncated):
    table = result.table
    assert tuple(table.columns) == FORECAST_COLUMNS
    for run_id in truncated.run_ids:
        rows = table[table["run_id"] == run_id]
        assert tuple(rows["variable"]) == FORECAST_VARIABLES
        harvest = truncated.events_for(run_id)[-1].time_h
        assert np.all(rows["time_h"] == harvest)
    assert np.all(table["lower_90"] <= table["median"])
    assert np.all(table["median"] <= table["upper_90"])
    probabilities = result.runs.filter(like="p_")
    assert np.all((probabilities.to_numpy() >= 0) & (probabilities.to_numpy() <= 1))
    # every run states its failed draws, 0 included (runs.csv; printed by forecast.py)
    assert (result.runs["failed_draws"] == 0).all()
    assert result.runs["conditioning_solve_success"].all()


def test_conditioning_moves_towards_the_truth(result, truncated, virtual):
    """With its own data, the forecast is closer to what was measured at harvest than the
    population forecast without data: the donor effects were learned."""
    observed = observed_at_harvest(virtual.run_data).set_index("run_id")["observed"]
    no_data = truncate(virtual.run_data, virtual.run_data.run_ids, horizon_h=1e4)
    prior_only = forecast(known_calibration(), no_data, Downstream(), SETTINGS)

    def error(frame):
        rows = frame.table[frame.table["variable"] == "viable_car_pos_cells"]
        return np.mean(
            [
                abs(m - observed[r]) / observed[r]
                for r, m in zip(rows["run_id"], rows["median"], strict=True)
            ]
        )

    assert error(result) < error(prior_only)
    assert error(result) < 0.15


def test_more_data_gives_narrower_intervals(result, virtual):
    late = forecast(
        known_calibration(),
        truncate(virtual.run_data, virtual.run_data.run_ids, horizon_h=1.0),
        Downstream(),
        SETTINGS,
    )

    def width(frame):
        rows = frame.table[frame.table["variable"] == "viable_car_pos_cells"]
        return np.mean(np.log(rows["upper_90"] / rows["lower_90"]))

    assert width(late) < width(result)


def test_running_batch_without_harvest_is_forecast_to_the_planned_time():
    events = [Event(0.0, "seed", cells=1e8, viability=0.9, volume_ml=100.0), Event(0.0, "activate")]
    planned, assumed = planned_events(events, ForecastSettings(planned_harvest_time_h=200.0), "R1")
    assert planned[-1] == Event(200.0, "harvest")
    assert "harvest at 200 h (forecast.planned_harvest_time_h)" in assumed
    late = [*events, Event(210.0, "sample", volume_ml=1.0)]
    with pytest.raises(TwinInputError, match="planned_harvest_time_h=200"):
        planned_events(late, ForecastSettings(planned_harvest_time_h=200.0), "R1")


def test_running_batch_continues_its_planned_recipe():
    recipe = Recipe(harvest_time_h=216.0)
    recorded = [e for e in recipe.events() if e.time_h <= 100.0]
    planned, assumed = planned_events(recorded, ForecastSettings(), "R1", recipe, "recipe=long")
    assert planned == [*recorded, *[e for e in recipe.events() if e.time_h > 100.0]]
    assert planned[-1] == Event(216.0, "harvest")
    assert assumed.startswith("recorded events to") and "then recipe=long" in assumed
    with pytest.raises(TwinInputError, match="nothing left to plan"):
        planned_events(
            [*recorded, Event(300.0, "sample", volume_ml=1.0)], ForecastSettings(), "R1", recipe
        )


def test_release_odds_and_harvest_advice_on_known_draws():
    rng = np.random.default_rng(0)
    n, times = 4000, np.array([100.0, 150.0, 200.0])
    viable = np.exp(rng.normal(np.log([2e8, 6e8, 9e8]), 0.3, (n, 3)))
    measured = {
        "viable_cells": viable,
        "viability": np.full((n, 3), 0.9),
        "car_pos_fraction": np.full((n, 3), 0.3),
        "vcn_per_cell": np.full((n, 3), 0.6),
    }
    downstream = Downstream()
    odds = release_odds(measured, downstream)
    # Conforming needs >= 1 dose of 1e8 CAR+ cells after recovery and cryo loss.
    threshold = downstream.dose_car_pos_cells / (
        0.3 * downstream.harvest_recovery * (1 - downstream.cryo_viable_loss_fraction)
    )
    expected = np.mean(viable >= threshold, axis=0)
    np.testing.assert_allclose(odds["p_conforming"], expected)
    advice = harvest_advice(times, odds)
    assert advice["recommended_harvest_time_h"] == 200.0


def test_finished_runs_are_never_advised_a_harvest_after_the_recorded_one(result, truncated):
    # The truncated runs keep their recorded harvest: finished, advice up to that harvest.
    runs = result.runs.set_index("run_id")
    for run_id in truncated.run_ids:
        harvest = truncated.events_for(run_id)[-1].time_h
        assert runs.loc[run_id, "finished"]
        assert runs.loc[run_id, "advice_until_h"] == harvest
        assert runs.loc[run_id, "now_h"] <= runs.loc[run_id, "recommended_harvest_time_h"]
        assert runs.loc[run_id, "recommended_harvest_time_h"] <= harvest
    # The window itself, where later times would be better (yield still rising).
    time_h = np.arange(0.0, 241.0, 12.0)
    odds = {
        "p_conforming": np.ones(time_h.size),
        "expected_viable_car_pos_cells": time_h * 1e7,
        "expected_conforming_doses": time_h / 10,
    }
    finished = advice_window(time_h, 120.0, 192.0, 240.0, finished=True)
    assert time_h[finished].min() == 120.0 and time_h[finished].max() == 192.0
    pick = {k: v[finished] for k, v in odds.items()}
    assert harvest_advice(time_h[finished], pick)["recommended_harvest_time_h"] == 192.0
    running = advice_window(time_h, 120.0, 192.0, 240.0, finished=False)
    assert time_h[running].max() == 240.0
    # Measured at (or after) its harvest: the recorded harvest is the only choice.
    assert time_h[advice_window(time_h, 200.0, 192.0, 240.0, finished=True)].tolist() == [192.0]


def _load_forecast_script():
    spec = importlib.util.spec_from_file_location(
        "forecast_script", REPO_ROOT / "experiments" / "forecast.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_forecast_script_writes_the_contract_files(tmp_path, virtual, truncated):
    from twin.data import write_run_data

    write_calibration(known_calibration(), tmp_path / "cal" / "calibration.nc")
    write_run_data(truncated, tmp_path / "data")
    overrides = [
        f"data_dir={tmp_path / 'data'}",
        f"calibration={tmp_path / 'cal'}",
        f"forecast.n_draws={SETTINGS.n_draws}",
        f"forecast.time_step_h={SETTINGS.time_step_h}",
        "forecast.use_known_donors=false",
        # the defaults name parameters this calibration does not fit: swap them for its own
        *(f"~forecast.run_level_sd.{name}" for name in DEFAULT_RUN_LEVEL_SD),
        *(f"+forecast.run_level_sd.{name}={sd}" for name, sd in RUN_LEVEL_SD.items()),
    ]
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose("forecast", overrides=overrides)
    runs = _load_forecast_script().run(cfg, tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "forecast.csv")
    assert tuple(table.columns) == FORECAST_COLUMNS
    assert set(table["run_id"]) == set(truncated.run_ids)
    assert len(runs) == len(truncated.run_ids)
    for run_id in truncated.run_ids:
        assert (tmp_path / "out" / f"fan_{run_id}.png").is_file()


def test_forecast_without_calibration_is_one_clear_error(tmp_path):
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "experiments" / "forecast.py"),
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert completed.returncode == 2
    assert "error: calibration is required" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_settings_are_checked():
    with pytest.raises(ValueError, match="forecast.n_draws"):
        ForecastSettings(n_draws=1)
    assert jax.config.jax_enable_x64


def test_run_level_conditioning_corrects_a_parameter_the_calibration_shares(result):
    """Batches whose activation lag is 50 % longer than the calibration's (and varies by donor,
    which the calibration says it does not): letting each run's data move the lag forecasts
    them better than conditioning the donor-level parameters alone."""
    lagged = generate_dataset(
        11,
        default_parameters(activation_lag_h=1.5 * default_parameters().activation_lag_h),
        {**dict(zip(DONOR_LEVEL, DONOR_SD, strict=True)), "activation_lag_h": 0.2},
        Recipe(),
        n_donors=2,
        runs_per_donor=2,
        uniform={"moi": [3.0, 8.0]},
    )
    observed = observed_at_harvest(lagged.run_data).set_index("run_id")["observed"]
    cut = truncate(lagged.run_data, lagged.run_data.run_ids, horizon_h=60.0)

    def error(settings):
        rows = forecast(known_calibration(), cut, Downstream(), settings).table
        rows = rows[rows["variable"] == "viable_car_pos_cells"].set_index("run_id")["median"]
        return np.mean(np.abs(np.log(rows / observed[rows.index])))

    assert error(SETTINGS) < 0.7 * error(dataclasses.replace(SETTINGS, run_level_sd={}))


def test_run_level_prior_adds_discrepancy_to_the_population_uncertainty():
    calibration = known_calibration()
    run_level = {"activation_lag_h": 0.25}
    position = conditioned_positions(calibration, run_level)
    np.testing.assert_array_equal(position, [0, 1, 2])  # donor-level first, then run-level
    mean, covariance = effect_prior(calibration, ["D0", "new"], True, run_level)
    assert mean.shape == (2, 3) and covariance.shape == (2, 3, 3)
    lag_variance = calibration.covariance[2, 2] + 0.25**2
    np.testing.assert_allclose(covariance[:, 2, 2], lag_variance)
    np.testing.assert_allclose(covariance[:, 2, :2], 0.0)
    # the known donor keeps its calibrated effects; the new one starts from the population
    np.testing.assert_allclose(covariance[1, :2, :2], np.diag(DONOR_SD**2))
    no_extra_mean, no_extra_cov = effect_prior(calibration, ["D0", "new"], True)
    np.testing.assert_allclose(covariance[:, :2, :2], no_extra_cov)
    np.testing.assert_allclose(mean[:, :2], no_extra_mean)


@pytest.mark.parametrize(
    ("run_level", "message"),
    [
        ({"max_growth_rate_per_h": 0.1}, "not a fitted population-level parameter"),  # donor
        ({"lysis_rate_per_h": 0.1}, "not a fitted population-level parameter"),  # not fitted
        ({"activation_lag_h": 0.0}, "activation_lag_h=0.0: must be > 0"),
    ],
)
def test_run_level_names_are_checked(run_level, message):
    with pytest.raises(TwinInputError, match=message):
        conditioned_positions(known_calibration(), run_level)


def test_run_level_form_parameters_apply_only_where_the_structure_reads_them(caplog):
    """The default allowance on the decline floor is not conditioned for a calibration whose
    structure has no floor (as calibration never fits it there), and says so; with the floor,
    or for any other name, the names are kept and checked as given."""
    assert "growth_decline_floor" in DEFAULT_RUN_LEVEL_SD
    without = dataclasses.replace(
        known_calibration(), structure=ModelStructure(decline_floor=False)
    )
    with caplog.at_level("INFO", logger="twin.forecast._condition"):
        kept = structure_run_level_sd(without, DEFAULT_RUN_LEVEL_SD | RUN_LEVEL_SD)
    assert (
        kept
        == {k: v for k, v in DEFAULT_RUN_LEVEL_SD.items() if k != "growth_decline_floor"}
        | RUN_LEVEL_SD
    )
    assert "not conditioning growth_decline_floor" in caplog.text
    with_floor = known_calibration()
    assert structure_run_level_sd(with_floor, DEFAULT_RUN_LEVEL_SD) == DEFAULT_RUN_LEVEL_SD
    floor = {"growth_decline_floor": 0.5}  # read by the structure, not fitted: an error
    with pytest.raises(TwinInputError, match="growth_decline_floor: not a fitted"):
        conditioned_positions(with_floor, structure_run_level_sd(with_floor, floor))


def test_heavy_tailed_prior_residuals_are_the_student_t_log_density():
    """``r^2 / 2 = (nu / 2) log(1 + z^2 / nu)``: the Student-t's negative log-density times
    ``nu / (nu + 1)``, which matches the normal's ``z^2 / 2`` near 0; infinite dof: ``z``."""
    z = jax.numpy.array([0.0, 1e-7, 0.3, -1.0, 2.5, -6.0])
    r = heavy_tailed(z, jax.numpy.asarray(4.0))
    np.testing.assert_allclose(r**2 / 2, 2.0 * np.log1p(np.asarray(z) ** 2 / 4.0), rtol=1e-12)
    np.testing.assert_array_equal(np.sign(r), np.sign(z))
    np.testing.assert_array_equal(heavy_tailed(z, jax.numpy.asarray(np.inf)), z)
    slope = jax.vmap(jax.grad(lambda x: heavy_tailed(x[None], jax.numpy.asarray(4.0))[0]))(z)
    step = 1e-6
    finite_difference = (
        heavy_tailed(z + step, jax.numpy.asarray(4.0))
        - heavy_tailed(z - step, jax.numpy.asarray(4.0))
    ) / (2 * step)
    np.testing.assert_allclose(slope, finite_difference, rtol=1e-6, atol=1e-9)
    assert slope[0] == pytest.approx(1.0)  # as the normal at the population value
    assert float(r[-1]) ** 2 / 2 < 0.3 * 6.0**2 / 2  # a 6-SD effect costs far less


def test_a_donor_in_the_tail_is_shrunk_less_under_the_student_t_prior():
    """Batches of a donor whose growth rate is 3 omegas above the population, seen for their
    first two days only (the prior still weighs): the Student-t prior lets their own data pull
    the growth effect further out than the normal prior does, and closer to the truth."""
    truth = 3 * DONOR_SD[0]
    tail = generate_dataset(
        13,
        default_parameters(
            max_growth_rate_per_h=default_parameters().max_growth_rate_per_h * np.exp(truth)
        ),
        {"max_growth_rate_per_h": 1e-3, "susceptible_fraction": 1e-3},
        Recipe(),
        n_donors=2,
        runs_per_donor=2,
        uniform={"moi": [3.0, 8.0]},
    ).run_data
    runs = tail.run_ids
    cut = truncate(tail, runs, horizon_h=130.0)
    calibration = known_calibration()
    position = conditioned_positions(calibration, RUN_LEVEL_SD)

    def growth_effect(settings):
        posterior = _posterior(calibration, cut, runs, settings, RUN_LEVEL_SD, position)
        return np.asarray(posterior.effects)[:, 0]

    normal = growth_effect(dataclasses.replace(SETTINGS, prior_dof=None))
    student = growth_effect(SETTINGS)
    assert SETTINGS.prior_dof == 4.0
    assert np.all(normal < student) and np.all(student < 1.2 * truth)
    assert np.mean(np.abs(student - truth)) < 0.8 * np.mean(np.abs(normal - truth))


@pytest.fixture(scope="module")
def inflated():
    """Three donors x two runs whose harvest viable counts read 1.5x what the model makes:
    a known model discrepancy at harvest."""
    data = generate_dataset(
        9,
        default_parameters(),
        dict(zip(DONOR_LEVEL, DONOR_SD, strict=True)),
        Recipe(),
        n_donors=3,
        runs_per_donor=2,
    ).run_data
    harvest = data.events[data.events["operation"] == "harvest"].set_index("run_id")["time_h"]
    m = data.measurements
    at_harvest = (m["time_h"] == m["run_id"].map(harvest)) & (m["variable"] == "viable_cells")
    return RunData(
        data.runs, data.events, m.assign(value=m["value"].where(~at_harvest, 1.5 * m["value"]))
    )


def test_learnt_discrepancy_recovers_a_known_bias_and_moves_the_forecast(inflated):
    settings = DiscrepancySettings(horizons_h=(48.0,), n_draws=32)
    table = learn_discrepancy(known_calibration(), inflated, settings, SETTINGS)
    viable = table[table["variable"] == "viable_cells"].iloc[0]
    assert viable["n_runs"] == 6 and 0.5 <= viable["scale"] <= 20
    assert abs(viable["bias"] - np.log(1.5)) < 0.15, viable["bias"]
    vcn = table[table["variable"] == "vcn_per_cell"].iloc[0]
    assert abs(vcn["bias"]) < 0.15  # untouched variables carry no bias

    cut = truncate(inflated, inflated.run_ids, horizon_h=48.0)
    plain = forecast(known_calibration(), cut, Downstream(), SETTINGS).table
    corrected_calibration = dataclasses.replace(known_calibration(), discrepancy=table)
    corrected = forecast(corrected_calibration, cut, Downstream(), SETTINGS).table
    rows = plain["variable"] == "viable_cells"
    ratio = corrected.loc[rows, "median"].to_numpy() / plain.loc[rows, "median"].to_numpy()
    np.testing.assert_array_less(1.2, ratio)
    np.testing.assert_array_less(ratio, 1.8)
    off = dataclasses.replace(SETTINGS, apply_discrepancy=False)
    pd.testing.assert_frame_equal(
        forecast(corrected_calibration, cut, Downstream(), off).table, plain
    )


def test_cross_fitted_discrepancy_scores_each_donor_with_a_fit_that_never_saw_it(inflated):
    """Three folds of three donors: each fit leaves out exactly one donor, each run is scored
    once (n_runs 6), and the pooled table recovers the same known bias as the in-sample one."""
    fitted_on = []

    def fit(data):
        fitted_on.append(set(data.runs["donor_id"]))
        return known_calibration()

    settings = DiscrepancySettings(horizons_h=(48.0,), n_draws=32, folds=3)
    table = learn_discrepancy_cross_fitted(inflated, fit, settings, SETTINGS)
    donors = set(inflated.runs["donor_id"])
    assert sorted(len(donors - seen) for seen in fitted_on) == [1, 1, 1]
    assert set.union(*(donors - seen for seen in fitted_on)) == donors
    viable = table[table["variable"] == "viable_cells"].iloc[0]
    assert viable["n_runs"] == 6
    assert abs(viable["bias"] - np.log(1.5)) < 0.15, viable["bias"]
    with pytest.raises(TwinInputError, match="fit.discrepancy.folds=4: the data have only 3"):
        learn_discrepancy_cross_fitted(
            inflated, fit, dataclasses.replace(settings, folds=4), SETTINGS
        )
    # Calibration checks the folds against the data before it fits anything.
    with pytest.raises(TwinInputError, match="fit.discrepancy.folds=4: the data have only 3"):
        calibrate(
            inflated,
            CalibrationConfig(discrepancy=dataclasses.replace(settings, folds=4)),
            on_fit=lambda _: pytest.fail("fitted before the folds were checked"),
        )
    with pytest.raises(ValueError, match="folds=1: must be 0"):
        DiscrepancySettings(folds=1)


def test_anchor_residuals_measure_the_miss_at_the_latest_reading(truncated, result):
    """Latest viable counts read 1.5x higher: the conditioning follows them only in part (they
    are one reading among many), and the rest is the anchor residual the discrepancy carries
    forward; %CAR+ untouched, so viable CAR+ cells move with the count alone."""
    m = truncated.measurements
    latest = m.groupby("run_id")["time_h"].transform("max")
    raised = (m["time_h"] == latest) & (m["variable"] == "viable_cells")
    inflated = RunData(
        truncated.runs,
        truncated.events,
        m.assign(value=m["value"].where(~raised, 1.5 * m["value"])),
    )
    moved = forecast(known_calibration(), inflated, Downstream(), SETTINGS).runs
    before, after = result.runs.set_index("run_id"), moved.set_index("run_id")
    shift = after["anchor_viable_cells"] - before["anchor_viable_cells"]
    assert ((shift > 0.1) & (shift < np.log(1.5) + 0.01)).all(), shift
    car_shift = after["anchor_viable_car_pos_cells"] - before["anchor_viable_car_pos_cells"]
    np.testing.assert_allclose(car_shift, shift, atol=0.05)
    assert (before["anchor_viable_cells"].abs() < 0.3).all()  # assay noise (8 %) and little else
