"""Selectable model structures: the rate-law forms, their checks, and candidate parsing."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import twin
from twin import TwinInputError
from twin.calibrate._select import parse_candidate, rank_candidates
from twin.kinetics import ModelStructure, default_parameters
from twin.kinetics._parameters import SPECS
from twin.kinetics._state import _FORM_PARAMETERS
from twin.kinetics._vector_field import (
    age_decline,
    culture_vector_field,
    death_rate_per_h,
    density_limit,
)
from twin.process import Recipe
from twin.reference import ReferenceSolver

PARAMS = default_parameters()


@pytest.mark.parametrize(
    ("changes", "at_decline_time"),
    [
        ({}, np.exp(-1.0)),
        ({"decline": "hill", "decline_exponent": 3.0}, 0.5),
        ({"decline": "gaussian"}, np.exp(-1.0)),
        ({"decline": "weibull"}, np.exp(-1.0)),
    ],
)
def test_decline_forms_closed_forms(changes, at_decline_time):
    structure = ModelStructure(**changes, decline_floor=False)  # the forms alone
    T = float(PARAMS.growth_decline_time_h)
    assert float(age_decline(jnp.asarray(0.0), PARAMS, structure)) == 1.0
    assert float(age_decline(jnp.asarray(T), PARAMS, structure)) == pytest.approx(at_decline_time)
    # Shapes differ where they should: at T/2 Gaussian > exponential, Hill(3) > exponential.
    half = float(age_decline(jnp.asarray(T / 2), PARAMS, structure))
    if changes and changes["decline"] != "weibull":
        assert half > np.exp(-0.5)


def test_weibull_decline_nests_exponential_and_gaussian_with_a_finite_shape_gradient():
    ages = jnp.asarray([0.0, 1.0, 60.0, 240.0, 500.0])
    weibull = ModelStructure(decline="weibull", decline_floor=False)

    def decline(structure, shape=1.0):
        params = PARAMS.replace(growth_decline_shape=shape)
        return jax.vmap(lambda a: age_decline(a, params, structure))(ages)

    np.testing.assert_allclose(
        decline(weibull, 1.0),
        decline(ModelStructure(decline="exponential", decline_floor=False)),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        decline(weibull, 2.0),
        decline(ModelStructure(decline="gaussian", decline_floor=False)),
        rtol=1e-12,
    )
    # d/dk exp(-s^k) = -exp(-s^k) s^k log s: 0 at activation (not 0 * log 0 = NaN), and the
    # closed form elsewhere.
    grad = jax.vmap(
        jax.grad(lambda k, a: age_decline(a, PARAMS.replace(growth_decline_shape=k), weibull)),
        in_axes=(None, 0),
    )(1.7, ages)
    s = np.asarray(ages) / float(PARAMS.growth_decline_time_h)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.where(s > 0, -np.exp(-(s**1.7)) * s**1.7 * np.log(s), 0.0)
    np.testing.assert_allclose(grad, expected, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize(
    "changes",
    [
        {"decline": "exponential"},
        {"decline": "hill", "decline_exponent": 3.0},
        {"decline": "gaussian"},
        {"decline": "weibull"},
    ],
)
def test_decline_floor_closed_form(changes):
    """floor + (1 - floor) x form: 1 at activation, the form's own value rescaled in between,
    and the floor itself, not 0, long after the decline time."""
    floor = 0.2
    params = PARAMS.replace(growth_decline_floor=floor)
    ages = jnp.asarray([0.0, 60.0, 240.0, 700.0, 1e7])
    with_floor = jax.vmap(
        lambda a: age_decline(a, params, ModelStructure(**changes, decline_floor=True))
    )(ages)
    without = jax.vmap(
        lambda a: age_decline(a, params, ModelStructure(**changes, decline_floor=False))
    )(ages)
    np.testing.assert_allclose(with_floor, floor + (1.0 - floor) * without, rtol=1e-12)
    assert float(with_floor[0]) == 1.0
    assert float(with_floor[-1]) == pytest.approx(floor, rel=1e-6)
    assert float(without[-1]) < 1e-6


def test_decline_floor_must_be_a_boolean():
    with pytest.raises(ValueError, match="decline_floor='yes': must be true or false"):
        ModelStructure(decline_floor="yes")


@pytest.mark.parametrize(
    ("parameter", "changes"),
    [
        ("growth_decline_floor", {}),
        ("growth_decline_floor", {"decline_floor": False}),
        ("growth_decline_floor", {"decline": "gaussian", "decline_floor": True}),
        ("growth_decline_floor", {"decline_floor": True}),
        ("growth_decline_shape", {"decline": "exponential"}),
        ("growth_decline_shape", {"decline": "hill"}),
        ("growth_decline_shape", {"decline": "gaussian"}),
        ("growth_decline_shape", {"decline": "weibull"}),
        ("density_limit_exponent", {"density": "hill"}),
        ("density_limit_exponent", {"density": "logistic"}),
        ("density_limit_exponent", {"density": "hill_fitted"}),
        ("uptake_capacity_share", {"uptake": "growth"}),
        ("uptake_capacity_share", {"uptake": "capacity"}),
        ("uptake_capacity_share", {"uptake": "mixed"}),
    ],
)
def test_unused_parameters_are_exactly_those_the_culture_does_not_feel(parameter, changes):
    """What calibration leaves out (``unused_parameters``) has no effect on any state through
    the default recipe, and the fitted shapes have one where they are used."""
    structure = ModelStructure(**changes)
    schedule = Recipe().schedule()
    times = np.array([100.0, 190.0])

    def log_cells(value):
        params = PARAMS.replace(**{parameter: value})
        return jnp.log(twin.simulate(params, schedule, times, structure).states.viable).sum()

    # A value away from the default, inside the parameter's domain (a fraction for logit).
    value = 0.3 if SPECS[parameter].transform == "logit" else 1.3
    slope = float(jax.grad(log_cells)(value))
    if parameter in structure.unused_parameters:
        assert slope == 0.0
    else:
        assert abs(slope) > 1e-2, slope
    assert set(structure.unused_parameters) <= set(_FORM_PARAMETERS)


def test_calibration_leaves_out_what_the_structure_does_not_use():
    from twin.calibrate import CalibrationConfig
    from twin.calibrate._calibrate import _drop_unused

    config = CalibrationConfig(
        donor_level=["max_growth_rate_per_h", "growth_decline_shape"],
        profile=["growth_decline_shape"],
    )
    # The default fits the default forms' shapes (Weibull, floor, uptake share).
    assert set(ModelStructure().form_parameters) <= set(config.fitted)
    assert _drop_unused(config, ModelStructure(decline_floor=True)) is config
    kept = _drop_unused(config, ModelStructure(decline="gaussian", decline_floor=False))
    shapes = ("growth_decline_shape", "growth_decline_floor")
    assert kept.fitted == [n for n in config.fitted if n not in shapes]
    assert kept.donor_level == ["max_growth_rate_per_h"] and kept.profile == []


def test_a_form_whose_shape_is_not_fitted_is_named(caplog):
    from twin.calibrate import CalibrationConfig
    from twin.calibrate._calibrate import _warn_held_forms

    structure = ModelStructure(density="hill_fitted", decline_floor=True)
    assert structure.form_parameters == (
        "growth_decline_shape",
        "growth_decline_floor",
        "density_limit_exponent",
        "uptake_capacity_share",
    )
    config = CalibrationConfig()
    with caplog.at_level("WARNING"):
        _warn_held_forms(config, ModelStructure())
        assert not caplog.records  # the default fit estimates the default forms' shapes
        _warn_held_forms(config, structure)
    assert "reads density_limit_exponent, which fit.fitted does not estimate" in caplog.text
    caplog.clear()
    fitted = [*config.fitted, "density_limit_exponent"]
    _warn_held_forms(dataclasses.replace(config, fitted=fitted), structure)
    assert not caplog.records


def test_density_forms_halve_at_the_half_density():
    K = float(PARAMS.density_half_cells_per_mL)
    for structure in (
        ModelStructure(),
        ModelStructure(density="logistic"),
        ModelStructure(density_exponent=1),
    ):
        assert float(density_limit(jnp.asarray(K), PARAMS, structure)) == pytest.approx(0.5)
    assert (
        float(density_limit(jnp.asarray(3 * K), PARAMS, ModelStructure(density="logistic"))) == 0.0
    )


def test_fitted_density_exponent_nests_the_hill_forms_with_a_finite_gradient():
    densities = jnp.asarray([0.0, 1e5, 5e6, 1e7, 3e7])
    fitted = ModelStructure(density="hill_fitted")

    def limit(structure, exponent=2.0):
        params = PARAMS.replace(density_limit_exponent=exponent)
        return jax.vmap(lambda x: density_limit(x, params, structure))(densities)

    np.testing.assert_allclose(limit(fitted, 2.0), limit(ModelStructure()), rtol=1e-12)
    np.testing.assert_allclose(
        limit(fitted, 1.0), limit(ModelStructure(density_exponent=1)), rtol=1e-12
    )
    # d/dn 1/(1+s^n) = -s^n log(s) / (1+s^n)^2: 0 in an empty culture (not NaN).
    grad = jax.vmap(
        jax.grad(lambda n, x: density_limit(x, PARAMS.replace(density_limit_exponent=n), fitted)),
        in_axes=(None, 0),
    )(1.6, densities)
    s = np.asarray(densities) / float(PARAMS.density_half_cells_per_mL)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.where(s > 0, -(s**1.6) * np.log(s) / (1 + s**1.6) ** 2, 0.0)
    np.testing.assert_allclose(grad, expected, rtol=1e-10, atol=1e-15)


def test_mixed_uptake_interpolates_the_two_couplings_exactly():
    """Glucose uptake is linear in what its growth-associated part follows, so the mixed
    coupling's glucose and lactate rates are ``(1 - s)`` the realized coupling's plus ``s`` the
    potential one's, exactly, and its ends are the two forms; the rest of the culture does
    not depend on the coupling."""
    schedule = Recipe().schedule()
    # A mid-expansion state: activated, transduced, growth slowed by age, density and lactate.
    state = jax.tree.map(lambda x: x[0], twin.simulate(PARAMS, schedule, np.array([150.0])).states)

    def rates(uptake, share=0.3):
        params = PARAMS.replace(uptake_capacity_share=share)
        return culture_vector_field(0.0, state, params, ModelStructure(uptake=uptake))

    growth, capacity = rates("growth"), rates("capacity")
    assert float(capacity.glucose_mM) < 1.5 * float(growth.glucose_mM)  # the forms differ
    for share in (0.0, 0.3, 1.0):
        mixed = rates("mixed", share)
        for name in ("glucose_mM", "lactate_mM"):
            expected = (1 - share) * getattr(growth, name) + share * getattr(capacity, name)
            np.testing.assert_allclose(getattr(mixed, name), expected, rtol=1e-12)
        np.testing.assert_array_equal(mixed.susceptible, growth.susceptible)
        np.testing.assert_array_equal(mixed.dead, growth.dead)


def test_structure_checks_name_the_field_and_value():
    with pytest.raises(ValueError, match="decline='linear': choose one of exponential, hill"):
        ModelStructure(decline="linear")
    with pytest.raises(
        ValueError, match=r"lactate_toxicity_exponent=0.5: must be a number in \[1, 8\]"
    ):
        ModelStructure(lactate_toxicity_exponent=0.5)
    assert hash(ModelStructure(decline="hill")) == hash(ModelStructure(decline="hill"))


def test_candidates_parse_and_bad_ones_are_named():
    base = ModelStructure()
    assert parse_candidate("default", base, "fit.select[0]") == base
    parsed = parse_candidate("decline=hill, lag_stages=8,lactate_toxicity_exponent=2", base, "k")
    assert parsed == dataclasses.replace(
        base, decline="hill", lag_stages=8, lactate_toxicity_exponent=2.0
    )
    assert parsed.describe() == "lag_stages=8,decline=hill,lactate_toxicity_exponent=2.0"
    with pytest.raises(TwinInputError, match=r"fit.select\[2\]='shape=hill'"):
        parse_candidate("shape=hill", base, "fit.select[2]")
    with pytest.raises(TwinInputError, match="lag_stages='many' is not a int"):
        parse_candidate("lag_stages=many", base, "k")
    with pytest.raises(TwinInputError, match="choose one of"):
        parse_candidate("density=cubic", base, "k")
    # Booleans by name, as Hydra writes them (bool("false") would be True).
    assert parse_candidate("decline_floor=false", base, "k").decline_floor is False
    no_floor = dataclasses.replace(base, decline_floor=False)
    assert parse_candidate("decline_floor=True", no_floor, "k").decline_floor is True
    with pytest.raises(TwinInputError, match="decline_floor='1' is not a bool"):
        parse_candidate("decline_floor=1", base, "k")


@pytest.mark.parametrize("exponent", [2.0, 4.0])
def test_starvation_death_is_a_hill_function_of_glucose(exponent):
    """Starvation adds half its maximal rate at ``starvation_glucose_mM`` whatever the
    exponent, and ``1 / (1 + 2^n)`` of it at twice that."""
    structure = ModelStructure(starvation_exponent=exponent)
    state = twin.kinetics.empty_state(structure)
    half = float(PARAMS.starvation_glucose_mM)

    def extra_death(glucose_mM):
        starved = dataclasses.replace(state, glucose_mM=jnp.asarray(glucose_mM))
        fed = dataclasses.replace(state, glucose_mM=jnp.asarray(1e6))
        return float(
            death_rate_per_h(starved, PARAMS, structure) - death_rate_per_h(fed, PARAMS, structure)
        )

    k_s = float(PARAMS.starvation_death_rate_per_h)
    assert extra_death(half) == pytest.approx(0.5 * k_s, rel=1e-9)
    assert extra_death(2 * half) == pytest.approx(k_s / (1 + 2**exponent), rel=1e-9)


def test_every_non_default_form_matches_the_reference_solver():
    """All alternative forms at once (one compile): the twin's solve equals SciPy's DOP853 on
    the same vector field through every event of the default recipe."""
    structure = ModelStructure(
        lag_stages=6,
        decline="hill",
        decline_exponent=3.0,
        lactate_inhibition_exponent=1.0,
        lactate_toxicity_exponent=2.0,
        starvation_exponent=2.0,
        decline_floor=True,
        density="logistic",
        uptake="mixed",
    )
    schedule = Recipe().schedule()
    times = np.array([0.0, 30.0, 60.0, 100.0, 150.0, 190.0])
    fine = twin.SolverSettings(rtol=1e-10, atol=1e-12, max_steps=100_000)
    ours = twin.simulate(PARAMS, schedule, times, structure, fine)
    reference, _ = ReferenceSolver(structure).solve(PARAMS, schedule, times)
    expected = jax.tree.map(lambda *x: np.stack(x), *reference)
    # atol 1e-8 (mM, millions of cells): glucose ends near 0.005 mM, where the two solvers'
    # absolute errors (about 6e-9 mM with the softer starvation) exceed 1e-6 of the value.
    for name in ("resting", "lag", "susceptible", "glucose_mM", "lactate_mM", "dead"):
        np.testing.assert_allclose(
            getattr(ours.states, name), getattr(expected, name), rtol=1e-6, atol=1e-8
        )
    # ... and the forms matter: the default structure gives a clearly different culture.
    default = twin.simulate(PARAMS, schedule, times, ModelStructure(), fine)
    assert abs(float(default.states.glucose_mM[-1]) - float(ours.states.glucose_mM[-1])) > 0.5


def test_ranking_prefers_the_lower_forecast_error_then_bic():
    class Fake:
        def __init__(self, error, objective):
            import pandas as pd

            self.discrepancy = pd.DataFrame(
                {"variable": ["viable_car_pos_cells"], "mean_abs_error": [error]}
            )
            self.objective, self.fitted, self.n_observations = objective, ("a", "b"), 100
            self.structure, self.converged = ModelStructure(), True

    chosen, table = rank_candidates(
        ["x", "y", "z"], [Fake(0.3, 50), Fake(0.2, 90), Fake(0.201, 60)]
    )
    assert chosen == 2  # within 1 % of the best error, and a lower BIC
    assert list(table["candidate"]) == ["y", "z", "x"] and table["selected"].sum() == 1
