"""The bench's baselines and table: the spreadsheet against its closed form, the oracle's
recovery of a donor from noise-free data, the metrics, and (slow) the experiment end to end."""

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twin.data import RunData
from twin.plants import get_plant, simulate_events
from twin.plants._bench import (
    by_seed_table,
    format_by_seed,
    format_table,
    method_rows,
    metrics,
    plot_validity,
    summary_table,
)
from twin.plants._compare import format_changes, paired_changes, ratio_intervals
from twin.plants._drivers import error_drivers, format_drivers, run_traits
from twin.plants._oracle import PlantModel, oracle_forecast_run
from twin.plants._spreadsheet import spreadsheet_forecast
from twin.plants._time_ahead import (
    format_time_ahead,
    time_ahead_errors,
    time_ahead_table,
    true_viable_cells,
)
from twin.process import ExchangeStep, Recipe


def _runs(spec: dict[str, tuple[float, dict[float, float], dict[float, float]]]) -> RunData:
    """Runs from ``run_id -> (harvest_h, {t: count}, {t: car})``."""
    runs, events, measurements = [], [], []
    for run_id, (harvest, counts, cars) in spec.items():
        runs.append({"run_id": run_id, "donor_id": "D" + run_id})
        recipe = Recipe(
            exchanges=[], feeds=[], sample_times_h=sorted(counts), harvest_time_h=harvest
        )
        for e in recipe.events():
            events.append(dataclasses.asdict(e) | {"run_id": run_id})
        measurements += [(run_id, t, "viable_cells", v) for t, v in counts.items()]
        measurements += [(run_id, t, "car_pos_fraction", v) for t, v in cars.items()]
    return RunData(
        runs=pd.DataFrame(runs),
        events=pd.DataFrame(events),
        measurements=pd.DataFrame(measurements, columns=["run_id", "time_h", "variable", "value"]),
    )


def test_spreadsheet_is_last_count_times_median_fold_times_last_car():
    # training folds from 120 h to 192 h: 2, 3, 5 (median 3); one run lacks 192 h
    train = _runs(
        {
            "A": (192.0, {120.0: 1e8, 192.0: 2e8}, {192.0: 0.3}),
            "B": (192.0, {120.0: 2e8, 192.0: 6e8}, {192.0: 0.3}),
            "C": (216.0, {120.0: 1e8, 192.0: 5e8, 216.0: 6e8}, {216.0: 0.3}),
            "D": (168.0, {120.0: 1e8, 168.0: 9e8}, {168.0: 0.3}),
        }
    )
    test = _runs({"T": (192.0, {96.0: 5e7, 120.0: 4e8, 192.0: 1e9}, {96.0: 0.2, 120.0: 0.4})})
    out = spreadsheet_forecast(train, test, horizon_h=60.0).set_index("run_id")
    row = out.loc["T"]
    assert row["t_last_h"] == 120.0 and row["n_folds"] == 3
    assert row["median"] == pytest.approx(4e8 * 3 * 0.4)
    assert row["lower_90"] == pytest.approx(4e8 * 0.4 * np.quantile([2, 3, 5], 0.05))
    assert row["upper_90"] == pytest.approx(4e8 * 0.4 * np.quantile([2, 3, 5], 0.95))
    # no training run measured at the test's harvest: folds scaled to the window (log scale)
    late = _runs({"T": (264.0, {120.0: 4e8, 264.0: 1e9}, {120.0: 0.4})})
    row = spreadsheet_forecast(train, late, horizon_h=60.0).iloc[0]
    folds = [2 ** (144 / 72), 3 ** (144 / 72), 6 ** (144 / 96), 9 ** (144 / 48)]
    assert row["median"] == pytest.approx(4e8 * 0.4 * np.median(folds))


def test_metrics_and_table():
    test = _runs(
        {r: (192.0, {192.0: 1e9}, {192.0: 0.5}) for r in ("A", "B", "C", "D")}
    )  # observed 5e8 each
    forecasts = pd.DataFrame(
        {
            "run_id": ["A", "B", "C", "D"],
            "median": [5.5e8, 4.5e8, 6e8, 5e8],
            "lower_90": [4e8, 4e8, 5.5e8, 4e8],
            "upper_90": [6e8, 6e8, 7e8, 6e8],
        }
    )
    rows = method_rows("twin", forecasts, test)
    m = metrics(rows)
    assert m["mre"] == pytest.approx((0.1 + 0.1 + 0.2 + 0) / 4)
    assert m["bias"] == pytest.approx((0.1 - 0.1 + 0.2 + 0) / 4)
    assert m["coverage_90"] == pytest.approx(0.75)
    oracle = method_rows("oracle", forecasts.assign(median=5e8), test)
    results = pd.concat(
        [rows.assign(bench=b) for b in ("p1", "p2")]
        + [oracle.assign(bench=b) for b in ("p1", "p2")]
    )
    table = summary_table(results, {"p1": True, "p2": False})
    assert table["bench"].tolist() == ["p1", "p2", "mean over plants"]
    assert not table.iloc[-1]["converged"]
    assert table.iloc[-1]["twin_mre"] == pytest.approx(m["mre"])
    assert np.isinf(table.iloc[0]["twin/oracle"])  # a perfect oracle
    assert "p1" in format_table(table)


@pytest.mark.slow
def test_oracle_recovers_a_donor_from_noise_free_data():
    """Noise-free data of a donor one SD off the population in its growth and transduction:
    the oracle's fit finds those parameters and forecasts the harvest closely."""
    plant = get_plant("signal")
    truth = plant.population()
    for name in ("max_growth_rate_per_h", "transduction_rate_mL_per_MTU_h"):
        spec = plant.parameters[name]
        truth[name] = float(spec.from_z(spec.to_z(spec.value) + spec.donor_sd))
    recipe = Recipe(sample_times_h=[24.0 * k for k in range(1, 9)], harvest_time_h=192.0)
    events = recipe.events(capacity_ml=1000.0)
    run = simulate_events(plant, events, truth)
    rows = []
    for t, sample in zip(run.sample_times_h, run.samples, strict=True):
        for v in ("viable_cells", "viability", "glucose_mM", "lactate_mM", "il2_IU_per_mL"):
            rows.append((t, v, sample[v]))
        if t >= recipe.transduction_time_h + 48:
            rows += [(t, v, sample[v]) for v in ("car_pos_fraction", "vcn_per_cell")]
    measurements = pd.DataFrame(rows, columns=["time_h", "variable", "value"])
    out = oracle_forecast_run(PlantModel(plant), events, measurements, horizon_h=48.0)
    assert out["converged"]
    for name in ("max_growth_rate_per_h", "transduction_rate_mL_per_MTU_h"):
        # the one-SD shift is recovered to within 0.3 SD (the prior pulls back)
        spec = plant.parameters[name]
        miss = abs(spec.to_z(out[f"fit.{name}"]) - spec.to_z(truth[name])) / spec.donor_sd
        assert miss < 0.3, (name, miss)
    assert out["median"] == pytest.approx(run.samples[-1]["viable_car_pos_cells"], rel=0.03)
    assert out["lower_90"] < run.samples[-1]["viable_car_pos_cells"] < out["upper_90"]


def test_tables_pooled_over_draws_of_the_bench():
    """Two draws with the same run ids: the pooled table counts each draw's runs and averages
    over all of them; the by-draw table keeps each draw's own ratio."""
    test = _runs({r: (192.0, {192.0: 1e9}, {192.0: 0.5}) for r in ("A", "B")})
    frames = []
    for seed, twin_median in ((0, 6e8), (1, 7e8)):  # errors +20 % and +40 %
        forecasts = pd.DataFrame(
            {
                "run_id": ["A", "B"],
                "median": twin_median,
                "lower_90": 0.8 * twin_median,  # covers 5e8 in the first draw only
                "upper_90": 1.2 * twin_median,
            }
        )
        for method, f in (("twin", forecasts), ("oracle", forecasts.assign(median=5.5e8))):
            for bench in ("p1", "p2"):
                rows = method_rows(method, f, test).assign(bench=bench, seed=seed)
                frames.append(rows)
    results = pd.concat(frames, ignore_index=True)
    pooled = summary_table(results, {"p1": True, "p2": True})
    assert pooled.set_index("bench").loc["p1", "runs"] == 4
    assert pooled.set_index("bench").loc["p1", "twin_mre"] == pytest.approx(0.3)
    assert pooled.set_index("bench").loc["p1", "twin_coverage_90"] == pytest.approx(0.5)
    assert pooled.set_index("bench").loc["p1", "twin/oracle"] == pytest.approx(3.0)
    by_seed = by_seed_table(results, {0: {"p1": True, "p2": True}, 1: {"p1": True, "p2": None}})
    cells = by_seed.set_index(["seed", "bench"])
    assert cells.loc[(0, "p1"), "twin/oracle"] == pytest.approx(2.0)
    assert cells.loc[(1, "p2"), "twin/oracle"] == pytest.approx(4.0)
    assert cells.loc[(1, "mean over plants"), "converged"] is None
    text = format_by_seed(by_seed)
    assert "seed 1" in text and "4.00" in text


def _errors(spec: dict[tuple[str, str], list[float]], seeds=None) -> pd.DataFrame:
    """Bench rows from ``(bench, method) -> relative errors``, one held-out run per error (run
    ids R0, R1, ...; observed 1e8 each); ``seeds`` gives each run's draw."""
    rows = []
    for (bench, method), errors in spec.items():
        for i, e in enumerate(errors):
            row = {"bench": bench, "method": method, "run_id": f"R{i}", "observed": 1e8}
            row |= {"median": 1e8 * (1 + e), "relative_error": e, "covered": abs(e) < 0.2}
            rows.append(row | ({} if seeds is None else {"seed": seeds[i]}))
    return pd.DataFrame(rows)


def test_twin_oracle_interval_resamples_runs_within_draws():
    """Errors proportional run by run give a ratio every resample agrees on; a ratio that only
    differs between draws stays exact because each draw keeps its number of runs; otherwise the
    interval brackets the ratio and narrows with more runs."""
    rng = np.random.default_rng(1)
    oracle = list(rng.uniform(0.05, 0.3, 40))
    proportional = _errors({("p", "twin"): [2 * e for e in oracle], ("p", "oracle"): oracle})
    assert ratio_intervals(proportional)["p"] == pytest.approx((2.0, 2.0))
    by_draw = _errors(
        {("p", "twin"): [0.1] * 10 + [0.3] * 10, ("p", "oracle"): [0.1] * 20},
        seeds=[0] * 10 + [1] * 10,
    )
    assert ratio_intervals(by_draw)["p"] == pytest.approx((2.0, 2.0))
    unstratified = ratio_intervals(by_draw.drop(columns="seed"))["p"]
    assert unstratified[0] < 1.8 and unstratified[1] > 2.2

    def width(n):
        twin = np.abs(rng.normal(0, 0.2, n))
        results = _errors({("p", "twin"): list(twin), ("p", "oracle"): [0.1] * n})
        lower, upper = ratio_intervals(results)["p"]
        assert lower < twin.mean() / 0.1 < upper
        return upper - lower

    assert width(200) < 0.6 * width(20)
    two = _errors({("p1", "twin"): [0.2] * 5, ("p1", "oracle"): [0.1] * 5})
    two = pd.concat([two, two.assign(bench="p2", relative_error=two["relative_error"] * 2)])
    intervals = ratio_intervals(two)
    assert intervals["mean over plants"] == pytest.approx((2.0, 2.0))
    table = summary_table(two.assign(covered=True), {})
    assert table["twin/oracle_upper_90"].tolist() == pytest.approx([2.0, 2.0, 2.0])
    assert "2.00 (2.00-2.00)" in format_table(table)
    figure = plot_validity(table, two.assign(covered=True))
    assert len(figure.axes) == 3  # MRE bars, forecast vs measured, the ratio against the bar
    labels = [t.get_text() for t in figure.axes[2].get_yticklabels()]
    assert labels == ["p1", "p2", "mean over plants"]  # top to bottom, as in the table
    assert list(figure.axes[2].get_yticks()) == [2, 1, 0]


def test_paired_changes_against_another_bench_run():
    """The change is the mean paired difference of absolute errors with its standard error;
    missing runs are counted, not dropped silently; other data or draw layouts are refused."""
    from twin import TwinInputError

    new = _errors({("p1", "twin"): [0.1, -0.2, 0.3], ("p2", "twin"): [0.1, 0.1]})
    old = _errors({("p1", "twin"): [0.2, 0.2, 0.1], ("p2", "twin"): [0.3]})
    table = paired_changes(new, old, "old").set_index("bench")
    changes = np.array([0.1 - 0.2, 0.2 - 0.2, 0.3 - 0.1])
    assert table.loc["p1", "mre_change"] == pytest.approx(changes.mean())
    assert table.loc["p1", "mre_change_se"] == pytest.approx(changes.std(ddof=1) / np.sqrt(3))
    assert table.loc["p1", "mre"] == pytest.approx(0.2)
    assert table.loc["p1", "coverage_90_reference"] == pytest.approx(1 / 3)  # |0.1| < 0.2
    assert table.loc["p2", "runs_paired"] == 1 and table.loc["p2", "runs_not_compared"] == 1
    assert table.loc["p2", "mre_change"] == pytest.approx(-0.2)
    mean = table.loc["mean over plants"]
    assert mean["mre_change"] == pytest.approx((changes.mean() - 0.2) / 2)
    assert mean["runs_paired"] == 4 and mean["runs_not_compared"] == 1
    assert "p2" in format_changes(table.reset_index(), "old")
    same = paired_changes(new, new, "same")
    assert np.allclose(same["mre_change"], 0.0)
    moved = old.assign(observed=old["observed"] * 1.01)
    with pytest.raises(TwinInputError, match="not made on the same data"):
        paired_changes(new, moved, "old")
    with pytest.raises(TwinInputError, match="over several draws"):
        paired_changes(new, old.assign(seed=0), "old")


def _validity_module():
    import sys

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "experiments"))
    import validity

    return validity, root


def test_validity_over_several_draws(tmp_path):
    """seed=[3,4]: one bench per draw in seed_<N>/ (data in <data_root>/seed_<N>), each the
    same as a run with that seed alone, and the table pooled over both in the run folder."""
    from hydra import compose, initialize_config_dir

    from twin import TwinInputError

    validity, root = _validity_module()
    overrides = [
        "plants=[signal]",
        "example=false",
        "methods=[spreadsheet]",
        "n_train_donors=2",
        "runs_per_donor=1",
        "n_test_donors=2",
        "progress=false",
        f"data_root={tmp_path / 'data'}",
    ]
    with initialize_config_dir(str(root / "configs"), version_base="1.3"):
        both = compose("validity", overrides=[*overrides, "seed=[3,4]"])
        alone = compose("validity", overrides=[*overrides, "seed=4"])
        for bad in ("seed=[3,3]", "seed=[]", "seed=x"):
            with pytest.raises(TwinInputError, match="seed="):
                validity.seeds(compose("validity", overrides=[*overrides, bad]))
        no_twin = compose("validity", overrides=[*overrides, "time_ahead=true"])
    with pytest.raises(TwinInputError, match="time_ahead=true .*leaves the twin out"):
        validity.run(no_twin, tmp_path / "no_twin")
    out = validity.run(both, tmp_path / "run")
    assert (tmp_path / "data" / "seed_3" / "signal" / "train").is_dir()
    pooled = pd.read_csv(tmp_path / "run" / "validity_runs.csv")
    assert sorted(pooled["seed"].unique()) == [3, 4]
    assert out["table"].set_index("bench").loc["signal", "runs"] == 4
    by_seed = pd.read_csv(tmp_path / "run" / "validity_by_seed.csv")
    assert by_seed["seed"].tolist() == [3, 4]
    assert (tmp_path / "run" / "seed_4" / "validity.csv").is_file()
    assert not (tmp_path / "run" / "validity_drivers.csv").exists()  # no twin, no oracle
    draw = pd.read_csv(tmp_path / "run" / "seed_4" / "validity_runs.csv")
    own = validity.run(alone, tmp_path / "alone")["results"]  # seed 4 drawn again, alone
    assert np.allclose(own["median"].to_numpy(), draw["median"].to_numpy())
    assert by_seed.iloc[1]["spreadsheet_mre"] == pytest.approx(own["relative_error"].abs().mean())
    # Against itself (resumed from its cache): no change, written beside the table.
    with initialize_config_dir(str(root / "configs"), version_base="1.3"):
        again = compose(
            "validity", overrides=[*overrides, "seed=[3,4]", f"compare_to={tmp_path / 'run'}"]
        )
        missing = compose(
            "validity", overrides=[*overrides, "seed=[3,4]", f"compare_to={tmp_path / 'none'}"]
        )
    paired = validity.run(again, tmp_path / "again")["paired"]
    assert paired["runs_paired"].tolist() == [4] and paired["mre_change"].tolist() == [0.0]
    assert (tmp_path / "again" / "validity_paired.csv").is_file()
    with pytest.raises(TwinInputError, match="compare_to=.*none"):
        validity.run(missing, tmp_path / "missing")


def test_time_ahead_scores_the_forecast_against_the_true_count():
    """The true count at each sample is the plant's own noise-free solve; each run's rows
    start at its last sample before the cut; a forecast 10 % high errs by log 1.1 there and
    after, an exact one by 0."""
    from twin.forecast import Forecast
    from twin.plants import base_recipe, simulate_dataset

    plant = get_plant("cytokine")
    recipe = base_recipe()  # daily samples to the harvest at 240 h
    donors = plant.sample_donors(np.random.default_rng(1), 2)
    data, true_parameters, _ = simulate_dataset(
        plant, [recipe, recipe], donors, ["A", "B"], ["DA", "DB"], np.random.default_rng(2)
    )
    truth = true_viable_cells(PlantModel(plant), data, true_parameters)
    for i, run_id in enumerate(("A", "B")):
        events = recipe.events(capacity_ml=1000.0)
        own = simulate_events(plant, events, donors[i])
        expected = [sample["viable_cells"] for sample in own.samples]
        assert truth[truth["run_id"] == run_id]["true_viable_cells"].tolist() == pytest.approx(
            expected, rel=1e-9
        )
    only_a = true_parameters[true_parameters["run_id"] == "A"]  # B's truth unknown: left out
    assert set(true_viable_cells(PlantModel(plant), data, only_a)["run_id"]) == {"A"}

    grid = np.arange(0.0, 241.0, 6.0)
    medians = []
    for run_id, factor in (("A", 1.1), ("B", 1.0)):
        own = truth[truth["run_id"] == run_id]
        medians.append(factor * np.interp(grid, own["time_h"], own["true_viable_cells"]))
    quantiles = np.repeat(np.stack(medians)[:, :, None], 5, axis=2)
    forecast = Forecast(
        table=pd.DataFrame(),
        runs=pd.DataFrame({"run_id": ["A", "B"]}),
        time_h=np.stack([grid, grid]),
        quantiles={"viable_cells": quantiles},
    )
    errors = time_ahead_errors(forecast, data, truth, horizon_h=60.0)
    assert errors["time_ahead_h"].unique().tolist() == [-12.0, 12.0, 36.0, 60.0]  # cut 180 h
    by_run = errors.groupby("run_id")["log_error"]
    assert by_run.min()["A"] == pytest.approx(np.log(1.1)) == by_run.max()["A"]
    assert np.allclose(errors[errors["run_id"] == "B"]["log_error"], 0.0, atol=1e-12)
    table = time_ahead_table(errors.assign(bench="cytokine"))
    assert table["runs"].tolist() == [2, 2, 2, 2]
    assert np.allclose(table["mean_abs_log_error"], np.log(1.1) / 2)
    assert "+60 h" in format_time_ahead(table) and "cytokine" in format_time_ahead(table)


def test_drivers_rank_the_traits_the_twin_departs_from_the_oracle_with(caplog):
    """log(twin / oracle) rising with one trait gives Spearman +1 (significant, listed
    first); another trait, a fixed permutation, gives the closed form 1 - 6 sum d^2 /
    (n (n^2 - 1)); a constant trait is left out; a failed twin run is not counted; runs are
    matched by draw, not by name alone."""
    n = 12
    shuffled = np.array([3, 0, 7, 1, 11, 5, 9, 2, 10, 4, 8, 6])  # ranks of trait B
    rows, traits = [], []
    for seed in (0, 1):  # the same run ids in both draws
        for i in range(n):
            run_id, k = f"R{i:02d}", i + n * seed
            oracle, departure = 1e9 * (1 + i % 3), np.exp(0.05 * k)
            twin = np.nan if (seed, i) == (1, 5) else oracle * departure
            for method, median in (("twin", twin), ("oracle", oracle)):
                rows.append((seed, "p", method, run_id, oracle, median))
            unknown = np.nan if k == 3 else float(k)
            traits.append((seed, "p", run_id, float(k) ** 3, shuffled[i] + n * seed, 7.0, unknown))
    results = pd.DataFrame(
        rows, columns=["seed", "bench", "method", "run_id", "observed", "median"]
    )
    columns = ["seed", "bench", "run_id", "a", "b", "c", "d"]
    table = error_drivers(results, pd.DataFrame(traits, columns=columns))
    assert table["trait"].tolist() == ["a", "b"]  # c never varies; d is not known for R03
    assert "['d'] not known for every run" in caplog.text
    first = table.iloc[0]
    assert first["runs"] == 2 * n - 1 and first["spearman_twin_over_oracle"] == pytest.approx(1.0)
    assert first["significant"] and first["p_value"] < 1e-6
    assert first["spearman_twin_error"] == pytest.approx(1.0)  # observed = oracle's median
    assert np.isnan(first["spearman_oracle_error"])  # the oracle's error never varies
    # Trait b against the departure's ranks (i, draw by draw; run R05 of draw 1 failed).
    b = np.concatenate([shuffled, np.delete(shuffled + 12, 5)])
    i = np.concatenate([np.arange(n), np.delete(np.arange(n) + 12, 5)])
    d = pd.Series(b).rank().to_numpy() - pd.Series(i).rank().to_numpy()
    m = len(b)
    expected = 1 - 6 * np.sum(d**2) / (m * (m**2 - 1))
    assert table.iloc[1]["spearman_twin_over_oracle"] == pytest.approx(expected)
    text = format_drivers(table)
    assert "p (23 runs): a +1.00* (+1.00, n/a)" in text
    # Benches keep the order of the results (the table's), not the alphabet's.
    other = results.assign(bench="a_plant")
    both = error_drivers(
        pd.concat([results, other]),
        pd.concat(
            [pd.DataFrame(traits, columns=columns).assign(bench=b) for b in ("p", "a_plant")]
        ),
    )
    assert both["bench"].unique().tolist() == ["p", "a_plant"]
    # Without the oracle there is nothing to compare.
    assert error_drivers(results[results["method"] == "twin"], table).empty
    # run_traits: the true parameters and the recorded harvest time.
    data = _runs({"A": (216.0, {24.0: 1e8}, {}), "B": (168.0, {24.0: 1e8}, {})})
    truth = pd.DataFrame({"run_id": ["A", "B"], "donor_id": ["DA", "DB"], "k": [1.0, 2.0]})
    assert run_traits(data, truth).to_dict("list") == {
        "run_id": ["A", "B"],
        "k": [1.0, 2.0],
        "harvest_time_h": [216.0, 168.0],
    }


@pytest.mark.slow
def test_validity_run_smoke(tmp_path):
    """The experiment end to end on a tiny preset: one plant, the example, all three methods."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    validity, root = _validity_module()
    with initialize_config_dir(str(root / "configs"), version_base="1.3"):
        cfg = compose(
            "validity",
            overrides=[
                "plants=[signal]",
                "n_train_donors=2",
                "runs_per_donor=2",
                "n_test_donors=2",
                "fit.n_starts=1",
                "fit.max_steps=3",
                "oracle.max_nfev=3",
                "oracle.processes=1",
                "progress=false",
                "time_ahead=true",
            ],
        )
    with open_dict(cfg):
        cfg.data_root = str(tmp_path / "data")
    out = validity.run(cfg, tmp_path / "run")
    table = out["table"]
    assert table["bench"].tolist() == ["signal", "example"]
    for m in ("twin", "oracle", "spreadsheet"):
        assert table[f"{m}_mre"].notna().all()
    for name in ("validity.csv", "validity_runs.csv", "validity.json", "validity.png"):
        assert (tmp_path / "run" / name).is_file()
    assert (tmp_path / "run" / "resolved_config.yaml").is_file()
    runs = pd.read_csv(tmp_path / "run" / "validity_runs.csv")
    assert len(runs) == 3 * 4  # 2 test runs x 3 methods x 2 benches
    ahead = pd.read_csv(tmp_path / "run" / "validity_time_ahead.csv")
    assert set(ahead["bench"]) == {"signal", "example"}  # the example's truth is the twin's
    assert np.isfinite(ahead["log_error"]).all() and (ahead["time_ahead_h"] <= 60).all()
    drivers = pd.read_csv(tmp_path / "run" / "validity_drivers.csv")
    assert set(drivers["bench"]) == {"signal", "example"} and (drivers["runs"] == 2).all()
    assert drivers["spearman_twin_over_oracle"].abs().max() <= 1.0
    # A cached calibration is not reused under other forecast settings: its discrepancy was
    # learnt from forecasts made with them.
    settings = validity.calibration_settings(cfg)
    cfg.forecast.memory_h = 24.0
    assert validity.calibration_settings(cfg) != settings


def _noise_free(plant, recipe):
    events = recipe.events(capacity_ml=1000.0)
    run = simulate_events(plant, events, plant.population())
    rows = [
        (t, v, sample[v])
        for t, sample in zip(run.sample_times_h, run.samples, strict=True)
        for v in ("viable_cells", "viability", "glucose_mM", "lactate_mM", "car_pos_fraction")
        if v != "car_pos_fraction" or t >= recipe.transduction_time_h + 48
    ]
    return events, pd.DataFrame(rows, columns=["time_h", "variable", "value"])


@pytest.mark.slow
def test_the_twin_cannot_fit_a_plant_that_fits_itself():
    """A plant's noise-free batch: its own equations fit it to a small fraction of the assay
    noise, while the twin's best fit (its main growth, activation, metabolism and transduction
    parameters free) leaves residuals beyond the assay noise: the forms differ. (Checked on
    `signal`; on one `cytokine` run the twin's 12-parameter fit reached 0.77 noise SDs, i.e. a
    single batch does not tell those two apart: the bench's 36 runs are what separates them.)"""
    from twin.assays import AssayNoise
    from twin.kinetics import ModelStructure, default_parameters
    from twin.plants._twin_model import TwinModel
    from twin.simulate import SolverSettings

    free = {
        name: 1.0
        for name in (
            "activation_lag_h",
            "activation_efficiency",
            "max_growth_rate_per_h",
            "growth_decline_time_h",
            "density_half_cells_per_mL",
            "base_death_rate_per_h",
            "lactate_death_rate_per_h",
            "glucose_per_new_cell_pmol",
            "glucose_maintenance_pmol_per_cell_h",
            "lactate_per_glucose",
            "transduction_rate_mL_per_MTU_h",
            "susceptible_fraction",
        )
    }
    twin_model = TwinModel(
        default_parameters(), free, ModelStructure(), SolverSettings(), AssayNoise()
    )
    recipe = Recipe(
        sample_times_h=[24.0 * k for k in range(1, 11)],
        harvest_time_h=240.0,
        exchanges=[ExchangeStep(t, 0.5) for t in (120.0, 168.0, 216.0)],
    )
    for name in ("signal",):
        plant = get_plant(name)
        events, data = _noise_free(plant, recipe)
        own = oracle_forecast_run(PlantModel(plant), events, data, horizon_h=1e-6)
        other = oracle_forecast_run(twin_model, events, data, horizon_h=1e-6, max_nfev=60)
        assert own["data_rms"] < 0.2, (name, own["data_rms"])
        assert other["data_rms"] > 1.0, (name, other["data_rms"])
