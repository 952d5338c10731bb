"""Benchmark: batched JAX simulations per second vs. SciPy one by one, in the same run.

    python experiments/benchmark.py batch_size=1024

Both solve the default recipe's schedule with the same vector field, jump maps and tolerances;
the batch varies the growth rate across simulations (log-normal, seeded). Writes
``benchmark.json`` into the run directory. Machines are shared and noisy: read the ratio, not
the absolute numbers.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import hydra
import jax
import jax.numpy as jnp
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import twin.config as twin_config
from twin import simulate
from twin._atomic import atomic_path
from twin._cli import exit_on_input_error
from twin.provenance import write_provenance
from twin.reference import ReferenceSolver

jax.config.update("jax_enable_x64", True)


def _timed(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def run(cfg: DictConfig, out_dir: Path) -> dict:
    params, structure, solver = twin_config.model_from_config(cfg.model)
    schedule = twin_config.recipe_from_config(cfg.recipe).schedule()
    save_times_h = jnp.asarray([float(schedule.end_time_h)])
    rng = np.random.default_rng(cfg.seed)
    growth = params.max_growth_rate_per_h * np.exp(
        cfg.donor_log_sd * rng.standard_normal(cfg.batch_size)
    )
    batch_params = jax.tree.map(lambda x: jnp.broadcast_to(x, (cfg.batch_size,)), params)
    batch_params = batch_params.replace(max_growth_rate_per_h=growth)

    batched = jax.jit(jax.vmap(lambda p: simulate(p, schedule, save_times_h, structure, solver)))
    compile_s = _timed(lambda: batched(batch_params))
    jax_s = statistics.median(_timed(lambda: batched(batch_params)) for _ in range(cfg.repeats))
    failures = int(cfg.batch_size - np.sum(np.asarray(batched(batch_params).success)))

    reference = ReferenceSolver(structure)
    one = jax.tree.map(lambda x: x[0], batch_params)
    reference.solve(one, schedule, np.asarray(save_times_h), method=cfg.scipy_method)  # warm-up
    scipy_s = 0.0
    for i in range(cfg.scipy_runs):
        p_i = jax.tree.map(lambda x, i=i: x[i], batch_params)
        scipy_s += _timed(
            lambda p_i=p_i: reference.solve(
                p_i,
                schedule,
                np.asarray(save_times_h),
                rtol=solver.rtol,
                atol=solver.atol,
                method=cfg.scipy_method,
            )[1]
        )
    jax_rate = cfg.batch_size / jax_s
    scipy_rate = cfg.scipy_runs / scipy_s
    result = {
        "device": str(jax.devices()[0]),
        "device_count": jax.device_count(),
        "batch_size": cfg.batch_size,
        "jax_compile_s": compile_s,
        "jax_batch_s": jax_s,
        "jax_sims_per_s": jax_rate,
        "jax_failures": failures,
        "scipy_method": cfg.scipy_method,
        "scipy_sims_per_s": scipy_rate,
        "speedup_vs_scipy": jax_rate / scipy_rate,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir, cfg, seed=cfg.seed)
    with atomic_path(out_dir / "benchmark.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    return result


@hydra.main(config_path="../configs", config_name="benchmark", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_input_error(cfg):
        result = run(cfg, Path(HydraConfig.get().runtime.output_dir))
        for key, value in result.items():
            print(
                f"{key:>20s}: {value:.4g}" if isinstance(value, float) else f"{key:>20s}: {value}"
            )


if __name__ == "__main__":
    main()
