"""Design-space sweep: simulate a design of recipes (and kinetic parameters) chunk by chunk.

    python experiments/sweep.py                                   # configs/sweep/default.yaml
    python experiments/sweep.py \
        'sweep.space={moi:[1,10],seed_cells:[5e7,2e8],harvest_time_h:[192,264]}'
    python experiments/sweep.py sweep.design=lhs sweep.n_points=100000 sweep.n_donors=16
    python experiments/sweep.py sweep.design=saltelli sweep.n_points=256   # + Sobol indices
    python experiments/sweep.py hydra.run.dir=PATH                # again: resumes, no recompute
    python experiments/sweep.py -m hydra/launcher=submitit_slurm sweep.n_shards=8 \\
        'sweep.shard=range(8)' sweep.chunk_size=65536             # shards (docs/sweep.md)
    python experiments/sweep.py sweep.merge=multirun/sweep/DATE   # join the shards

Writes into the run directory: ``sweep.zarr`` (xarray/Zarr; dim ``point``, one coordinate per
swept name, the harvest outcomes, ``success`` and ``failure`` per simulation; read it with
``twin.sweep.open_sweep``), ``summary.json`` (timings, failures, the design-space region),
``surface_<x>_<y>.png`` (response surfaces of every pair of swept names),
``design_space.png``, ``sensitivity.csv`` (with ``sweep.design=saltelli``),
``resolved_config.yaml`` and ``provenance.json``. A shard (``sweep.n_shards > 1``) writes only
its store; the merge writes the rest. See docs/sweep.md.
"""

from __future__ import annotations

import os

# One XLA CPU device runs a chunk's ODE loops on one core: one device per core lets every
# core work on its share of the chunk. Read once, when JAX starts (as experiments/calibrate.py).
if __name__ == "__main__":
    os.environ.setdefault("JAX_NUM_CPU_DEVICES", str(os.cpu_count() or 1))

import itertools
import json
import time
from pathlib import Path

import hydra
import jax
import matplotlib
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import twin.config as twin_config
from twin import TwinInputError
from twin._atomic import atomic_path
from twin._cli import exit_on_input_error, resolve_user_path
from twin._limits import MAX_SIMULATIONS, over_limit
from twin.forecast._io import calibration_from_path
from twin.kinetics import PARAMETER_NAMES
from twin.optimize import DonorPopulation, population_from_calibration
from twin.plots import save_figure
from twin.provenance import write_provenance
from twin.sweep import (
    STORE_NAME,
    SweepModel,
    SweepPlan,
    bytes_per_point,
    check_design,
    chunk_size_for,
    design_size,
    design_space_region,
    local_devices,
    make_chunk_evaluator,
    merge_stores,
    open_sweep,
    plot_design_space,
    plot_surface,
    response_surface,
    run_sweep,
    sensitivity_indices,
    shard_range,
    sweep_space,
)

matplotlib.use("Agg")
jax.config.update("jax_enable_x64", True)

MAX_SURFACE_PAIRS = 6


def _settings(cfg: DictConfig):
    s = cfg.sweep
    space = sweep_space(OmegaConf.to_container(s.space, resolve=True) or {})
    check_design(s.design, s.n_points, space.dimension)
    for key, low in (("n_donors", 0), ("n_shards", 1), ("surface_bins", 2), ("seed", 0)):
        if not (isinstance(s[key], int) and s[key] >= low):
            raise TwinInputError(f"sweep.{key}={s[key]!r}: must be an integer >= {low}")
    if not (isinstance(s.shard, int) and 0 <= s.shard < s.n_shards):
        raise TwinInputError(f"sweep.shard={s.shard!r}: must be in [0, {s.n_shards})")
    if s.chunk_size is not None and not (isinstance(s.chunk_size, int) and s.chunk_size >= 1):
        raise TwinInputError(f"sweep.chunk_size={s.chunk_size!r}: must be an integer >= 1 or null")
    if s.n_donors:
        unknown = sorted(set(s.donor_sd) - set(PARAMETER_NAMES))
        if unknown:
            raise TwinInputError(f"sweep.donor_sd: unknown kinetic parameter(s) {unknown}")
        both = sorted(n for n in space.names if s.donor_sd.get(n, 0) and cfg.calibration is None)
        if both:
            raise TwinInputError(
                f"sweep.space.{both[0]}: swept and also varied per donor (sweep.donor_sd); "
                "drop one of them"
            )
    return space


def _donors(cfg: DictConfig, params, structure):
    """``(parameters for the chunk function, donor table, structure)``."""
    s = cfg.sweep
    if cfg.calibration is not None:
        calibration = calibration_from_path(resolve_user_path(cfg.calibration))
        population, structure = population_from_calibration(calibration), calibration.structure
        params = population.parameters
    else:
        population = DonorPopulation(params, dict(s.donor_sd))
    if not s.n_donors:
        return params, None, structure
    donors = population.sample(jax.random.PRNGKey(s.seed), s.n_donors)
    varied = {
        n: np.asarray(getattr(donors, n))
        for n in PARAMETER_NAMES
        if np.ptp(np.asarray(getattr(donors, n))) > 0
    }
    return donors, varied, structure


def _analysis(cfg: DictConfig, out_dir: Path) -> dict:
    """Figures, the design-space region and (saltelli) sensitivity indices of the store."""
    s = cfg.sweep
    ds = open_sweep(out_dir / STORE_NAME)
    names = list(ds.attrs["sweep"]["space"])
    region, summary = design_space_region(ds, level=s.robust_level)
    result: dict = {"design_space": summary}
    outcome = s.surface_outcome or (
        "p_conforming" if "donor" in ds.dims else "viable_car_pos_cells"
    )
    if s.figures:
        for x, y in itertools.islice(itertools.combinations(names, 2), MAX_SURFACE_PAIRS):
            surface = response_surface(ds, x, y, outcome, bins=s.surface_bins)
            save_figure(plot_surface(surface), out_dir / f"surface_{x}_{y}.png")
        if len(names) >= 2:
            fig = plot_design_space(ds, region, names[0], names[1], summary["rule"])
            save_figure(fig, out_dir / "design_space.png")
    if ds.attrs["sweep"]["design"] == "saltelli":
        wanted = list(s.sensitivity_outcomes) + (["p_conforming"] if "donor" in ds.dims else [])
        tables = []
        for name in wanted:
            table = sensitivity_indices(ds, name)
            table.insert(0, "outcome", name)
            tables.append(table.rename_axis("name").reset_index())
        import pandas as pd

        sensitivity = pd.concat(tables, ignore_index=True)
        with atomic_path(out_dir / "sensitivity.csv") as tmp:
            sensitivity.to_csv(tmp, index=False, float_format="%.6g")
        result["sensitivity"] = sensitivity
    return result


@twin_config.with_configured_bounds
def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Run (or resume, or merge) the sweep into ``out_dir`` and return a summary dict."""
    s = cfg.sweep
    if not isinstance(s.float64, bool):
        raise TwinInputError(f"sweep.float64={s.float64!r}: must be true or false")
    # A context, not the module's global setting: a launcher (submitit) may run ``run`` in a
    # process that never executed this module's top level, and a caller keeps its own.
    with jax.enable_x64(s.float64):
        return _run(cfg, Path(out_dir))


def _run(cfg: DictConfig, out_dir: Path) -> dict:
    s = cfg.sweep
    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir, cfg, seed=s.seed)
    if s.merge is not None:
        folder = resolve_user_path(str(s.merge))
        shards = sorted(folder.glob(f"*/{STORE_NAME}")) if folder.is_dir() else []
        if not shards:
            raise TwinInputError(f"sweep.merge={str(s.merge)!r}: no */{STORE_NAME} under {folder}")
        merge_stores(shards, out_dir / STORE_NAME)
        summary = {"merged_shards": [str(p) for p in shards]}
        summary.update(_analysis(cfg, out_dir))
        _write_summary(out_dir, summary)
        return summary
    space = _settings(cfg)
    params, structure, solver = twin_config.model_from_config(cfg.model)
    recipe = twin_config.recipe_from_config(cfg.recipe)
    downstream = twin_config.downstream_from_config(cfg.downstream)
    params, donor_table, structure = _donors(cfg, params, structure)
    model = SweepModel(space, recipe, downstream, structure, solver)
    devices = local_devices(s.devices)
    total = design_size(s.design, s.n_points, space.dimension)
    simulations = total * max(s.n_donors, 1)
    if limit := over_limit("sweep.n_points", s.n_points, simulations, MAX_SIMULATIONS, "solves"):
        raise TwinInputError(limit)
    chunk_size = s.chunk_size or chunk_size_for(
        s.memory_budget_mb, bytes_per_point(model, s.n_donors), total
    )
    start, stop = shard_range(total, chunk_size, s.shard, s.n_shards)
    fingerprint = {
        key: OmegaConf.to_container(cfg[key], resolve=True)
        for key in ("model", "recipe", "downstream")
    }
    fingerprint["calibration"] = cfg.calibration
    fingerprint["float64"] = bool(jax.config.jax_enable_x64)
    if s.n_donors:
        fingerprint["donor_sd"] = OmegaConf.to_container(s.donor_sd)
    plan = SweepPlan(
        space, s.design, s.n_points, s.seed, chunk_size, s.n_donors, start, stop, fingerprint
    )
    began = time.perf_counter()
    report = run_sweep(
        out_dir / STORE_NAME,
        plan,
        None,
        params,
        donors=donor_table,
        progress=s.progress,
        make_evaluate=make_chunk_evaluator(model, devices, bool(s.n_donors), chunk_size),
    )
    summary: dict = {
        "points": report.n_points,
        "design_points": total,
        "shard": [s.shard, s.n_shards],
        "chunk_size": chunk_size,
        "chunks": report.n_chunks,
        "chunks_computed": report.chunks_computed,
        "chunks_resumed": report.chunks_resumed,
        "devices": devices,
        "simulations_per_point": max(s.n_donors, 1),
        "first_chunk_s_incl_compile": round(report.compile_s, 3),
        "other_chunks_s": round(report.evaluate_s, 3),
        "wall_s": round(time.perf_counter() - began, 3),
        "failed_simulations": report.failed_simulations,
        "machine": str(jax.devices()[0].platform),
    }
    if s.n_shards == 1:
        summary.update(_analysis(cfg, out_dir))
    _write_summary(out_dir, summary)
    return summary


def _write_summary(out_dir: Path, summary: dict) -> None:
    plain = {k: v for k, v in summary.items() if k != "sensitivity"}
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(plain, indent=2, default=str))


@hydra.main(config_path="../configs", config_name="sweep", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_input_error(cfg):
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        summary = run(cfg, out_dir)
        lines = [f"sweep.zarr in {out_dir}"]
        if "points" in summary:
            lines.append(
                f"{summary['points']} points ({summary['chunks_computed']} chunks computed, "
                f"{summary['chunks_resumed']} already done), {summary['failed_simulations']} "
                f"failed simulations, {summary['wall_s']} s"
            )
        region = summary.get("design_space")
        if region:
            lines.append(
                f"design space ({region['rule']}): {region['inside']} of {region['points']} points"
            )
        if "sensitivity" in summary:
            lines.append(summary["sensitivity"].to_string(index=False, float_format="%.3f"))
        print("\n".join(lines))


if __name__ == "__main__":
    main()
