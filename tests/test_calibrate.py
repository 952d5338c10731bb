"""Calibration: derivatives, the structured Jacobian, recovery of known truth, config, I/O, CLI.

Every fast test shares one tiny virtual dataset (2 donors x 2 runs, padded to 8 runs) and so
one compiled Levenberg-Marquardt function; ``fit_one`` with ``max_steps=0`` evaluates residuals,
Jacobian and gradient at a point with that same compiled code.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hydra import compose, initialize_config_dir

import twin.config  # noqa: F401  (registers the config schemas)
from twin import Recipe, TwinInputError, default_parameters
from twin.assays import MEASURED_VARIABLES, AssayNoise, sample_assay, to_assay_scale
from twin.calibrate import (
    CalibrationConfig,
    DiscrepancySettings,
    LMOptions,
    ModelSpec,
    ObjectiveData,
    ParameterLayout,
    _calibrate as calibrate_module,
    build_problem,
    calibrate,
    check_calibration_config,
    fit_bands,
    fit_one,
    load_calibration,
    make_prior,
    objective,
    plot_fits,
    plot_parameter_intervals,
    plot_residuals,
    residuals,
    write_calibration,
)
from twin.calibrate._calibrate import _distinct_optima
from twin.calibrate._laplace import Z_95
from twin.calibrate._select import best_forecast, forecast_score, parse_candidate
from twin.data import RunData, write_run_data
from twin.kinetics import KineticParameters, ModelStructure, to_unconstrained
from twin.observe import observables
from twin.process import EVENT_FIELDS
from twin.reference import ReferenceSolver
from twin.simulate import SolverSettings
from twin.virtual import AssayPlan, design_recipes, sample_donor_parameters

REPO_ROOT = Path(__file__).resolve().parents[1]
# The forecast's model discrepancy is learnt (and tested) in test_forecast.py: off here, so
# these fits compile only the calibration.
CONFIG = CalibrationConfig(discrepancy=DiscrepancySettings(horizons_h=()))
# Donor variation of the generator = the calibration's default omega: a well-specified model.
DONOR_SD = {name: CONFIG.donor_sd for name in CONFIG.donor_level}
EVALUATE = LMOptions(max_steps=0)


@dataclasses.dataclass(frozen=True)
class VirtualData:
    run_data: RunData
    donors: dict[str, KineticParameters]  # each donor's true parameters (natural units)


@functools.cache
def reference_solver() -> ReferenceSolver:
    return ReferenceSolver()


def virtual_dataset(seed: int, n_donors: int = 2, runs_per_donor: int = 2) -> VirtualData:
    """Virtual batches (twin.virtual's donors, designs and assay noise) solved with the SciPy
    reference solver: an integrator independent of the one being fitted, and no compile."""
    key_donors, key_assays = jax.random.split(jax.random.PRNGKey(seed))
    donors = sample_donor_parameters(key_donors, default_parameters(), DONOR_SD, n_donors)
    recipes = design_recipes(
        Recipe(),
        n_donors * runs_per_donor,
        np.random.default_rng(seed),
        uniform={"moi": [3.0, 8.0], "seed_cells": [6.0e7, 1.5e8]},
    )
    noise, plan = AssayNoise(), AssayPlan()
    runs, events, measurements = [], [], []
    for i, recipe in enumerate(recipes):
        run_id, donor = f"R{i + 1:02d}", i // runs_per_donor
        params = jax.tree.map(lambda x, d=donor: x[d], donors)
        times = sorted(recipe.sample_times_h)
        states, _ = reference_solver().solve(params, recipe.schedule(), np.array(times))
        runs.append((run_id, f"D{donor + 1}"))
        for event in recipe.events():
            values = {f: np.nan if event.value(f) is None else event.value(f) for f in EVENT_FIELDS}
            events.append(
                {"run_id": run_id, "time_h": event.time_h, "operation": event.operation, **values}
            )
        predicted = observables(jax.tree.map(lambda *x: jnp.stack(x), *states))
        for variable in MEASURED_VARIABLES:
            key_assays, key = jax.random.split(key_assays)
            values = sample_assay(key, variable, predicted[variable], noise.sd(variable))
            measurements += [
                (run_id, time_h, variable, float(value))
                for time_h, value in zip(times, values, strict=True)
                if plan.measured(variable, time_h, recipe)
            ]
    run_data = RunData(
        runs=pd.DataFrame(runs, columns=["run_id", "donor_id"]),
        events=pd.DataFrame(events),
        measurements=pd.DataFrame(measurements, columns=["run_id", "time_h", "variable", "value"]),
    )
    truth = {f"D{d + 1}": jax.tree.map(lambda x, d=d: x[d], donors) for d in range(n_donors)}
    return VirtualData(run_data, truth)


def truth_vector(virtual: VirtualData, problem, layout: ParameterLayout) -> np.ndarray:
    """The true unknowns: population = the generator's population, effects = donor - it."""
    population = to_unconstrained(default_parameters())
    theta = np.array([float(getattr(population, name)) for name in layout.fitted])
    effects = np.zeros((layout.n_donors, len(layout.donor_level)))
    for d, donor in enumerate(problem.donor_ids):
        donor_params = to_unconstrained(virtual.donors[donor])
        for q, name in enumerate(layout.donor_level):
            effects[d, q] = float(getattr(donor_params, name)) - float(getattr(population, name))
    return np.concatenate([theta, effects.ravel()])


@pytest.fixture(scope="module")
def virtual():
    return virtual_dataset(seed=11)


@pytest.fixture(scope="module")
def setup(virtual):
    """``(problem, spec, data)`` exactly as :func:`calibrate` builds them with defaults."""
    problem = build_problem(virtual.run_data, pad_multiple=CONFIG.pad_multiple)
    layout = ParameterLayout(
        tuple(CONFIG.fitted), tuple(CONFIG.donor_level), problem.n_donors_padded
    )
    spec = ModelSpec(layout, ModelStructure(), SolverSettings(), CONFIG.failure_residual)
    prior = make_prior(default_parameters(), layout, CONFIG.donor_sds())
    noise = AssayNoise()
    data = ObjectiveData(
        problem.arrays, prior, jnp.asarray([noise.sd(v) for v in MEASURED_VARIABLES])
    )
    return problem, spec, data


@pytest.fixture(scope="module")
def calibration(virtual):
    return calibrate(virtual.run_data, dataclasses.replace(CONFIG, n_starts=2), progress=False)


def evaluate(x, spec, data):
    """``(objective, residuals, jacobian)`` at ``x`` with the compiled fit function."""
    result = fit_one(jnp.asarray(x), data, spec, EVALUATE)
    return float(result.objective), np.asarray(result.residuals), np.asarray(result.jacobian)


def test_padded_arrays(virtual, setup):
    problem, spec, _ = setup
    arrays = problem.arrays
    assert arrays.time_h.shape[0] % 8 == 0 and arrays.time_h.shape[1] % 8 == 0
    assert problem.n_donors_padded % 8 == 0
    assert arrays.observed.shape == arrays.time_h.shape + (len(MEASURED_VARIABLES),)
    assert problem.n_observations == len(virtual.run_data.measurements)
    assert not np.asarray(arrays.mask)[len(problem.run_ids) :].any()  # padding runs see nothing
    assert np.all(np.diff(np.asarray(arrays.time_h), axis=1) >= 0)
    assert spec.solver.adjoint == "forward"


def test_running_batch_is_simulated_up_to_its_last_measurement(virtual):
    """A run without harvest, measured after its last event: the schedule is extended."""
    data = virtual.run_data
    run_id = data.run_ids[0]
    events = data.events[~((data.events["run_id"] == run_id) & (data.events["time_h"] > 100.0))]
    late = pd.DataFrame(
        {"run_id": [run_id], "time_h": [130.0], "variable": ["viable_cells"], "value": [1e9]}
    )
    measurements = data.measurements[
        ~((data.measurements["run_id"] == run_id) & (data.measurements["time_h"] > 100.0))
    ]
    running = RunData(data.runs, events, pd.concat([measurements, late], ignore_index=True))
    schedule_time = np.asarray(build_problem(running).arrays.schedules.time_h)[0]
    assert schedule_time.max() == 130.0


def test_gradient_matches_central_differences(setup):
    _, spec, data = setup
    layout = spec.layout
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [np.asarray(data.prior.mean(layout)), np.zeros(layout.size - layout.n_population)]
    )
    x = x + 0.1 * rng.standard_normal(x.size)
    _, r, jacobian = evaluate(x, spec, data)
    gradient = jacobian.T @ r
    h = 1e-5
    for _ in range(3):
        direction = rng.standard_normal(x.size)
        direction /= np.linalg.norm(direction)
        upper, _, _ = evaluate(x + h * direction, spec, data)
        lower, _, _ = evaluate(x - h * direction, spec, data)
        assert (upper - lower) / (2 * h) == pytest.approx(gradient @ direction, rel=1e-4, abs=1e-3)


def test_structured_jacobian_matches_directional_differences(setup):
    """Every block (population columns, each donor's columns, prior rows) against central
    differences of the residual vector, direction by direction."""
    _, spec, data = setup
    # A tight solve: at the prior mean some runs run out of glucose, where a residual of order
    # 100 on the log scale carries the default solve's error into the differences at 5 %.
    spec = dataclasses.replace(spec, solver=SolverSettings(rtol=1e-9, atol=1e-12))
    layout = spec.layout
    x = np.concatenate(
        [np.asarray(data.prior.mean(layout)), np.zeros(layout.size - layout.n_population)]
    )
    x[layout.n_population :] = 0.05
    _, _, jacobian = evaluate(x, spec, data)
    h = 1e-5
    donor1 = layout.n_population + len(layout.donor_level)  # first effect of the second donor
    for column in (0, 2, layout.n_population, donor1 + 1):
        step = np.zeros(x.size)
        step[column] = h
        _, upper, _ = evaluate(x + step, spec, data)
        _, lower, _ = evaluate(x - step, spec, data)
        # Both carry the ODE solve's error, accumulated over a run. A misplaced block would be
        # off by order one.
        np.testing.assert_allclose(
            (upper - lower) / (2 * h), jacobian[:, column], rtol=1e-3, atol=1e-4
        )


def test_recovers_known_truth(virtual, calibration, setup):
    problem, spec, _ = setup
    truth = truth_vector(virtual, problem, spec.layout)
    assert calibration.converged
    summary = calibration.summary()
    sd = np.sqrt(np.diag(calibration.covariance))
    n = len(calibration.entry_names)
    z = (np.concatenate([calibration.estimate, calibration.donor_effects.ravel()]) - truth[:n]) / sd
    # Ten 95 % intervals all cover the truth in only 60 % of datasets; the coverage test (slow)
    # checks the rate. Here: no estimate beyond 3 SDs, at most one population value outside.
    assert np.all(np.abs(z) < 3.0), summary
    assert np.sum(np.abs(z[: len(calibration.fitted)]) > Z_95) <= 1, summary
    rms = calibration.observations.groupby("variable")["scaled_residual"].apply(
        lambda r: np.sqrt(np.mean(r**2))
    )
    assert rms.between(0.6, 1.4).all(), rms  # the fit is within the noise, assay by assay
    overall = np.sqrt(np.mean(calibration.observations["scaled_residual"] ** 2))
    assert overall == pytest.approx(1.0, abs=0.15)
    # The plain miss on each assay's scale, recomputed here from observed and predicted; with
    # Gaussian residuals and no censored reading it is the likelihood's residual itself.
    obs = calibration.observations
    for v, part in obs.groupby("variable"):
        miss = to_assay_scale(v, part["observed"].to_numpy()) - to_assay_scale(
            v, part["predicted"].to_numpy()
        )
        expected = np.asarray(miss) / calibration.noise.sd(v)
        np.testing.assert_allclose(part["standardized_residual"], expected, atol=1e-8)
    uncensored = ~obs["censored"]
    np.testing.assert_allclose(
        obs.loc[uncensored, "standardized_residual"], obs.loc[uncensored, "scaled_residual"]
    )
    assert (calibration.diagnostics["failed_runs"] == 0).all()


def test_calibration_reports(calibration):
    summary = calibration.summary()
    assert list(summary["parameter"]) == list(calibration.fitted)
    assert (summary["lower_95"] < summary["estimate"]).all()
    assert (summary["estimate"] < summary["upper_95"]).all()
    assert summary["identified"].dtype == bool
    assert calibration.covariance.shape == (len(calibration.entry_names),) * 2
    assert np.allclose(calibration.covariance, calibration.covariance.T)
    assert set(calibration.donor_effects_by_donor) == set(calibration.donor_ids)
    draws = calibration.sample_parameters(jax.random.PRNGKey(0), 5, donor_id="D1")
    assert draws.max_growth_rate_per_h.shape == (5,)
    for figure in (
        plot_fits(calibration, "viable_cells"),
        plot_residuals(calibration),
        plot_parameter_intervals(calibration),
    ):
        assert figure.axes


def test_a_fit_out_of_steps_continues_from_its_best_point(virtual, calibration):
    # no omega rounds: only the first round's continuations are tabulated
    budget = dataclasses.replace(
        CONFIG, n_starts=1, max_steps=1, continuations=3, donor_sd_estimated=[]
    )
    result = calibrate(virtual.run_data, budget, progress=False)
    rows = result.diagnostics
    n = len(rows)
    assert n >= 2 and list(rows["continuation"]) == list(range(n))  # one step never converges
    assert not rows["converged"].iloc[:-1].any()  # continued only while not converged
    assert rows["converged"].iloc[-1] or n == 4
    assert (np.diff(rows["objective"].to_numpy()) < 0).all()  # each resumes where it stopped
    assert rows["selected"].iloc[-1] and rows["selected"].sum() == 1


def test_second_fit_with_the_same_shapes_does_not_recompile(virtual, calibration):
    compiled = fit_one._cache_size()
    data = virtual.run_data
    measurements = data.measurements.assign(value=1.05 * data.measurements["value"])
    again = RunData(data.runs, data.events, measurements)  # new values, same shapes
    calibrate(again, dataclasses.replace(CONFIG, n_starts=1, max_steps=2), progress=False)
    assert fit_one._cache_size() == compiled


def test_donor_sd_update_is_the_em_step_of_a_gaussian_random_effect():
    """omega^2 = mean over real donors of (effect^2 + posterior variance), with the posterior
    covariance inv(J^T J): here J is diagonal, so each variance is 1/J_ii^2."""
    from types import SimpleNamespace

    from twin.calibrate._calibrate import MIN_DONOR_SD, _donor_sd_update

    layout = ParameterLayout(("a", "b", "c"), ("a", "c"), n_donors=3)  # 3rd donor: padding
    effects = np.array([[0.2, 0.0], [-0.4, 0.0], [9.0, 9.0]])
    x = np.concatenate([[1.0, 2.0, 3.0], effects.ravel()])
    scales = np.array([1.0, 1.0, 1.0, 10.0, 100.0, 5.0, 100.0, 1.0, 1.0])  # J = diag(scales)
    best = SimpleNamespace(x=jnp.asarray(x), jacobian=np.diag(scales))
    current = np.array([0.3, 0.4])
    omega = _donor_sd_update(best, layout, n_donors=2, n_real=7, current=current)
    expected_a = np.sqrt(np.mean([0.2**2 + 1 / 10.0**2, 0.4**2 + 1 / 5.0**2]))
    np.testing.assert_allclose(omega, [expected_a, MIN_DONOR_SD], rtol=1e-12)
    # a failed sensitivity (NaN column) makes the covariance NaN: the current omega stays
    best.jacobian[:, 3] = np.nan
    omega = _donor_sd_update(best, layout, n_donors=2, n_real=7, current=current)
    np.testing.assert_array_equal(omega, current)


def test_relative_decrement_tolerance_is_a_floor_that_scales_with_the_objective():
    from twin.calibrate import LMOptions

    r = jnp.full(200, 6.0)  # objective 0.5 |r|^2 = 3600
    assert float(LMOptions(decrement_tol=1e-4).threshold(r)) == 1e-4  # off by default
    relative = LMOptions(decrement_tol=1e-4, decrement_tol_relative=1e-7)
    assert float(relative.threshold(r)) == pytest.approx(3.6e-4)
    assert float(relative.threshold(jnp.ones(2))) == 1e-4  # small objectives: the absolute one


@pytest.mark.slow
def test_fit_donor_sd_refits_with_the_em_omega(virtual):
    """fit.fit_donor_sd: after the fit, omega is the EM update of its effects and the fit is
    redone with it; the calibration carries the new omega (one refit row per round)."""
    plain_settings = dataclasses.replace(
        CONFIG, n_starts=1, donor_sd_rounds=1, donor_sd_estimated=[]
    )
    plain = calibrate(virtual.run_data, plain_settings, progress=False)
    settings = dataclasses.replace(plain_settings, fit_donor_sd=True)
    result = calibrate(virtual.run_data, settings, progress=False)
    assert len(result.diagnostics) > len(plain.diagnostics)
    # The update from the first fit (the same fit as without the option): its effects and
    # their Laplace variances, which the calibration without the option reports.
    p, q = len(plain.fitted), len(plain.donor_level)
    variance = np.diag(plain.covariance)[p:].reshape(-1, q)
    expected = np.sqrt(np.mean(plain.donor_effects**2 + variance, axis=0))
    np.testing.assert_allclose(result.donor_sd, np.maximum(expected, 0.02), rtol=1e-6)
    assert not np.allclose(result.donor_sd, CONFIG.donor_sds())
    # fit.donor_sd_estimated: the same update for the parameters named, the others held
    first = plain.donor_level[0]
    settings = dataclasses.replace(settings, fit_donor_sd=False, donor_sd_estimated=[first])
    one = calibrate(virtual.run_data, settings, progress=False)
    np.testing.assert_allclose(one.donor_sd[1:], CONFIG.donor_sds()[1:], rtol=1e-12)
    np.testing.assert_allclose(one.donor_sd[0], max(expected[0], 0.02), rtol=1e-6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fitted": ["max_growth_rate_per_h", "growth"]}, r"fit.fitted\[1\]='growth'"),
        ({"donor_level": ["lysis_rate_per_h"]}, r"fit.donor_level\[0\]='lysis_rate_per_h'"),
        ({"donor_sd_by_parameter": {"activation_lag_h": -1.0}}, "donor_sd_by_parameter"),
        ({"n_starts": 0}, r"fit.n_starts=0"),
        ({"donor_sd_rounds": 0}, r"fit.donor_sd_rounds=0"),
        ({"decrement_tol_relative": -1.0}, r"fit.decrement_tol_relative=-1.0: must be >= 0"),
        ({"profile": ["lysis_rate_per_h"]}, r"fit.profile\[0\]"),
        ({"start_choice": "best"}, r"fit.start_choice='best': one of objective, forecast"),
        (
            {"donor_sd_estimated": ["lysis_rate"]},
            r"fit.donor_sd_estimated\[0\]='lysis_rate': not a kinetic parameter",
        ),
    ],
)
def test_bad_config_is_a_user_error(change, message):
    with pytest.raises(TwinInputError, match=message):
        check_calibration_config(dataclasses.replace(CONFIG, **change))


def load_calibrate_script():
    spec = importlib.util.spec_from_file_location(
        "calibrate", REPO_ROOT / "experiments/calibrate.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose_calibrate(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        return compose("calibrate", overrides=overrides)


def test_run_writes_outputs_and_the_file_round_trips(virtual, calibration, tmp_path):
    folder = write_run_data(virtual.run_data, tmp_path / "data")
    cfg = compose_calibrate([f"data_dir={folder}", "fit.n_starts=1", "progress=false"])
    out = tmp_path / "out"
    result = load_calibrate_script().run(cfg, out)
    expected = {"calibration.nc", "summary.csv", "residuals.png", "parameters.png"}
    expected |= {"convergence.csv", "residual_trends.csv"}
    assert expected <= {p.name for p in out.iterdir()}
    trends = pd.read_csv(out / "residual_trends.csv")
    assert set(trends["variable"]) <= set(MEASURED_VARIABLES)
    assert trends["readings"].sum() == (~result.observations["censored"]).sum()
    assert {f"fit_{v}.png" for v in MEASURED_VARIABLES} <= {p.name for p in out.iterdir()}
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns[:6]) == [
        "parameter",
        "unit",
        "estimate",
        "lower_95",
        "upper_95",
        "prior",
    ]
    # Both fits converged to the same optimum: within a small share of the posterior SD.
    posterior_sd = np.sqrt(np.diag(calibration.covariance))[: len(calibration.fitted)]
    np.testing.assert_array_less(
        np.abs(result.estimate - calibration.estimate), 0.05 * posterior_sd
    )

    loaded = load_calibration(out / "calibration.nc")
    assert loaded.fitted == result.fitted and loaded.donor_ids == result.donor_ids
    np.testing.assert_array_equal(loaded.covariance, result.covariance)
    np.testing.assert_array_equal(loaded.donor_effects, result.donor_effects)
    assert loaded.noise == result.noise and loaded.structure == result.structure
    assert loaded.solver == result.solver
    pd.testing.assert_frame_equal(loaded.summary(), result.summary())
    pd.testing.assert_frame_equal(loaded.diagnostics, result.diagnostics)
    pd.testing.assert_frame_equal(loaded.observations, result.observations)
    assert float(loaded.population.activation_lag_h) == float(result.population.activation_lag_h)
    assert "fit:" in loaded.config
    assert loaded.likelihood == result.likelihood
    with xr.open_dataset(out / "calibration.nc") as stored:
        assert stored.attrs["converged"] == int(result.converged)


def test_write_calibration_round_trips_discrepancy_and_selection(calibration, tmp_path):
    discrepancy = pd.DataFrame(
        {
            "variable": ["viable_cells", "viable_car_pos_cells"],
            "horizon_h": [48.0, 60.5],
            "bias": [0.1, -0.2],
            "scale": [1.5, 2.0],
            "n_runs": [30, 31],
        }
    )
    selection = pd.DataFrame(
        {
            "candidate": ["default", "decline=hill"],
            "forecast_error": [0.2, 0.1],
            "selected": [False, True],
        }
    )
    changed = dataclasses.replace(calibration, discrepancy=discrepancy, selection=selection)
    loaded = load_calibration(write_calibration(changed, tmp_path / "c.nc"))
    pd.testing.assert_frame_equal(loaded.discrepancy, discrepancy)
    pd.testing.assert_frame_equal(loaded.selection, selection)


def _file_from_before(
    calibration, tmp_path, parameter: str, missing_key: str | None = None, **structure_changes
) -> Path:
    """``calibration`` written as a file of an older model: without the kinetic ``parameter``,
    its structure attribute without ``missing_key`` and with ``structure_changes``."""
    import json

    path = write_calibration(calibration, tmp_path / "new.nc")
    with xr.open_dataset(path) as ds:
        old = ds.load().drop_sel(kinetic_parameter=parameter)
    structure = dict(json.loads(old.attrs["structure"]), **structure_changes)
    if missing_key is not None:
        del structure[missing_key]
    old.attrs["structure"] = json.dumps(structure)
    old.to_netcdf(tmp_path / "old.nc")
    return tmp_path / "old.nc"


def test_a_file_from_before_the_decline_floor_loads_without_it(calibration, tmp_path):
    """Files written before ``decline_floor`` existed have neither the key nor the parameter:
    they meant no floor, whatever today's default."""
    old = _file_from_before(calibration, tmp_path, "growth_decline_floor", "decline_floor")
    loaded = load_calibration(old)
    assert loaded.structure.decline_floor is False
    assert loaded.structure == dataclasses.replace(calibration.structure, decline_floor=False)


def test_a_file_from_before_the_mixed_uptake_loads_with_the_uptake_of_its_time(
    calibration, tmp_path
):
    """Files written before ``uptake=mixed`` was the default have no share parameter; one
    whose structure attribute lacks the key meant growth-coupled uptake."""
    old = _file_from_before(calibration, tmp_path, "uptake_capacity_share", "uptake")
    loaded = load_calibration(old)
    assert loaded.structure == dataclasses.replace(calibration.structure, uptake="growth")


@pytest.mark.parametrize("decline", ["exponential", "weibull"])
def test_a_file_from_before_the_weibull_shape_loads_where_its_structure_does_not_use_it(
    calibration, tmp_path, decline
):
    """A parameter added to the model since a file was written: the file loads (the parameter
    at its default) if its structure never reads it, else it is refused by name."""
    old = _file_from_before(calibration, tmp_path, "growth_decline_shape", decline=decline)
    if decline == "weibull":
        with pytest.raises(TwinInputError, match="parameters growth_decline_shape differ"):
            load_calibration(old)
        return
    loaded = load_calibration(old)
    assert loaded.structure.decline == "exponential"
    assert float(loaded.model_parameters.growth_decline_shape) == 1.0
    for name in ("activation_lag_h", "max_growth_rate_per_h"):
        assert float(getattr(loaded.model_parameters, name)) == float(
            getattr(calibration.model_parameters, name)
        )


def test_write_calibration_round_trips_profiles(calibration, tmp_path):
    profiles = pd.DataFrame(
        {
            "parameter": ["activation_lag_h"] * 3,
            "value_unconstrained": [3.2, 3.4, 3.6],
            "value": np.exp([3.2, 3.4, 3.6]),
            "objective": [calibration.objective + d for d in (3.0, 0.0, 3.0)],
            "converged": [True] * 3,
        }
    )
    with_profiles = dataclasses.replace(calibration, profiles=profiles)
    loaded = load_calibration(write_calibration(with_profiles, tmp_path / "c.nc"))
    pd.testing.assert_frame_equal(loaded.profiles, profiles)
    bounds = loaded.summary().set_index("parameter").loc["activation_lag_h"]
    assert np.exp(3.2) < bounds["profile_lower_95"] < np.exp(3.4) < bounds["profile_upper_95"]


def test_run_rejects_a_bad_parameter_name(tmp_path, virtual):
    folder = write_run_data(virtual.run_data, tmp_path / "data")
    cfg = compose_calibrate([f"data_dir={folder}", "fit.fitted=[activation_lag_h,oops]"])
    with pytest.raises(TwinInputError, match=r"fit.fitted\[1\]='oops'"):
        load_calibrate_script().run(cfg, tmp_path / "out")


# --- slow: exact comparisons that need their own compiles, and coverage --------------------------


@pytest.mark.slow
def test_structured_jacobian_equals_naive_jacfwd(setup):
    _, spec, data = setup
    layout = spec.layout
    rng = np.random.default_rng(1)
    x = np.concatenate(
        [np.asarray(data.prior.mean(layout)), np.zeros(layout.size - layout.n_population)]
    )
    x = jnp.asarray(x + 0.05 * rng.standard_normal(x.size))
    naive = jax.jit(jax.jacfwd(lambda x: residuals(x, data, spec, structured=False)))(x)
    structured = jax.jit(jax.jacfwd(lambda x: residuals(x, data, spec, structured=True)))(x)
    _, _, assembled = evaluate(x, spec, data)
    np.testing.assert_allclose(structured, naive, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(assembled, naive, rtol=1e-9, atol=1e-9)
    gradient = jax.jit(jax.grad(lambda x: objective(x, data, spec)))(x)
    _, r, _ = evaluate(x, spec, data)
    np.testing.assert_allclose(gradient, assembled.T @ r, rtol=1e-9, atol=1e-8)


@pytest.mark.slow
def test_failed_solves_give_a_large_finite_objective(setup):
    _, spec, data = setup
    layout = spec.layout
    x = np.concatenate(
        [np.asarray(data.prior.mean(layout)), np.zeros(layout.size - layout.n_population)]
    )
    x[layout.fitted.index("activation_lag_h")] -= 10.0  # a 5-second lag: too stiff for Tsit5
    result = jax.tree.map(np.asarray, fit_one(jnp.asarray(x), data, spec, EVALUATE))
    assert not result.run_success.any()  # every solve ran out of steps
    assert result.failed_evaluations == 1  # the start, the one point evaluated
    assert np.isfinite(result.objective) and np.all(np.isfinite(result.jacobian))
    assert np.max(np.abs(result.residuals)) == CONFIG.failure_residual


@pytest.mark.slow
def test_interval_coverage_over_repeated_datasets():
    """~95 % of population parameters inside their 95 % intervals over independent datasets."""
    inside = []
    for seed in range(100, 110):
        virtual = virtual_dataset(seed, n_donors=3, runs_per_donor=2)
        result = calibrate(
            virtual.run_data, dataclasses.replace(CONFIG, n_starts=1), progress=False
        )
        problem = build_problem(virtual.run_data)
        layout = ParameterLayout(result.fitted, result.donor_level, problem.n_donors_padded)
        truth = truth_vector(virtual, problem, layout)[: len(result.fitted)]
        sd = np.sqrt(np.diag(result.covariance))[: len(result.fitted)]
        inside.extend(np.abs(result.estimate - truth) < Z_95 * sd)
    assert np.mean(inside) >= 0.85, np.mean(inside)


@pytest.mark.slow
def test_structure_selection_ranks_candidates_and_keeps_the_winner(virtual, tmp_path):
    """Two candidates on the twin's own data: both fit, the table ranks them by their
    held-out forecast error, and the chosen structure travels in calibration.nc."""
    data = virtual_dataset(seed=12, n_donors=3, runs_per_donor=2).run_data
    config = dataclasses.replace(
        CONFIG,
        n_starts=1,
        select=["default", "decline=gaussian,lactate_toxicity_exponent=2"],
        discrepancy=DiscrepancySettings(horizons_h=(48.0,), n_draws=16),
    )
    result = calibrate(data, config, progress=False)
    table = result.selection
    assert list(table.columns)[:3] == ["candidate", "structure", "forecast_error"]
    assert sorted(table["candidate"]) == sorted(config.select) and table["selected"].sum() == 1
    errors = table["forecast_error"].to_numpy()
    assert np.all(np.isfinite(errors)) and errors[0] <= errors[1] * 1.01
    chosen = table.loc[table["selected"], "candidate"].item()
    expected = parse_candidate(chosen, ModelStructure(), "k")
    loaded = load_calibration(write_calibration(result, tmp_path / "c.nc"))
    assert loaded.structure == result.structure == expected


def test_starts_at_the_same_optimum_count_once_and_failed_ones_not_at_all():
    class End:  # an LM result as far as the start choice reads it
        def __init__(self, objective, gradient_norm=1.0, run_success=(True, True, False)):
            self.objective, self.gradient_norm = objective, gradient_norm
            self.run_success = np.array(run_success)  # the last run is padding

    outcomes = [(End(v), 0.0) for v in (5.0, 5.0 + 1e-5, 3.0, np.inf, 4.0, np.nan)]
    assert _distinct_optima(outcomes, n_runs=2) == [2, 4, 0]  # by objective; 1 is 0's optimum
    assert _distinct_optima([(End(np.inf), 0.0), (End(np.nan), 0.0)], n_runs=2) == []
    # stuck where a solve or its sensitivities failed: not an optimum, whatever its objective
    stuck = [(End(1.0, gradient_norm=np.nan), 0.0), (End(2.0, run_success=(True, False)), 0.0)]
    assert _distinct_optima([*stuck, (End(9.0), 0.0)], n_runs=2) == [2]


def test_the_best_forecast_wins_and_a_near_tie_goes_to_the_lower_tiebreak():
    assert best_forecast([0.20, 0.15, 0.30], [1.0, 2.0, 0.0]) == 1
    assert best_forecast([0.150, 0.1505, 0.30], [2.0, 1.0, 0.0]) == 1  # within 1 %
    assert best_forecast([np.nan, 0.2], [0.0, 1.0]) == 1
    assert best_forecast([np.nan, np.nan], [3.0, 1.0]) == 1  # no score: the lowest tiebreak


def _starts_cut_short(n_starts: int) -> tuple[RunData, CalibrationConfig]:
    """Six virtual runs (the discrepancy needs five or more) and starts stopped after three
    steps, spread widely, so that they end at different points."""
    data = virtual_dataset(seed=12, n_donors=3, runs_per_donor=2).run_data
    config = dataclasses.replace(
        CONFIG,
        n_starts=n_starts,
        start_spread=1.0,
        max_steps=3,
        continuations=0,
        start_choice="forecast",
        discrepancy=DiscrepancySettings(horizons_h=(48.0,), n_draws=16),
    )
    return data, config


@pytest.mark.slow
def test_start_choice_forecast_keeps_the_start_that_forecasts_its_training_runs_best():
    """Starts cut short end at different points: each is completed with its own discrepancy,
    the one with the lowest pseudo-backtest error is the estimate, and the diagnostics say so."""
    data, config = _starts_cut_short(n_starts=3)
    result = calibrate(data, config, progress=False)
    rows = result.diagnostics
    first = rows[rows["continuation"] == 0].set_index("start")
    assert len(first) == 3 and first["objective"].nunique() == 3
    errors = first["forecast_error"].to_numpy()
    assert np.isfinite(errors).all()
    kept = best_forecast(errors, first["objective"].to_numpy())
    assert rows["selected"].sum() == 1
    chosen = rows.loc[rows["selected"]].iloc[0]
    assert chosen["from_start"] == kept
    assert result.objective == pytest.approx(chosen["objective"], rel=1e-12)
    assert forecast_score(result.discrepancy) == pytest.approx(errors[kept], rel=1e-12)
    by_objective = calibrate(
        data, dataclasses.replace(config, start_choice="objective"), progress=False
    )
    assert by_objective.objective == pytest.approx(first["objective"].min(), rel=1e-12)


@pytest.mark.slow
def test_a_start_continued_to_an_optimum_already_completed_is_not_scored_again(monkeypatch):
    """Two starts end apart, but the second's continuation meets the first's optimum (forced
    here): one discrepancy is learnt, not two, and the diagnostics keep both starts' rows."""
    data, config = _starts_cut_short(n_starts=2)
    completions = []
    complete = calibrate_module._Fit.complete

    def complete_to_the_first(self, best, data, rows):
        completions.append(complete(self, best, data, rows))
        return completions[0]

    learnt = []
    with_discrepancy = calibrate_module._with_discrepancy

    def counted(calibration, *args):
        learnt.append(calibration.objective)
        return with_discrepancy(calibration, *args)

    monkeypatch.setattr(calibrate_module._Fit, "complete", complete_to_the_first)
    monkeypatch.setattr(calibrate_module, "_with_discrepancy", counted)
    result = calibrate(data, config, progress=False)
    assert len(completions) == 2  # both starts were completed ...
    assert learnt == [result.objective]  # ... and only one discrepancy was learnt
    rows = result.diagnostics
    assert set(rows["from_start"]) == {0, 1} and rows["selected"].sum() == 1
    assert result.discrepancy is not None


def test_fit_bands_follow_the_fit_and_cover_the_measurements(virtual, calibration):
    data = virtual.run_data
    last_h = data.measurements.groupby("run_id")["time_h"].max()
    assert last_h.nunique() == 1  # one grid for all runs: 1 h steps hit every sample time
    bands = fit_bands(calibration, data, n_times=int(last_h.iloc[0]) + 1, n_draws=64)
    merged = calibration.observations.merge(bands, on=["run_id", "variable", "time_h"])
    assert len(merged) == len(calibration.observations)
    # the dense trajectory at the sample times is the fit the calibration reports there
    np.testing.assert_allclose(merged["fitted"], merged["predicted"], rtol=1e-5)
    inside = (merged["observed"] >= merged["lower_90"]) & (merged["observed"] <= merged["upper_90"])
    assert 0.75 <= inside.mean() <= 1.0, inside.mean()  # a 90 % band of what is measured
    transduced = min(e.time_h for e in data.events_for("R01") if e.operation == "transduce")
    car = bands[(bands["run_id"] == "R01") & (bands["variable"] == "car_pos_fraction")]
    assert car.loc[car["time_h"] < transduced, "fitted"].isna().all()
    assert car.loc[car["time_h"] >= transduced, "fitted"].notna().all()
