"""The mismatch bench's plants: mass balances, transduction bounds, assays, run-data contract."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from twin.data import read_run_data
from twin.plants import PLANTS, Assays, evaluate_events, generate, get_plant, simulate_events
from twin.process import Recipe

NAMES = sorted(PLANTS)


def _closed_recipe(**kw) -> Recipe:
    """No exchange, feed or sample before harvest: the culture is closed between seed and
    harvest, so balances hold exactly."""
    return Recipe(exchanges=[], feeds=[], sample_times_h=[168.0], harvest_time_h=168.0, **kw)


@pytest.mark.parametrize("name", NAMES)
def test_glucose_lactate_balance(name):
    """Lactate is made only from glucose: G + L / Y_L is constant in a closed culture."""
    plant = get_plant(name)
    p = plant.population()
    run = simulate_events(
        plant, _closed_recipe(seed_cells=1.5e8).events(), p, states_at=[0.0, 60.0, 120.0]
    )
    assert run.success, run.message
    balance = [s["glucose_mM"] + s["lactate_mM"] / p["lactate_per_glucose"] for s in run.samples]
    np.testing.assert_allclose(balance, 11.1, rtol=1e-4)
    assert run.samples[-1]["glucose_mM"] < 8.0  # glucose was actually used


@pytest.mark.parametrize("name", NAMES)
def test_cells_conserved_without_growth_or_lysis(name):
    """With no division and no lysis, every seeded cell is viable or dead at harvest."""
    plant = get_plant(name)
    p = plant.population() | {"max_growth_rate_per_h": 1e-12, "lysis_rate_per_h": 1e-12}
    recipe = dataclasses.replace(
        _closed_recipe(seed_cells=1e8, seed_viability=0.9), sample_times_h=[]
    )
    run = simulate_events(plant, recipe.events(), p)
    h = run.harvest
    total = h["viable_cells"] / h["viability"]
    np.testing.assert_allclose(total, 1e8 / 0.9, rtol=1e-5)
    assert h["viability"] < 0.85  # cells did die


@pytest.mark.parametrize("name", NAMES)
def test_transduction_bounds(name):
    """Each transduced cell carries 1 to K copies: %CAR+ <= VCN <= K %CAR+; no vector, no
    CAR+ cells."""
    plant = get_plant(name)
    p = plant.population()
    run = simulate_events(plant, Recipe().events(), p)
    h = run.harvest
    assert 0.1 < h["car_pos_fraction"] < 0.9
    assert h["car_pos_fraction"] <= h["vcn_per_cell"] <= plant.max_copies * h["car_pos_fraction"]
    none = simulate_events(plant, dataclasses.replace(Recipe(), moi=0.0).events(), p)
    assert none.harvest["car_pos_fraction"] == 0.0


def test_more_vector_more_copies():
    for name in NAMES:
        plant = get_plant(name)
        p = plant.population()
        low, high = (
            simulate_events(plant, dataclasses.replace(Recipe(), moi=m).events(), p)
            for m in (2.0, 8.0)
        )
        assert high.harvest["vcn_per_cell"] > 1.5 * low.harvest["vcn_per_cell"], name


def test_glucose_detection_limit():
    rng = np.random.default_rng(0)
    limited = Assays(glucose_detection_limit_mM=0.1)
    low = [limited.read(rng, "glucose_mM", 0.04) for _ in range(200)]
    assert set(low) == {0.0}
    high = np.array([limited.read(rng, "glucose_mM", 0.5) for _ in range(200)])
    assert (high > 0.1).all()
    plain = np.array([Assays().read(rng, "glucose_mM", 0.2) for _ in range(200)])
    assert ((plain > 0) & (plain < 0.2)).any()


# one plant in the fast suite (the one with a detection limit), the others slow
_READER_CASES = [n if n == "signal" else pytest.param(n, marks=pytest.mark.slow) for n in NAMES]


@pytest.mark.parametrize("name", _READER_CASES)
def test_generated_data_pass_the_twin_reader(name, tmp_path):
    paths = generate(name, tmp_path, n_train_donors=2, runs_per_donor=2, n_test_donors=2, seed=3)
    train, test = read_run_data(paths["train"]), read_run_data(paths["test"])
    assert len(train.run_ids) == 4 and len(test.run_ids) == 2
    assert not set(train.runs["donor_id"]) & set(test.runs["donor_id"])  # new donors
    truth = pd.read_csv(paths["test"] / "true_harvest.csv")
    assert truth["success"].all() and (truth["viable_car_pos_cells"] > 0).all()
    params = pd.read_csv(paths["train"] / "true_parameters.csv")
    varied = get_plant(name).varied()
    # split-donor runs share their donor's parameters; donors differ
    assert (params.groupby("donor_id")[varied].nunique() == 1).all().all()
    assert params[varied[0]].nunique() == 2
    glucose = train.measurements.query("variable == 'glucose_mM'")["value"]
    limit = get_plant(name).glucose_detection_limit_mM
    assert not ((glucose > 0) & (glucose < limit)).any()


def test_evaluate_events_scores_a_recipe():
    events = pd.DataFrame(
        [dataclasses.asdict(e) | {"run_id": "X"} for e in Recipe().events(capacity_ml=1000.0)]
    )
    result = evaluate_events("signal", events, n_donors=4, seed=1)
    assert len(result) == 4 and result["success"].all()
    assert result["conforming"].dtype == bool
    again = evaluate_events("signal", events, n_donors=4, seed=1)
    pd.testing.assert_frame_equal(result, again)
    assert result["viable_car_pos_cells"].nunique() == 4  # donors differ


def test_a_breakpoint_on_an_event_time_still_jumps():
    """The cytokine plant's dead time ending exactly at a sample (and 4e-15 h after one) still
    releases the held cells."""
    plant = get_plant("cytokine")
    recipe = Recipe(sample_times_h=[24.0, 48.0, 72.0], harvest_time_h=96.0, exchanges=[], feeds=[])
    for dead_time in (24.0, 24.000000000000004):
        p = plant.population() | {"activation_dead_time_h": dead_time}
        run = simulate_events(plant, recipe.events(), p)
        assert run.success, run.message
        assert run.harvest["viable_cells"] > 1.5 * recipe.seed_cells  # the cells did divide


def test_replicative_division_moves_generations_and_keeps_copies_per_cell():
    """Each division adds one cell (two daughters in the next generation replace the mother);
    the last generation renews itself; a copy pool divides with its cells, so copies per cell
    are unchanged by division."""
    from twin.plants._replicative import NG, _divide

    rng = np.random.default_rng(0)
    cells, rate = rng.uniform(1, 5, NG), rng.uniform(0.01, 0.05, NG)
    d = _divide(cells, rate)
    np.testing.assert_allclose(d.sum(), rate @ cells, rtol=1e-12)
    np.testing.assert_allclose(d[0], -rate[0] * cells[0])
    np.testing.assert_allclose(d[-1], 2 * rate[-2] * cells[-2] + rate[-1] * cells[-1])
    copies = 1.7 * cells
    np.testing.assert_allclose(_divide(copies, rate), 1.7 * d, rtol=1e-12)


def test_replicative_decline_follows_divisions_not_culture_age():
    """Without a division limit (ratio near 1) the replicative plant keeps expanding; with the
    median donor's it slows as generations accumulate, and a faster-dividing donor reaches
    the slow generations sooner (its late growth is the smaller share of its early growth)."""
    plant = get_plant("replicative")
    recipe = _closed_recipe(seed_cells=5e7)
    base = plant.population() | {  # glucose and IL-2 never run low (density still limits)
        "glucose_uptake_pmol_per_cell_h": 1e-12,
        "il2_uptake_IU_per_cell_h": 1e-15,
        "il2_half_life_h": 1e9,
    }

    def fold(p, start, end):
        run = simulate_events(plant, recipe.events(), p, states_at=[start, end])
        counts = [s["viable_cells"] for s in run.samples[:2]]
        return counts[1] / counts[0]

    unlimited = base | {"division_potential_ratio": 1.0 - 1e-9}
    assert fold(unlimited, 120.0, 160.0) > 1.3 * fold(base, 120.0, 160.0)
    slow, fast = base, base | {"max_growth_rate_per_h": 2 * base["max_growth_rate_per_h"]}
    late_over_early = [
        np.log(fold(p, 120.0, 160.0)) / np.log(fold(p, 60.0, 100.0)) for p in (slow, fast)
    ]
    assert late_over_early[1] < late_over_early[0]
