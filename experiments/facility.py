"""A factory of Cell Shuttles: queues at shared modules, QC, throughput, each batch's biology
on its realized and planned schedule, cost of goods.

    python experiments/facility.py                                 # one Shuttle, four weeks
    python experiments/facility.py facility=bridgewater            # 38 Shuttles, one year
    python experiments/facility.py facility=surge facility.seed=3

Writes into the run directory: ``batches.csv``, ``module_log.csv``, ``facility_summary.json``
(with the run's timings), ``demand_sweep.csv``, ``cost_breakdown.csv``, the figures
``gantt.png``, ``utilization.png`` and ``demand.png``, ``resolved_config.yaml`` and
``provenance.json``. See docs/facility.md.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import hydra
import jax
import matplotlib
import numpy as np
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm import tqdm

import twin.config as twin_config
from twin import TwinInputError
from twin._atomic import atomic_path
from twin._cli import exit_on_input_error, overrides_label
from twin._limits import MAX_FACILITY_DAYS, over_limit
from twin.facility import (
    COST_COLUMNS,
    demand_sweep,
    facility_from_config,
    plot_demand,
    plot_gantt,
    plot_utilization,
    run_facility,
)
from twin.plots import save_figure, with_note
from twin.provenance import write_provenance

matplotlib.use("Agg")  # figures go to files (the library leaves the backend to its caller)
jax.config.update("jax_enable_x64", True)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def run(cfg: DictConfig, out_dir: Path, title_note: str = "") -> dict:
    """Run the factory of ``cfg.facility``, write the outputs into ``out_dir``; return the
    summary (with ``timings_s``). ``title_note`` (e.g. the command-line overrides, which tell
    a multirun's figures apart) heads every figure."""
    facility = facility_from_config(cfg.facility)
    days = cfg.demand_sweep.horizon_days
    if limit := over_limit("demand_sweep.horizon_days", days, days, MAX_FACILITY_DAYS, "days"):
        raise TwinInputError(limit)
    params, structure, solver = twin_config.model_from_config(cfg.model)
    downstream = twin_config.downstream_from_config(cfg.downstream)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = out_dir / "checkpoints"  # the biology, per chunk, until the run is done
    if not cfg.get("resume", False):
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    write_provenance(out_dir, cfg, seed=facility.seed)

    bars = {}
    if cfg.progress:
        bars["des"] = tqdm(total=24.0 * facility.horizon_days, desc="factory (h)", unit="h")
        bars["bio"] = tqdm(desc="biology (solves)", unit="solve")
    try:
        result = run_facility(
            facility,
            params,
            downstream,
            structure=structure,
            solver=solver,
            des_progress=bars.get("des"),
            biology_progress=bars.get("bio"),
            checkpoint_dir=checkpoint_dir,
        )
    finally:
        for bar in bars.values():
            bar.close()
    summary = dict(result.summary)
    summary["timings_s"] = result.timings_s

    _write_csv(result.batches, out_dir / "batches.csv")
    if cfg.write_module_log:
        _write_csv(result.module_log, out_dir / "module_log.csv")
    finished = result.batches["fill_finish_end_h"].notna()
    breakdown = result.batches.loc[finished].groupby("recipe")[list(COST_COLUMNS)].mean()
    _write_csv(breakdown.reset_index(), out_dir / "cost_breakdown.csv")

    if cfg.figures:
        units = {}
        for name, spec in facility.modules.items():
            units[name] = (cfg.gantt.shuttle * spec.capacity, spec.capacity)
        robots = facility.robots_per_shuttle
        units["robot"] = (cfg.gantt.shuttle * robots, robots)
        fig = plot_gantt(
            result.batches,
            result.module_log,
            shuttle=cfg.gantt.shuttle,
            start_day=cfg.gantt.start_day,
            days=cfg.gantt.days,
            bays_per_shuttle=facility.bays_per_shuttle,
            module_units=units,
        )
        save_figure(with_note(fig, title_note), out_dir / "gantt.png")
        save_figure(with_note(plot_utilization(summary), title_note), out_dir / "utilization.png")
        if len(result.batches) <= cfg.demand_sweep.max_batches:
            sweep = demand_sweep(
                facility, list(cfg.demand_sweep.factors), cfg.demand_sweep.horizon_days
            )
            _write_csv(sweep, out_dir / "demand_sweep.csv")
            save_figure(with_note(plot_demand(sweep), title_note), out_dir / "demand.png")
    with atomic_path(out_dir / "facility_summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=_json_default))
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # every output is written
    return summary


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value)}")


@hydra.main(config_path="../configs", config_name="facility", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_input_error(cfg):
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        summary = run(cfg, out_dir, title_note=overrides_label(HydraConfig.get()))
        for key in (
            "batches_started",
            "batches_released",
            "batches_conforming",
            "doses_per_year",
            "bay_utilization",
            "median_turnaround_days",
            "p90_turnaround_days",
            "bottleneck",
            "cogs_per_batch_usd",
            "cogs_per_dose_usd",
            "failed_solves",
        ):
            print(f"{key}: {summary[key]}")
        print(f"outputs: {out_dir}")


if __name__ == "__main__":
    main()
