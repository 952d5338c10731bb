"""Simulate one cartridge: the configured recipe, or a recorded batch (``data_dir`` + ``run_id``).

    python experiments/simulate.py                       # default recipe
    python experiments/simulate.py recipe.moi=3          # any field can be overridden
    python experiments/simulate.py -m recipe.moi=2,5,8   # a multirun, one folder per value
    python experiments/simulate.py data_dir=twin/data/example run_id=R001

Writes ``trajectory.nc`` (xarray, units in attrs), ``batch.png`` and ``summary.csv`` into the
run directory, with ``resolved_config.yaml`` and ``provenance.json``, and prints the summary.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import jax
import matplotlib
import numpy as np
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import twin.config as twin_config
from twin import TwinInputError, simulate
from twin._atomic import atomic_path
from twin._cli import exit_on_input_error, overrides_label
from twin.plots import plot_batch, save_figure
from twin.provenance import write_provenance
from twin.simulate import SolveResult
from twin.trajectories import trajectory_dataset

matplotlib.use("Agg")  # figures go to files (the library leaves the backend to its caller)
jax.config.update("jax_enable_x64", True)

MAX_SAVES = 100_000  # saved states per run: ~20 MB of trajectory; more is a typo, not a need

_SUMMARY_ROWS = (
    ("harvest_time_h", "h", "{:.0f}"),
    ("harvest_viable_cells", "cells", "{:.3g}"),
    ("harvest_viability", "fraction", "{:.3f}"),
    ("harvest_car_pos_fraction", "fraction", "{:.3f}"),
    ("harvest_vcn_per_cell", "copies/cell", "{:.2f}"),
    ("harvest_vcn_per_transduced_cell", "copies/cell", "{:.2f}"),
    ("harvest_viable_car_pos_cells", "cells", "{:.3g}"),
    ("harvest_memory_like_fraction", "fraction", "{:.3f}"),
    ("product_viable_car_pos_cells", "cells", "{:.3g}"),
    ("product_viability", "fraction", "{:.3f}"),
    ("doses", "doses", "{:.0f}"),
    ("passes_viability", "", "{:.0f}"),
    ("passes_car_pos", "", "{:.0f}"),
    ("passes_vcn", "", "{:.0f}"),
    ("passes_dose", "", "{:.0f}"),
    ("conforming", "", "{:.0f}"),
    ("solver_success", "", "{:.0f}"),
)


@twin_config.with_configured_bounds
def run(cfg: DictConfig, out_dir: Path, title_note: str = "") -> pd.DataFrame:
    """Simulate, write the outputs into ``out_dir`` and return the summary table.
    ``title_note`` (e.g. the command-line overrides) is added to the figure's title."""
    params, structure, solver = twin_config.model_from_config(cfg.model)
    recipe = twin_config.recipe_from_config(cfg.recipe)
    downstream = twin_config.downstream_from_config(cfg.downstream)
    if not cfg.save_interval_h > 0:
        raise TwinInputError(f"save_interval_h={cfg.save_interval_h!r}: must be > 0")
    schedule, measurements, run_id = twin_config.batch_from_config(cfg, recipe)
    run_id = run_id or "recipe"

    end_h = float(schedule.end_time_h)
    n_saves = end_h / cfg.save_interval_h
    if n_saves > MAX_SAVES:
        raise TwinInputError(
            f"save_interval_h={cfg.save_interval_h!r}: would save {n_saves:.3g} states over "
            f"{end_h:g} h (at most {MAX_SAVES}: a memory budget)"
        )
    save_times_h = np.unique(np.append(np.arange(0.0, end_h, cfg.save_interval_h), end_h))
    trajectory = simulate(params, schedule, save_times_h, structure, solver)
    dataset = trajectory_dataset(trajectory, schedule, downstream, run_id=run_id)
    dataset["harvest_time_h"] = ((), end_h, {"units": "h"})

    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir, cfg)
    with atomic_path(out_dir / "trajectory.nc") as tmp:
        dataset.to_netcdf(tmp)
    title = f"{run_id}: simulated cartridge" + (f" ({title_note})" if title_note else "")
    fig = plot_batch(dataset, measurements, title=title)
    save_figure(fig, out_dir / "batch.png")
    summary = pd.DataFrame(
        [(name, fmt.format(float(dataset[name])), unit) for name, unit, fmt in _SUMMARY_ROWS],
        columns=["quantity", "value", "unit"],
    )
    with atomic_path(out_dir / "summary.csv") as tmp:
        summary.to_csv(tmp, index=False)
    if not bool(trajectory.success):
        print(
            f"warning: the ODE solve failed for this batch ({dataset.attrs['solver_result']}: "
            f"{SolveResult[trajectory.result]}); values after the failure are NaN"
        )
    return summary


@hydra.main(config_path="../configs", config_name="simulate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_input_error(cfg):
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        summary = run(cfg, out_dir, title_note=overrides_label(HydraConfig.get()))
        print(summary.to_string(index=False))
        print(f"outputs: {out_dir}")


if __name__ == "__main__":
    main()
