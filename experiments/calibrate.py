"""Calibrate the kinetic model to a run-data folder, with donor variability and uncertainty.

    python experiments/calibrate.py data_dir=path/to/folder
    python experiments/calibrate.py fit.fit_noise=true fit.n_starts=5
    python experiments/calibrate.py 'fit.profile=[activation_lag_h]'
    python experiments/calibrate.py 'fit.select=[default,"decline=hill","lag_stages=8"]'

Writes into the run directory: ``calibration.nc`` (estimates, Laplace covariance, donor
effects, noise SDs, diagnostics, the resolved config; read it back with
``twin.calibrate.load_calibration``; its global attribute ``converged`` is 1 or 0),
``summary.csv`` (one row per fitted parameter), ``convergence.csv`` (every start and
continuation: objective, steps, decrement, converged), ``residual_trends.csv`` (the mean
standardized residual over runs per assay and day; ``systematic`` marks a misfit every run shares,
also noted in the printed summary), ``discrepancy.csv`` (the forecast's model
discrepancy learnt on the training runs), ``selection.csv`` (with ``fit.select``: candidate
structures ranked), ``fit_<variable>.png`` (observed vs the fitted trajectory per run, with
the 90 % band of what would be measured), ``residuals.png`` (with the daily means),
``parameters.png`` (prior vs
posterior intervals), ``profiles.png`` (if profiled),
``resolved_config.yaml`` and ``provenance.json``; prints the summary. Compiled programs are
cached on disk in ``compilation_cache_dir`` (default ``~/.cache/cartwin/jax``; ``null`` turns
it off), so a second run on data of the same padded shape skips XLA's compile (tracing it
again still takes seconds). Each optimizer start is checkpointed in ``checkpoints/`` as it
finishes: a killed run continues with ``resume=true`` and the same ``hydra.run.dir``, to the
same result.
"""

from __future__ import annotations

import os

# diffrax compiles its argument checks (equinox's error_if) as host callbacks, and a program
# with host callbacks cannot be kept in the on-disk compilation cache. The calibration passes
# them by construction (increasing slot times) and never throws (solver failures are data),
# so they may as well return NaN. Only when run as a script, and before equinox is imported
# (it reads the variable once).
# One XLA CPU device runs the ODE loops on one core: one device per core lets the fit split
# its runs over all of them (fit.devices). Also read once, when JAX starts.
if __name__ == "__main__":
    os.environ.setdefault("EQX_ON_ERROR", "nan")
    os.environ.setdefault("JAX_NUM_CPU_DEVICES", str(os.cpu_count() or 1))

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hydra
import jax
import matplotlib
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import twin.config as twin_config
from twin._atomic import atomic_path
from twin._cli import exit_on_input_error, resolve_user_path
from twin.assays import MEASURED_VARIABLES
from twin.calibrate import (
    Calibration,
    calibrate,
    calibration_from_config,
    describe_misfit,
    fit_bands,
    plot_fits,
    plot_parameter_intervals,
    plot_profiles,
    plot_residuals,
    residual_trends,
    write_calibration,
)
from twin.calibrate._cache import enable_compilation_cache
from twin.calibrate._checkpoint import checkpoints
from twin.data import read_run_data
from twin.plots import save_figure
from twin.provenance import write_provenance

matplotlib.use("Agg")  # figures go to files (the library leaves the backend to its caller)
jax.config.update("jax_enable_x64", True)

SUMMARY_COLUMNS = (
    "parameter",
    "unit",
    "estimate",
    "lower_95",
    "upper_95",
    "prior",
    "sd_ratio",
    "identified",
)


@twin_config.with_configured_bounds
def run(cfg: DictConfig, out_dir: Path) -> Calibration:
    """Calibrate to ``cfg.data_dir`` and write the outputs into ``out_dir``."""
    params, structure, solver = twin_config.model_from_config(cfg.model)
    noise = twin_config.noise_from_config(cfg.noise)
    config = calibration_from_config(cfg.fit)
    data = read_run_data(resolve_user_path(str(cfg.data_dir)))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir, cfg, seed=cfg.seed)
    checkpoint_dir = out_dir / "checkpoints"
    # The fit figures need only the fit: they are drawn in a thread while the model discrepancy
    # is learnt (whose compiles and steps leave a core idle on a small machine).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fit-figures") as pool:
        figures = []

        def on_fit(fitted: Calibration) -> None:
            figures.append(pool.submit(_fit_figures, fitted, data, out_dir, cfg.seed))

        with checkpoints(checkpoint_dir):  # a killed run resumes from here (resume=true)
            calibration = _calibrate(cfg, data, config, params, structure, solver, noise, on_fit)
        for done in figures:
            done.result()  # re-raises what the figures raised
    write_calibration(calibration, out_dir / "calibration.nc")
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the result is written: not needed now
    tables = {
        "summary.csv": summary_table(calibration),
        "convergence.csv": calibration.diagnostics,
        "residual_trends.csv": residual_trends(calibration.observations),
        "discrepancy.csv": calibration.discrepancy,
        "selection.csv": calibration.selection,
    }
    for name, table in tables.items():
        if not table.empty:
            with atomic_path(out_dir / name) as tmp:
                table.to_csv(tmp, index=False)
    return calibration


def _fit_figures(calibration: Calibration, data, out_dir: Path, seed: int) -> None:
    """``fit_<variable>.png`` with the fit bands, residuals, parameter intervals, profiles."""
    measured = set(calibration.observations["variable"])
    bands = fit_bands(calibration, data, seed=seed)
    for variable in MEASURED_VARIABLES:
        if variable in measured:
            figure = plot_fits(calibration, variable, bands)
            save_figure(figure, out_dir / f"fit_{variable}.png")
    save_figure(plot_residuals(calibration), out_dir / "residuals.png")
    save_figure(plot_parameter_intervals(calibration), out_dir / "parameters.png")
    if not calibration.profiles.empty:
        save_figure(plot_profiles(calibration), out_dir / "profiles.png")


def _calibrate(cfg, data, config, params, structure, solver, noise, on_fit) -> Calibration:
    return calibrate(
        data,
        config,
        model_parameters=params,
        structure=structure,
        solver=solver,
        noise=noise,
        seed=cfg.seed,
        config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
        progress=cfg.progress,
        forecast_settings=twin_config.forecast_settings_from_config(cfg.forecast),
        on_fit=on_fit,
    )


def summary_table(calibration: Calibration) -> pd.DataFrame:
    """``summary.csv``: estimate, 95 % interval and prior (natural units), posterior/prior SD
    ratio and the identified flag, plus profile bounds for profiled parameters."""
    summary = calibration.summary()
    extra = [c for c in ("profile_lower_95", "profile_upper_95") if c in summary]
    return summary.loc[:, [*SUMMARY_COLUMNS, *extra]]


def report(calibration: Calibration) -> str:
    """The summary table, correlated pairs, noise SDs and convergence, for the terminal."""
    lines = []
    if not calibration.selection.empty:
        lines.append("model structures ranked on the training data (selection.csv):")
        lines.append(calibration.selection.to_string(index=False, float_format="{:.4g}".format))
    lines.append(f"model structure: {calibration.structure.describe()}")
    lines.append(summary_table(calibration).to_string(index=False, float_format="{:.4g}".format))
    pairs = calibration.correlated_pairs()
    if len(pairs):
        lines.append(f"posterior |correlation| > {calibration.high_correlation}:")
        lines.append(pairs.to_string(index=False, float_format="{:.3f}".format))
    misfit = describe_misfit(residual_trends(calibration.observations))
    if misfit is not None:
        lines.append(f"note: {misfit}")
    noise = ", ".join(f"{k}={v:.3g}" for k, v in calibration.noise_sd.items())
    lines.append(f"noise SDs (assay scale): {noise}")
    chosen = calibration.diagnostics.loc[calibration.diagnostics["selected"]].iloc[0]
    lines.append(
        f"objective {calibration.objective:.6g} over {calibration.n_observations} measurements; "
        f"{'converged' if calibration.converged else 'NOT converged'} after "
        f"{chosen['steps']} steps (max|gradient| {chosen['gradient_norm']:.2g}, "
        f"decrement {chosen['decrement']:.2g}; all starts: convergence.csv)"
    )
    scored = calibration.diagnostics.get("forecast_error")
    if scored is not None and scored.notna().sum() > 1:  # fit.start_choice=forecast
        scores = calibration.diagnostics.loc[scored.notna()].drop_duplicates("start")
        lines.append(
            f"starts ended at {len(scores)} different optima; kept start {chosen['from_start']}, "
            "whose donor-held-out forecasts of the training runs erred least ("
            + ", ".join(
                f"start {r.start}: objective {r.objective:.6g}, error {r.forecast_error:.4f}"
                for r in scores.itertuples()
            )
            + ")"
        )
    failed = int(chosen.get("failed_runs", 0))  # stated when 0 too: a count, not a warning
    lines.append(
        f"{'warning: ' if failed else ''}failed ODE solves at the estimate: {failed} of "
        f"{len(calibration.run_ids)} run(s)"
        + (" (penalized in the fit; convergence.csv: failed_runs per start)" if failed else "")
    )
    if not calibration.converged:
        lines.append(
            "WARNING: the calibration did not converge (or a run's solve failed): estimates "
            "may be unreliable; try fit.max_steps, fit.continuations or fit.select"
        )
    return "\n".join(lines)


@hydra.main(config_path="../configs", config_name="calibrate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    enable_compilation_cache(cfg.compilation_cache_dir)
    with exit_on_input_error(cfg):
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        calibration = run(cfg, out_dir)
        print(report(calibration))
        print(f"outputs: {out_dir}")


if __name__ == "__main__":
    main()
