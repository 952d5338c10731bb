"""Backtest: forecast held-out batches from data truncated ``horizon_h`` before harvest.

    python experiments/backtest.py data_dir=DIR horizon_h=60

Donors (not runs) are held out, so every forecast is for a donor the calibration never saw.
Writes ``backtest.csv`` (one row per held-out run: observed and forecast viable CAR+ cells at
harvest, relative error, interval coverage), ``backtest.png`` and ``metrics.json`` (mean
relative error, 90 % interval coverage) into the run directory; prints the metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import jax
import numpy as np
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

import twin.config as twin_config
from twin import TwinInputError
from twin._atomic import atomic_path
from twin._cli import exit_on_input_error, resolve_user_path
from twin.calibrate import calibrate, calibration_from_config
from twin.data import read_run_data
from twin.forecast import forecast, plot_backtest
from twin.forecast._io import observed_at_harvest, subset, truncate
from twin.plots import save_figure
from twin.provenance import write_provenance

jax.config.update("jax_enable_x64", True)


def donor_folds(donor_ids: list[str], folds: int, seed: int) -> list[list[str]]:
    """Donors shuffled (seeded) and dealt into ``folds`` groups."""
    if not 2 <= folds <= len(donor_ids):
        raise TwinInputError(f"folds={folds}: must be between 2 and the number of donors")
    order = np.random.default_rng(seed).permutation(len(donor_ids))
    return [[donor_ids[i] for i in order[k::folds]] for k in range(folds)]


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Run the backtest; write the outputs into ``out_dir``; return the metrics."""
    params, structure, solver = twin_config.model_from_config(cfg.model)
    noise = twin_config.noise_from_config(cfg.noise)
    fit = calibration_from_config(cfg.fit)
    downstream = twin_config.downstream_from_config(cfg.downstream)
    settings = twin_config.forecast_settings_from_config(cfg.forecast)
    if not cfg.horizon_h > 0:
        raise TwinInputError(f"horizon_h={cfg.horizon_h!r}: must be > 0")
    data = read_run_data(resolve_user_path(str(cfg.data_dir)))
    observed = observed_at_harvest(data).set_index("run_id")["observed"]
    donors = list(dict.fromkeys(data.runs["donor_id"]))

    rows = []
    for fold, held_out in enumerate(tqdm(donor_folds(donors, cfg.folds, cfg.seed), desc="folds")):
        test_runs = [r for r in data.run_ids if data.donor_of(r) in held_out and r in observed]
        train_runs = [r for r in data.run_ids if data.donor_of(r) not in held_out]
        calibration = calibrate(
            subset(data, train_runs),
            fit,
            model_parameters=params,
            structure=structure,
            solver=solver,
            noise=noise,
            seed=cfg.seed,
            progress=False,
        )
        result = forecast(
            calibration, truncate(data, test_runs, cfg.horizon_h), downstream, settings
        )
        table = result.table[result.table["variable"] == "viable_car_pos_cells"]
        for row in table.itertuples(index=False):
            actual = float(observed[row.run_id])
            rows.append(
                {
                    "run_id": row.run_id,
                    "donor_id": data.donor_of(row.run_id),
                    "fold": fold,
                    "harvest_time_h": row.time_h,
                    "observed": actual,
                    "median": row.median,
                    "lower_90": row.lower_90,
                    "upper_90": row.upper_90,
                    "relative_error": abs(row.median - actual) / actual,
                    "covered": row.lower_90 <= actual <= row.upper_90,
                }
            )
    results = pd.DataFrame(rows)
    metrics = {
        "horizon_h": float(cfg.horizon_h),
        "runs": len(results),
        "mean_relative_error": float(results["relative_error"].mean()),
        "median_relative_error": float(results["relative_error"].median()),
        "coverage_90": float(results["covered"].mean()),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir, cfg, seed=cfg.seed)
    with atomic_path(out_dir / "backtest.csv") as tmp:
        results.to_csv(tmp, index=False)
    with atomic_path(out_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    save_figure(plot_backtest(results), out_dir / "backtest.png")
    return metrics


@hydra.main(config_path="../configs", config_name="backtest", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_input_error():
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        metrics = run(cfg, out_dir)
        print(OmegaConf.to_yaml(OmegaConf.create(metrics)).strip())
        print(f"outputs: {out_dir}")


if __name__ == "__main__":
    main()
