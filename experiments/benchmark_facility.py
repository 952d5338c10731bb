"""Benchmark (not a test): one simulated year of a factory, biology included.

    python experiments/benchmark_facility.py                      # Bridgewater, one year
    python experiments/benchmark_facility.py facility.horizon_days=91

Times (wall and CPU) the discrete-event part and the biology (every harvested batch solved on
its realized and its planned schedule) separately; the simulator's compile is timed apart, on a
short warm-up run of the same configuration (same chunk shape), and is not in the biology time.
Writes ``benchmark_facility.json`` into the run directory. The machine may be shared: the load
average is recorded beside the times, and CPU time is the steadier figure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import hydra
import jax
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm import tqdm

import twin.config as twin_config
from twin._atomic import atomic_path
from twin._cli import exit_on_input_error
from twin.facility import facility_from_config, run_facility
from twin.provenance import write_provenance

jax.config.update("jax_enable_x64", True)


class _Clock:
    """Wall and CPU (all threads of this process) seconds since the last call."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> dict[str, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        out = {"wall_s": wall - self.wall, "cpu_s": cpu - self.cpu}
        self.wall, self.cpu = wall, cpu
        return out


def run(cfg: DictConfig, out_dir: Path) -> dict:
    facility = facility_from_config(cfg.facility)
    params, structure, solver = twin_config.model_from_config(cfg.model)
    downstream = twin_config.downstream_from_config(cfg.downstream)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir, cfg, seed=facility.seed)
    load_before = os.getloadavg()

    clock = _Clock()
    warm_up = dataclasses.replace(facility, shuttles=1, horizon_days=14.0)
    run_facility(warm_up, params, downstream, structure=structure, solver=solver)
    compile_time = clock.lap()

    bar = tqdm(total=24.0 * facility.horizon_days, desc="factory (h)", disable=not cfg.progress)
    clock = _Clock()
    result = run_facility(
        facility, params, downstream, structure=structure, solver=solver, des_progress=bar
    )
    total = clock.lap()
    bar.close()
    timings = result.timings_s
    report = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "jax_devices": [str(d) for d in jax.devices()],
            "load_average_1_5_15min_before": load_before,
            "load_average_1_5_15min_after": os.getloadavg(),
        },
        "batches_arrived": result.summary["batches_arrived"],
        "batches_started": result.summary["batches_started"],
        "batches_harvested": result.summary["batches_harvested"],
        "module_operations_logged": len(result.module_log),
        "solves": timings["solves"],
        "warm_up_with_compile": compile_time,
        "run": total,
        "des_wall_s": timings["des"],
        "biology_wall_s": timings["biology"],
        "des_fraction_of_run": timings["des"] / total["wall_s"],
        "solves_per_wall_s": timings["solves"] / timings["biology"],
        "summary": {
            k: result.summary[k]
            for k in ("doses_per_year", "bay_utilization", "bottleneck", "median_turnaround_days")
        },
    }
    with atomic_path(out_dir / "benchmark_facility.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    return report


@hydra.main(config_path="../configs", config_name="benchmark_facility", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_input_error(cfg):
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        report = run(cfg, out_dir)
        print(json.dumps(report, indent=2))
        print(f"outputs: {out_dir}")


if __name__ == "__main__":
    main()
