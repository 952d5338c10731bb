"""Differentiable recipes: the traced schedule equals the checked one, and gradients are right."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import twin
from twin.process import (
    ExchangeStep,
    Recipe,
    pad_schedule,
    recipe_values,
    recipe_with_values,
    schedule_from_values,
)

SAVE = jnp.array([0.0, 100.0])
# Transduction away from the day-1 sample: at the same time the order of the two is a kink.
RECIPE = Recipe(transduction_time_h=30.0)


@jax.jit
def _harvest_car_pos(values):
    schedule = schedule_from_values(RECIPE, values)
    # Forward mode: compiles far faster than reverse mode through the solve (few inputs here).
    solver = twin.SolverSettings(adjoint="forward")
    trajectory = twin.simulate(twin.default_parameters(), schedule, SAVE, solver=solver)
    return twin.observables(trajectory.end_state)["viable_car_pos_cells"]


RECIPES = {
    "default": Recipe(),
    "early harvest drops late events": Recipe(transduction_time_h=30.0, harvest_time_h=150.0),
    "moved exchange": Recipe(exchanges=[ExchangeStep(100.0, 0.7), ExchangeStep(170.0, 0.4)]),
}


@pytest.mark.parametrize("name", RECIPES)
def test_traced_schedule_matches_checked_recipe(name):
    recipe = RECIPES[name]
    values = recipe_values(recipe)
    traced = schedule_from_values(recipe, values)
    checked = recipe_with_values(recipe, values).schedule()
    padded = pad_schedule(checked, traced.n_events)
    live = np.asarray(traced.operation) != 0
    np.testing.assert_array_equal(np.asarray(traced.operation)[live], np.asarray(checked.operation))
    params = twin.default_parameters()
    a = twin.observables(twin.simulate(params, traced, SAVE).end_state)
    b = twin.observables(twin.simulate(params, padded, SAVE).end_state)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-12, err_msg=key)


def test_values_round_trip_through_a_recipe():
    recipe = Recipe()
    values = recipe_values(recipe)
    again = recipe_values(recipe_with_values(recipe, values))
    for key in values:
        np.testing.assert_array_equal(values[key], again[key])


@pytest.mark.parametrize(
    ("key", "index", "step"),
    [("moi", None, 1e-3), ("transduction_delay_h", None, 1e-3), ("exchange_fraction", 1, 1e-4)],
)
def test_gradient_of_harvest_yield_matches_finite_differences(key, index, step):
    values = recipe_values(RECIPE)
    grad = jax.jacfwd(_harvest_car_pos)(values)[key]
    grad = grad if index is None else grad[index]

    def shifted(delta):
        x = values[key]
        x = x + delta if index is None else x.at[index].add(delta)
        return float(_harvest_car_pos({**values, key: x}))

    finite = (shifted(step) - shifted(-step)) / (2 * step)
    np.testing.assert_allclose(float(grad), finite, rtol=2e-3)


def test_vmap_over_values_matches_loop():
    values = recipe_values(RECIPE)
    mois = jnp.array([2.0, 5.0, 9.0])
    batched = jax.vmap(lambda m: _harvest_car_pos({**values, "moi": m}))(mois)
    looped = [_harvest_car_pos({**values, "moi": m}) for m in mois]
    np.testing.assert_allclose(batched, np.asarray(looped), rtol=1e-10)
