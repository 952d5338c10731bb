"""Cell and volume bookkeeping over whole recipes (samples, feeds and exchanges included).

viable + dead + lysed + removed - born is invariant (the cells seeded), volume follows the feeds
and samples exactly, and no compartment goes negative.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from twin import ModelStructure, SolverSettings, default_parameters, simulate
from twin.process import ExchangeStep, FeedStep, Recipe, pad_schedule

N_SLOTS = 24  # room for the busiest recipe below; all runs share one compile
TIGHT = SolverSettings(rtol=1e-10, atol=1e-12)
STRUCTURE = ModelStructure()
SAVE_TIMES = np.linspace(0.0, 192.0, 17)  # every 12 h, event times included

RECIPES = {
    "default": Recipe(),
    "busy": Recipe(
        seed_cells=5.0e7,
        seed_viability=0.8,
        seed_volume_ml=80.0,
        moi=3.0,
        transduction_time_h=30.0,
        exchanges=[ExchangeStep(60.0, 0.3), ExchangeStep(110.0, 0.7), ExchangeStep(150.0, 0.5)],
        feeds=[FeedStep(48.0, 40.0), FeedStep(84.0, 120.0), FeedStep(130.0, 200.0)],
        sample_times_h=[12.0, 36.0, 60.0, 84.0, 108.0, 132.0, 156.0, 180.0, 192.0],
        sample_volume_ml=3.0,
    ),
    # no feeding: the culture runs out of glucose (starvation death, lysis dominate late)
    "starving": Recipe(
        seed_cells=2.0e8,
        exchanges=[],
        feeds=[],
        sample_times_h=[48.0, 96.0, 144.0],
        sample_volume_ml=2.0,
    ),
}
PARAMS = {
    "default": default_parameters(),
    "busy": default_parameters(),
    "starving": default_parameters(max_growth_rate_per_h=0.06, lysis_rate_per_h=0.05),
}


@pytest.fixture(scope="module")
def runs():
    """One simulation per recipe (compiled once: same slot count and save times)."""
    out = {}
    for name, recipe in RECIPES.items():
        schedule = pad_schedule(recipe.schedule(), N_SLOTS)
        trajectory = simulate(PARAMS[name], schedule, jnp.asarray(SAVE_TIMES), STRUCTURE, TIGHT)
        out[name] = (recipe, jax.tree.map(np.asarray, trajectory))
    return out


def invariant(state):
    return state.viable + state.dead + state.lysed + state.removed - state.born


@pytest.mark.parametrize("name", list(RECIPES))
def test_solves(runs, name):
    _, trajectory = runs[name]
    assert bool(trajectory.success)
    assert np.all(np.isfinite(jax.tree.leaves(trajectory.states)[0]))


@pytest.mark.parametrize("name", list(RECIPES))
def test_cells_are_conserved(runs, name):
    recipe, trajectory = runs[name]
    seeded = recipe.seed_cells / 1e6 / recipe.seed_viability  # viable + dead, millions
    np.testing.assert_allclose(invariant(trajectory.states), seeded, rtol=1e-8)
    np.testing.assert_allclose(invariant(trajectory.end_state), seeded, rtol=1e-8)
    # the bookkeeping compartments only ever grow
    for field in ("lysed", "removed", "born"):
        values = getattr(trajectory.states, field)
        assert np.all(np.diff(values) >= -1e-12 * np.abs(values[1:]).max()), field


@pytest.mark.parametrize("name", list(RECIPES))
def test_removed_cells_only_change_at_samples(runs, name):
    recipe, trajectory = runs[name]
    removed = trajectory.states.removed
    sample_times = np.asarray(recipe.sample_times_h)
    for i in range(1, len(SAVE_TIMES)):
        t0, t1 = SAVE_TIMES[i - 1], SAVE_TIMES[i]
        # a save at t shows the culture before the events at t, so (t0, t1] -> samples in [t0, t1)
        if not np.any((sample_times >= t0) & (sample_times < t1)):
            assert removed[i] == removed[i - 1], (t0, t1)
        else:
            assert removed[i] > removed[i - 1], (t0, t1)


@pytest.mark.parametrize("name", list(RECIPES))
def test_volume_bookkeeping(runs, name):
    recipe, trajectory = runs[name]
    feeds = [(f.time_h, f.volume_ml) for f in recipe.feeds]
    samples = [(t, recipe.sample_volume_ml) for t in recipe.sample_times_h]
    final = recipe.seed_volume_ml + sum(v for _, v in feeds) - sum(v for _, v in samples)
    assert float(trajectory.end_state.volume_ml) == pytest.approx(final, rel=1e-13)

    def volume_before(t):  # the culture just before the events at t (t = 0: after the seed)
        volume = recipe.seed_volume_ml
        volume += sum(v for time, v in feeds if time < t)
        volume -= sum(v for time, v in samples if time < t)
        return volume

    expected = np.array([volume_before(t) for t in SAVE_TIMES])
    np.testing.assert_allclose(trajectory.states.volume_ml, expected, rtol=1e-13)


@pytest.mark.parametrize("name", list(RECIPES))
def test_no_compartment_goes_negative(runs, name):
    _, trajectory = runs[name]
    for state in (trajectory.states, trajectory.end_state):
        for path, leaf in jax.tree_util.tree_leaves_with_path(state):
            assert np.min(leaf) >= -1e-9, (jax.tree_util.keystr(path), float(np.min(leaf)))
