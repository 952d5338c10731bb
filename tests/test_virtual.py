"""Virtual batches (twin.virtual): assay noise, donor variation, designs and whole datasets."""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from twin import TwinInputError
from twin.assays import AssayNoise, assay_residual, sample_assay, to_assay_scale
from twin.data import read_run_data, write_run_data
from twin.kinetics import PARAMETER_NAMES, PARAMETER_TABLE, default_parameters
from twin.process import ExchangeStep, Recipe
from twin.virtual import design_recipes, generate_dataset, sample_donor_parameters

N_DRAWS = 20_000
TOLERANCE = 0.05  # relative, on the SD; the sampling error of an SD over 20000 draws is 0.5 %


# --- assay noise -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "true_value"),
    [
        ("viable_cells", 1.0e9),  # log scale, far above the 1e4-cell floor
        ("il2_IU_per_mL", 500.0),  # log scale, far above the 0.5 IU/mL floor
        ("viability", 0.9),  # logit scale
        ("car_pos_fraction", 0.3),  # logit scale
    ],
)
def test_sampled_noise_has_the_configured_sd_on_the_assay_scale(variable, true_value):
    sd = AssayNoise().sd(variable)
    truth = jnp.full((N_DRAWS,), true_value)
    measured = sample_assay(jax.random.PRNGKey(0), variable, truth, sd)
    z = np.asarray(to_assay_scale(variable, measured) - to_assay_scale(variable, truth))
    # Unbiased on the assay scale, with the configured spread.
    assert abs(z.mean()) < TOLERANCE * sd
    assert z.std(ddof=1) == pytest.approx(sd, rel=TOLERANCE)


def test_sampled_noise_is_unbiased_near_the_detection_floor():
    variable, sd = "glucose_mM", AssayNoise().glucose_mM
    truth = jnp.full((N_DRAWS,), 1.0)  # 20 x the 0.05 mM floor: a nearly spent medium
    measured = sample_assay(jax.random.PRNGKey(0), variable, truth, sd)
    residual = np.asarray(assay_residual(variable, measured, truth))
    assert abs(residual.mean()) < TOLERANCE * sd
    assert residual.std(ddof=1) == pytest.approx(sd, rel=TOLERANCE)


@pytest.mark.parametrize("variable", ["viability", "car_pos_fraction"])
def test_measured_fractions_stay_inside_zero_one(variable):
    # True values at and beyond the bounds, with a large SD: draws must still lie in (0, 1).
    truth = jnp.repeat(jnp.array([0.0, 1e-6, 0.5, 1.0 - 1e-6, 1.0]), N_DRAWS // 5)
    measured = np.asarray(sample_assay(jax.random.PRNGKey(1), variable, truth, 1.0))
    assert np.all((measured > 0) & (measured < 1))


@pytest.mark.parametrize("variable", ["viable_cells", "glucose_mM", "vcn_per_cell"])
def test_measured_counts_and_concentrations_are_never_negative(variable):
    # value + floor is log-normal: a true zero (VCN before transduction, glucose exhausted)
    # reads 0 (below detection) in half the draws and a small positive value otherwise.
    truth = jnp.repeat(jnp.array([0.0, 1e-3, 1.0, 1e9]), N_DRAWS // 4)
    measured = np.asarray(sample_assay(jax.random.PRNGKey(2), variable, truth, 0.5))
    assert np.all(np.isfinite(measured))
    assert np.all(measured >= 0)
    below_detection = np.mean(measured[: N_DRAWS // 4] == 0)
    assert below_detection == pytest.approx(0.5, abs=0.03)
    assert np.all(measured[-N_DRAWS // 4 :] > 0)


# --- donor variation ---------------------------------------------------------------------------

DONOR_SD = {"max_growth_rate_per_h": 0.15, "activation_efficiency": 0.5}


def test_parameters_without_donor_sd_are_identical_across_donors():
    population = default_parameters()
    donors = sample_donor_parameters(jax.random.PRNGKey(3), population, DONOR_SD, 50)
    for name in PARAMETER_NAMES:
        values = np.asarray(getattr(donors, name))
        assert values.shape == (50,)
        if name in DONOR_SD:
            assert len(np.unique(values)) == 50, name
        else:  # exact: no round trip through the log/logit transform
            assert np.all(values == np.asarray(getattr(population, name))), name


def test_explicit_zero_donor_sd_keeps_the_parameter_exact():
    population = default_parameters()
    donors = sample_donor_parameters(
        jax.random.PRNGKey(4), population, {"activation_lag_h": 0.0}, 10
    )
    assert np.all(np.asarray(donors.activation_lag_h) == float(population.activation_lag_h))


def test_donor_spread_matches_the_configured_sd_on_the_estimation_scale():
    population = default_parameters()
    donors = sample_donor_parameters(jax.random.PRNGKey(5), population, DONOR_SD, N_DRAWS)
    transform = {spec.name: spec.transform for spec in PARAMETER_TABLE}
    for name, sd in DONOR_SD.items():
        centre = float(getattr(population, name))
        values = np.asarray(getattr(donors, name))
        if transform[name] == "log":
            z, z0 = np.log(values), np.log(centre)
        else:
            z, z0 = np.log(values / (1 - values)), np.log(centre / (1 - centre))
        assert z.std(ddof=1) == pytest.approx(sd, rel=TOLERANCE), name
        assert abs(z.mean() - z0) < TOLERANCE * sd, name


def test_unknown_or_negative_donor_sd_is_rejected():
    population = default_parameters()
    with pytest.raises(TwinInputError, match="population.donor_sd.*max_growth_rate"):
        sample_donor_parameters(jax.random.PRNGKey(0), population, {"max_growth_rate": 0.1}, 2)
    with pytest.raises(TwinInputError, match=r"population.donor_sd.activation_lag_h=-0.1"):
        sample_donor_parameters(jax.random.PRNGKey(0), population, {"activation_lag_h": -0.1}, 2)


# --- designs -------------------------------------------------------------------------------------


def test_grid_cycles_through_the_cartesian_product_in_order():
    grid = {"moi": [2.0, 5.0], "harvest_time_h": [168.0, 192.0]}
    recipes = design_recipes(Recipe(), 6, np.random.default_rng(0), grid=grid)
    got = [(r.moi, r.harvest_time_h) for r in recipes]
    product = [(2.0, 168.0), (2.0, 192.0), (5.0, 168.0), (5.0, 192.0)]
    assert got == product + product[:2]
    # Fields outside the design keep the base recipe's values.
    assert all(r.seed_cells == Recipe().seed_cells for r in recipes)


def test_uniform_draws_lie_in_their_bounds_and_vary():
    uniform = {"moi": [2.0, 10.0], "seed_cells": [6.0e7, 1.5e8], "exchange_fraction": [0.3, 0.7]}
    recipes = design_recipes(Recipe(), 200, np.random.default_rng(1), uniform=uniform)
    mois = np.array([r.moi for r in recipes])
    cells = np.array([r.seed_cells for r in recipes])
    fractions = np.array([[step.fraction for step in r.exchanges] for r in recipes])
    assert np.all((mois >= 2.0) & (mois <= 10.0))
    assert np.all((cells >= 6.0e7) & (cells <= 1.5e8))
    assert np.all((fractions >= 0.3) & (fractions <= 0.7))
    assert np.all(fractions == fractions[:, :1])  # one fraction for all exchanges of a run
    assert len(np.unique(mois)) == 200
    assert mois.max() - mois.min() > 6.0  # spread over the range, not stuck at one end


def test_design_draws_are_seeded():
    uniform = {"moi": [2.0, 10.0]}
    first = design_recipes(Recipe(), 5, np.random.default_rng(7), uniform=uniform)
    again = design_recipes(Recipe(), 5, np.random.default_rng(7), uniform=uniform)
    assert first == again


@pytest.mark.parametrize("source", ["grid", "uniform"])
def test_unknown_design_field_names_its_config_key(source):
    values = [1.0, 2.0]
    with pytest.raises(TwinInputError, match=rf"design\.{source}\.mio\b") as error:
        design_recipes(Recipe(), 2, np.random.default_rng(0), **{source: {"mio": values}})
    assert "moi" in str(error.value)  # the valid fields are listed


def test_bad_uniform_range_and_overlap_are_rejected():
    with pytest.raises(TwinInputError, match=r"design\.uniform\.moi"):
        design_recipes(Recipe(), 2, np.random.default_rng(0), uniform={"moi": [10.0, 2.0]})
    with pytest.raises(TwinInputError, match="both design.grid and design.uniform"):
        design_recipes(
            Recipe(), 2, np.random.default_rng(0), grid={"moi": [2.0]}, uniform={"moi": [1, 3]}
        )


def test_steps_after_a_drawn_harvest_are_dropped_and_harvest_is_sampled():
    base = Recipe(
        exchanges=[ExchangeStep(t, 0.5) for t in (120.0, 144.0, 168.0, 192.0, 216.0)],
        sample_times_h=[24.0 * day for day in range(1, 11)],
        harvest_time_h=240.0,
    )
    recipes = design_recipes(
        base, 20, np.random.default_rng(2), uniform={"harvest_time_h": [130.0, 230.0]}
    )
    for recipe in recipes:
        harvest = recipe.harvest_time_h
        assert all(step.time_h < harvest for step in recipe.exchanges)
        assert all(step.time_h < harvest for step in recipe.feeds)
        assert [s.time_h for s in recipe.exchanges] == [
            s.time_h for s in base.exchanges if s.time_h < harvest
        ]
        assert max(recipe.sample_times_h) == harvest  # a sample is taken at harvest
        assert recipe.sample_times_h == sorted(recipe.sample_times_h)
        assert set(recipe.sample_times_h) - {harvest} == {
            t for t in base.sample_times_h if t < harvest
        }
        events = recipe.events(capacity_ml=1000.0)  # a valid batch record
        assert events[-1].operation == "harvest"
        assert [e.time_h for e in events if e.operation == "sample"][-1] == harvest


# --- whole datasets ------------------------------------------------------------------------------

GENERATE = dict(
    population=default_parameters(),
    donor_sd={"max_growth_rate_per_h": 0.15, "base_death_rate_per_h": 0.3},
    base_recipe=Recipe(),
    n_donors=2,
    runs_per_donor=2,
    grid={"moi": [2.0, 8.0]},
    uniform={"seed_cells": [6.0e7, 1.5e8]},
)


@pytest.fixture(scope="module")
def virtual():
    return generate_dataset(0, **GENERATE)


def test_generated_dataset_survives_a_write_read_round_trip(virtual, tmp_path):
    data = virtual.run_data
    assert data.run_ids == ["R001", "R002", "R003", "R004"]
    assert data.runs["donor_id"].tolist() == ["D01", "D01", "D02", "D02"]
    assert set(data.measurements["run_id"]) == set(data.run_ids)
    back = read_run_data(write_run_data(data, tmp_path / "ds"))
    for table in ("runs", "events", "measurements"):
        pd.testing.assert_frame_equal(getattr(back, table), getattr(data, table))


def test_generated_runs_follow_their_recipes(virtual):
    data = virtual.run_data
    for run_id, recipe in zip(data.run_ids, virtual.recipes, strict=True):
        events = data.events_for(run_id)
        assert events == recipe.events()
        measured = data.measurements_for(run_id)
        assert set(measured["time_h"]) <= set(recipe.sample_times_h)
        assert recipe.harvest_time_h in set(measured["time_h"])
        car = measured[measured["variable"] == "car_pos_fraction"]
        assert len(car) > 0
        assert car["time_h"].min() >= recipe.transduction_time_h + 48.0  # read-out delay
    assert [r.moi for r in virtual.recipes] == [2.0, 8.0, 2.0, 8.0]


def test_split_donor_runs_share_parameters(virtual):
    truth = virtual.true_parameters.set_index("run_id")
    assert truth.loc[["R001", "R002"], "donor_id"].tolist() == ["D01", "D01"]
    pd.testing.assert_series_equal(truth.loc["R001"], truth.loc["R002"], check_names=False)
    pd.testing.assert_series_equal(truth.loc["R003"], truth.loc["R004"], check_names=False)
    # Donors differ in the varied parameters only.
    varied = list(GENERATE["donor_sd"])
    assert np.all(truth.loc["R001", varied] != truth.loc["R003", varied])
    shared = [name for name in PARAMETER_NAMES if name not in varied]
    assert truth.loc["R001", shared].equals(truth.loc["R003", shared])


def test_same_seed_same_data_and_different_seed_different_data(virtual):
    again = generate_dataset(0, **GENERATE)
    for table in ("runs", "events", "measurements"):
        pd.testing.assert_frame_equal(
            getattr(again.run_data, table), getattr(virtual.run_data, table)
        )
    pd.testing.assert_frame_equal(again.true_parameters, virtual.true_parameters)

    other = generate_dataset(1, **GENERATE)
    assert not np.allclose(
        other.run_data.measurements["value"], virtual.run_data.measurements["value"]
    )
    varied = list(GENERATE["donor_sd"])
    assert not np.allclose(other.true_parameters[varied], virtual.true_parameters[varied])
    assert other.recipes != virtual.recipes  # the uniform design is redrawn


def test_bad_dataset_sizes_are_rejected():
    settings = {**GENERATE, "n_donors": 0}
    with pytest.raises(TwinInputError, match="n_donors=0"):
        generate_dataset(0, **settings)


def test_recipes_are_left_unchanged_by_the_design():
    base = Recipe()
    before = copy.deepcopy(base)
    design_recipes(base, 3, np.random.default_rng(0), grid={"harvest_time_h": [100.0]})
    assert base == before
