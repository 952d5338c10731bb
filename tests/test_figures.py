"""Figures as a new user reads them: units on the axes, legends for every marker, titles that
tell multirun figures apart, transgene curves only after transduction, smooth forecast medians,
surrogate and exact objectives on separate axes, dominated points not shown as the front.

No JAX compilation: the figures are drawn from small hand-made inputs.
"""

from __future__ import annotations

import types

import jax
import matplotlib
import numpy as np
import pandas as pd
import pytest
import xarray as xr

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from twin._cli import overrides_label  # noqa: E402
from twin.assays import AssayNoise, to_assay_scale  # noqa: E402
from twin.forecast import FORECAST_VARIABLES, plot_fan_chart  # noqa: E402
from twin.forecast._forecast import Forecast  # noqa: E402
from twin.forecast._predictive import measured_draws  # noqa: E402
from twin.optimize._io import _plot_convergence, _plot_pareto  # noqa: E402
from twin.optimize._pareto import non_dominated  # noqa: E402
from twin.plots import TRANSGENE_VARIABLES, plot_batch  # noqa: E402

TRANSDUCTION_H = 24.0


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _batch_dataset() -> xr.Dataset:
    t = np.arange(0.0, 97.0, 1.0)
    grown = np.exp(0.02 * t)
    after = t >= TRANSDUCTION_H
    values = {
        "viable_cells": 1e8 * grown,
        "viable_car_pos_cells": np.where(after, 3e7 * grown, 0.0),
        "viability": np.full_like(t, 0.9),
        "memory_like_fraction": np.full_like(t, 0.5),
        "glucose_mM": 11.0 - 0.05 * t,
        "lactate_mM": 0.1 * t,
        "il2_IU_per_mL": np.full_like(t, 100.0),
        "car_pos_fraction": np.where(after, 0.3, 0.0),
        "vcn_per_cell": np.where(after, 0.6, 0.0),
        "vcn_per_transduced_cell": np.where(after, 2.0, np.nan),
    }
    data_vars = {name: ("time_h", v) for name, v in values.items()}
    data_vars["event_time_h"] = ("event", [0.0, 0.0, TRANSDUCTION_H, 96.0])
    operations = ["seed", "activate", "transduce", "harvest"]
    data_vars["operation"] = ("event", np.array(operations, dtype=object))
    return xr.Dataset(data_vars, coords={"time_h": t})


def test_batch_figure_starts_transgene_curves_at_transduction_and_labels_measurements():
    measurements = pd.DataFrame(
        {"time_h": [48.0, 72.0], "variable": ["viable_cells"] * 2, "value": [2.5e8, 4e8]}
    )
    fig = plot_batch(_batch_dataset(), measurements, title="x")
    drawn = 0
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_label() in {"viable CAR+ cells", "CAR+ fraction", "VCN per cell"}:
                x, y = line.get_data()
                assert np.all(np.isnan(y[x <= TRANSDUCTION_H]))
                assert np.all(np.isfinite(y[x > TRANSDUCTION_H]))
                drawn += 1
    assert drawn == 3
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert "measured" in labels and "transduce" in labels
    assert "viable_car_pos_cells" in TRANSGENE_VARIABLES
    # Without measurements, no "measured" entry.
    fig = plot_batch(_batch_dataset(), None)
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert "measured" not in labels


def test_multirun_titles_carry_the_overrides():
    def hydra(task):
        return types.SimpleNamespace(overrides=types.SimpleNamespace(task=task))

    assert overrides_label(hydra(["recipe.moi=2", "verbose=true"])) == "recipe.moi=2"
    assert overrides_label(hydra(["recipe.moi=5", "hydra.run.dir=x"])) == "recipe.moi=5"
    assert overrides_label(hydra([])) == ""
    long = overrides_label(hydra([f"model.parameters.p{i}=1.0" for i in range(20)]), limit=40)
    assert len(long) == 40 and long.endswith("...")


def test_shared_noise_keeps_each_time_marginal_and_makes_quantile_curves_smooth():
    """Common noise over time: per time, the assay-scale SD is the noise model's; a quantile
    of increasing trajectories is increasing (with independent noise it zigzags)."""
    # Slow growth (10 % over the window) and a forecast's number of draws: the sampling error
    # of a quantile is then larger than its change from one time to the next.
    n_draws, t = 400, np.linspace(0.0, 1.0, 30)
    rates = np.random.default_rng(0).normal(0.1, 0.02, n_draws)
    truth = {
        "viable_cells": 1e8 * np.exp(rates[:, None] * t[None, :]),
        "viability": np.full((n_draws, t.size), 0.9),
        "car_pos_fraction": np.full((n_draws, t.size), 0.3),
        "vcn_per_cell": np.full((n_draws, t.size), 0.6),
    }
    noise = AssayNoise()
    key = jax.random.PRNGKey(0)
    shared = measured_draws(key, truth, noise, shared_axis=-1)
    independent = measured_draws(key, truth, noise)
    for variable in ("viability", "car_pos_fraction"):  # constant truth: SD = the noise SD
        z = np.asarray(to_assay_scale(variable, shared[variable]))
        np.testing.assert_allclose(z.std(axis=0), noise.sd(variable), rtol=0.15)
        assert np.ptp(z, axis=1).max() < 1e-12  # one deviate per draw over time
    for q in (0.05, 0.5, 0.95):
        assert np.all(np.diff(np.quantile(shared["viable_cells"], q, axis=0)) > 0)
        assert np.any(np.diff(np.quantile(independent["viable_cells"], q, axis=0)) < 0)


def _forecast(finished: bool) -> Forecast:
    t = np.arange(0.0, 241.0, 6.0)[None, :]
    level = np.exp(0.02 * t)[..., None] * np.array([0.8, 0.9, 1.0, 1.1, 1.25])
    quantiles = {v: 1e8 * level for v in FORECAST_VARIABLES}
    quantiles["viability"] = np.full_like(level, 0.9)
    runs = pd.DataFrame(
        {
            "run_id": ["R1"],
            "donor_id": ["D1"],
            "finished": [finished],
            "now_h": [120.0],
            "planned_harvest_time_h": [192.0],
            "transduction_time_h": [TRANSDUCTION_H],
            "advice_until_h": [192.0 if finished else 240.0],
            "p_conforming_at_planned": [0.8],
            "recommended_harvest_time_h": [186.0],
        }
    )
    return Forecast(table=pd.DataFrame(), runs=runs, time_h=t, quantiles=quantiles)


@pytest.mark.parametrize("finished", [True, False])
def test_fan_chart_has_units_legend_and_draws_nothing_impossible(finished):
    seen = pd.DataFrame(
        {"run_id": ["R1"], "time_h": [96.0], "variable": ["viable_cells"], "value": [7e8]}
    )
    fig = plot_fan_chart(_forecast(finished), 0, seen=seen)
    panels = fig.axes[: len(FORECAST_VARIABLES)]
    assert [ax.get_ylabel() for ax in panels] == [
        "viable cells (cells)",
        "viability (fraction)",
        "CAR+ fraction (fraction of viable)",
        "vector copies per cell",
        "viable CAR+ cells (cells)",
    ]
    assert all(ax.get_xlabel() == "time since seed (h)" for ax in panels)
    end = 192.0 if finished else 240.0
    for ax, variable in zip(panels, FORECAST_VARIABLES, strict=True):
        assert end < ax.get_xlim()[1] < 1.05 * end  # a finished run's chart ends at its harvest
        x, y = ax.get_lines()[0].get_data()  # the median
        assert np.all(np.isnan(y[x > end]))
        before = x <= TRANSDUCTION_H
        transgene = variable in {"car_pos_fraction", "vcn_per_cell", "viable_car_pos_cells"}
        assert np.all(np.isnan(y[before])) == transgene
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"median", "measured (used)", "advised harvest"} <= set(labels)
    assert ("recorded harvest" in fig._suptitle.get_text()) == finished


def test_convergence_puts_surrogate_and_exact_objectives_on_separate_axes():
    settings = types.SimpleNamespace(starts=2, steps=5, objective="p_conforming")
    gradient = types.SimpleNamespace(simulations=640, history=(-np.linspace(0.5, 0.9, 5),) * 2)
    sobol = types.SimpleNamespace(simulations=640, history=(-np.linspace(0.4, 0.8, 10),))
    result = types.SimpleNamespace(settings=settings, gradient=gradient, sobol=sobol)
    left, right = _plot_convergence(result).axes
    assert "surrogate" in left.get_ylabel() and "exact" not in left.get_ylabel()
    assert "exact" in right.get_ylabel() and "surrogate" not in right.get_ylabel()
    # Each panel holds one kind of quantity only: the gradient starts, or the baseline.
    assert len(left.get_lines()) == 2 and len(right.get_lines()) == 1


def test_pareto_figure_marks_only_non_dominated_points_as_the_front():
    p = np.array([0.7, 0.93, 0.88, 0.6, 0.85, 0.8])
    cost = np.array([50e3, 60e3, 62e3, 40e3, 52e3, 57e3])
    frame = pd.DataFrame({"kind": ["start", "gradient", "sobol"] + ["sweep"] * 3})
    frame["p_conforming"], frame["cost_usd"] = p, cost
    frame["non_dominated"] = non_dominated(p, cost)
    ax = _plot_pareto(frame).axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert not any("pareto" in label.lower() for label in labels)
    front = ax.get_lines()[0]
    np.testing.assert_array_equal(front.get_xdata(), np.sort(cost[frame["non_dominated"]]))
    for collection in ax.collections:  # filled = non-dominated, open = dominated
        points = collection.get_offsets()
        if len(points) == 0:
            continue
        filled = collection.get_facecolors().shape[0] > 0 and collection.get_facecolors()[0, 3]
        for x, y in np.asarray(points):
            on_front = bool(frame["non_dominated"][(frame["cost_usd"] == x)].iloc[0])
            assert bool(filled) == on_front, (x, y)


def test_a_note_heads_the_figure_without_covering_its_title():
    from twin.plots import with_note

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.set_title("utilization")
    with_note(fig, "facility.horizon_days=28")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    note = fig._suptitle.get_window_extent(renderer)
    title = ax.title.get_window_extent(renderer)
    assert fig._suptitle.get_text() == "facility.horizon_days=28"
    assert note.y0 >= title.y1  # above the axes' own title, not on it
    assert with_note(plt.figure(), "")._suptitle is None
