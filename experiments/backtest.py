"""Backtest: forecast held-out batches from data truncated ``horizon_h`` before harvest.

    python experiments/backtest.py data_dir=DIR horizon_h=60

Donors (not runs) are held out, so every forecast is for a donor the calibration never saw.
With ``test_dir=DIR2``, the twin is instead calibrated once on all of ``data_dir`` and every
finished run of ``DIR2`` is forecast (validation on independent batches; a donor id present
in both is a known donor when ``forecast.use_known_donors``).
Writes ``backtest.csv`` (one row per held-out run: observed and forecast viable CAR+ cells at
harvest, relative error, interval coverage), ``backtest.png`` and ``metrics.json`` (mean
relative error, 90 % interval coverage) into the run directory; prints the metrics.

Each fold's calibration is kept in ``folds/`` of the run directory. Running again into the
same directory (``hydra.run.dir=...``) reuses the folds whose training data and fit settings
are unchanged: an interrupted backtest resumes, and forecast settings can be compared
without recalibrating.
"""

from __future__ import annotations

import os

# As in experiments/calibrate.py: one XLA CPU device per core, so that the fold calibrations
# split their runs over all cores. Read once, when JAX starts.
if __name__ == "__main__":
    os.environ.setdefault("EQX_ON_ERROR", "nan")  # cacheable programs (experiments/calibrate.py)
    os.environ.setdefault("JAX_NUM_CPU_DEVICES", str(os.cpu_count() or 1))

import json
from pathlib import Path

import hydra
import jax
import matplotlib
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

import twin.config as twin_config
from twin import TwinInputError
from twin._atomic import atomic_path
from twin._cli import exit_on_input_error, resolve_user_path
from twin.calibrate import calibration_from_config
from twin.calibrate._cache import enable_compilation_cache
from twin.data import read_run_data
from twin.forecast import plot_backtest
from twin.forecast._backtest import backtest_metrics, calibrate_and_forecast, donor_folds
from twin.forecast._io import observed_at_harvest
from twin.plots import save_figure
from twin.provenance import write_provenance

matplotlib.use("Agg")  # figures go to files (the library leaves the backend to its caller)
jax.config.update("jax_enable_x64", True)


@twin_config.with_configured_bounds
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
    if cfg.test_dir is None:  # K-fold over donors of data_dir
        test_data = data
        donors = list(dict.fromkeys(data.runs["donor_id"]))
        splits = [
            ([r for r in data.run_ids if data.donor_of(r) not in held_out], held_out)
            for held_out in donor_folds(donors, cfg.folds, cfg.seed)
        ]
    else:  # calibrate once on all of data_dir, forecast every run of test_dir
        test_data = read_run_data(resolve_user_path(str(cfg.test_dir)))
        splits = [(list(data.run_ids), list(dict.fromkeys(test_data.runs["donor_id"])))]
    observed = observed_at_harvest(test_data).set_index("run_id")["observed"]

    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir, cfg, seed=cfg.seed)
    # What a fold's calibration depends on besides its training data (see cached_calibration).
    fit_settings = {
        key: OmegaConf.to_container(cfg[key], resolve=True)
        for key in ("model", "noise", "fit", "forecast")  # forecast: the learnt discrepancy
    } | {"seed": cfg.seed}

    rows = []
    for fold, (train_runs, held_out) in enumerate(
        tqdm(splits, desc="folds", disable=not cfg.progress)
    ):
        test_runs = [
            r for r in test_data.run_ids if test_data.donor_of(r) in held_out and r in observed
        ]
        _, fold_result = calibrate_and_forecast(
            data.select(train_runs),
            test_data,
            cfg.horizon_h,
            fit=fit,
            model_parameters=params,
            structure=structure,
            solver=solver,
            noise=noise,
            downstream=downstream,
            settings=settings,
            seed=cfg.seed,
            cache_dir=out_dir / "folds",
            fit_settings=fit_settings,
            fold=fold,
            test_runs=test_runs,
        )
        rows += fold_result
    results = pd.DataFrame(rows)
    metrics = backtest_metrics(results, cfg.horizon_h)
    with atomic_path(out_dir / "backtest.csv") as tmp:
        results.to_csv(tmp, index=False)
    with atomic_path(out_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    save_figure(plot_backtest(results), out_dir / "backtest.png")
    return metrics


@hydra.main(config_path="../configs", config_name="backtest", version_base="1.3")
def main(cfg: DictConfig) -> None:
    enable_compilation_cache(cfg.compilation_cache_dir)
    with exit_on_input_error(cfg):
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        metrics = run(cfg, out_dir)
        print(OmegaConf.to_yaml(OmegaConf.create(metrics)).strip())
        print(f"outputs: {out_dir}")


if __name__ == "__main__":
    main()
