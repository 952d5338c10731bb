"""Forecast running batches: harvest yield with 90 % intervals, release odds, harvest advice.

    python experiments/forecast.py data_dir=DIR calibration=PATH

Writes into the run directory: ``forecast.csv`` (RUN_DATA.md: median and 90 % interval of what
would be measured at each run's planned harvest), ``runs.csv`` (per run: probability of meeting
each release check and all of them with the dose target, recommended harvest time with its
probability and expected yield), ``fan_<run_id>.png`` per run, ``resolved_config.yaml`` and
``provenance.json``; prints the per-run table.
"""

from __future__ import annotations

import os

# One XLA CPU device per core: the conditioning and the draws split their runs over all of
# them. Read once, when JAX starts (as experiments/calibrate.py).
if __name__ == "__main__":
    os.environ.setdefault("JAX_NUM_CPU_DEVICES", str(os.cpu_count() or 1))

from pathlib import Path

import hydra
import jax
import matplotlib
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import twin.config as twin_config
from twin._atomic import atomic_path
from twin._cli import exit_on_input_error, resolve_user_path
from twin.data import RunData, read_run_data
from twin.forecast import KEY_RUN_COLUMNS, forecast, plot_fan_chart
from twin.forecast._io import calibration_from_path
from twin.plots import save_figure
from twin.provenance import write_provenance

matplotlib.use("Agg")  # figures go to files (the library leaves the backend to its caller)
jax.config.update("jax_enable_x64", True)


@twin_config.with_configured_bounds
def run(cfg: DictConfig, out_dir: Path, data: RunData | None = None) -> pd.DataFrame:
    """Forecast every run of ``data`` (default: read from ``cfg.data_dir``); write the outputs;
    return the per-run table."""
    downstream = twin_config.downstream_from_config(cfg.downstream)
    settings = twin_config.forecast_settings_from_config(cfg.forecast)
    calibration = calibration_from_path(cfg.calibration)
    if data is None:
        data = read_run_data(resolve_user_path(str(cfg.data_dir)))
    recipe = cfg.get("recipe")
    plan = None if recipe is None else twin_config.recipe_from_config(recipe)
    chosen = HydraConfig.get().runtime.choices.get("recipe") if HydraConfig.initialized() else None
    plan_name = f"recipe={chosen}" if chosen else "the given recipe"
    result = forecast(calibration, data, downstream, settings, plan, plan_name)

    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir, cfg, seed=settings.seed)
    with atomic_path(out_dir / "forecast.csv") as tmp:
        result.table.to_csv(tmp, index=False)
    with atomic_path(out_dir / "runs.csv") as tmp:
        result.runs.to_csv(tmp, index=False)
    for i, run_id in enumerate(result.runs["run_id"]):
        save_figure(
            plot_fan_chart(result, i, seen=data.measurements), out_dir / f"fan_{run_id}.png"
        )
    return result.runs


@hydra.main(config_path="../configs", config_name="forecast", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_input_error(cfg):
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        runs = run(cfg, out_dir)
        with pd.option_context("display.width", 200, "display.float_format", "{:.3g}".format):
            print(runs[list(KEY_RUN_COLUMNS)].to_string(index=False))
        print(f"outputs: {out_dir}")


if __name__ == "__main__":
    main()
