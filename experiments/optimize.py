"""Optimize a recipe robustly over donors: maximize P(batch conforms) through the twin.

    python experiments/optimize.py calibration=PATH start_events=FILE    # from a recorded batch
    python experiments/optimize.py calibration=PATH start_events=FILE start_run_id=R001
    python experiments/optimize.py calibration=PATH downstream.dose_car_pos_cells=2e8 \\
        downstream.min_viability=0.8 downstream.harvest_recovery=1      # the release spec
    python experiments/optimize.py                                     # the recipe config, no data

``start_events`` is a batch record (RUN_DATA.md ``events.csv`` format; ``start_run_id`` picks
the run if it holds several): the decisions (``optimize.decisions``: seed cells, transduction
time, MOI, exchange fraction, IL-2, harvest time) start from what it did, and medium, volumes,
feeds and the other steps stay as recorded. Without it the start is the ``recipe`` config.
With a calibration, the donors come from it and the decisions stay inside what its run data
covered (``optimize.data_guard=restrict``); a calibration that did not converge is warned about.
The start and the results are evaluated exactly on fresh donors of the twin and of a process
the twin has not seen (``holdout``; ``'~holdout'`` skips it). All the work is
:func:`twin.optimize.optimize_recipe`; this script reads the inputs and writes into the run
directory (:func:`twin.optimize.write_optimization`):

- ``optimized_recipe.yaml`` (also ``recipe/optimized.yaml``: ``python experiments/simulate.py
  --config-dir <run dir> recipe=optimized`` runs it): the recipe to run, moved values rounded
  to a settable resolution (its header says which);
- ``optimized_events.csv``: its batch record at full precision (RUN_DATA.md, run ``optimized``);
- ``comparison.csv`` (the twin's fresh donors), ``holdout.csv`` (the unseen process),
  ``decisions.csv``, ``pareto.csv``, ``search.json``, ``convergence.png``, ``pareto.png``,
  ``resolved_config.yaml``, ``provenance.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import jax
import matplotlib
import pandas as pd
import xarray as xr
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import twin.config as twin_config
from twin import TwinInputError
from twin._cli import exit_on_input_error, resolve_user_path
from twin.data import read_run_data
from twin.forecast._io import calibration_from_path
from twin.optimize import (  # importing registers the `optimize` and `holdout` schemas
    DonorPopulation,
    EventsProcess,
    Optimization,
    covered_ranges,
    holdout_process,
    optimize_recipe,
    read_start_events,
    write_optimization,
)
from twin.provenance import write_provenance

matplotlib.use("Agg")
jax.config.update("jax_enable_x64", True)
log = logging.getLogger("optimize")


def settings_from_config(cfg_optimize: DictConfig):
    """The ``optimize`` node as a checked :class:`~twin.optimize.OptimizeConfig`."""
    try:
        return OmegaConf.to_object(cfg_optimize)
    except ValueError as error:  # the config classes' own checks name the key
        message = str(error)
        key = message if message.startswith("optimize.") else f"optimize.{message}"
        raise TwinInputError(key) from None


def calibration_warning(path: str) -> str | None:
    """One line if the calibration did not converge: its global attribute ``converged``
    (1/0) when the file has one, else the diagnostics of its selected start."""
    target = resolve_user_path(path)
    target = target / "calibration.nc" if target.is_dir() else target
    with xr.open_dataset(target) as ds:
        flag = ds.attrs.get("converged")
    converged = calibration_from_path(path).converged if flag is None else bool(int(flag))
    if converged:
        return None
    return (
        f"the calibration {target} did not converge: its population and donor spread may be "
        "wrong, and so may this optimization (recalibrate, e.g. with more steps or starts)"
    )


def events_processes(cfg: DictConfig) -> list[EventsProcess]:
    """The processes of ``evaluate_on`` (name -> a ``_target_`` config building a callable
    that runs a batch record for its donors, or an :class:`~twin.optimize.EventsProcess`)."""
    processes = []
    for name, node in (cfg.get("evaluate_on") or {}).items():
        try:
            built = instantiate(node)
        except Exception as error:  # a wrong _target_ or argument: the user's to fix
            cause = error.__cause__ or error
            raise TwinInputError(f"evaluate_on.{name}: cannot build it ({cause})") from None
        if isinstance(built, EventsProcess):
            processes.append(built)
        elif callable(built):
            processes.append(EventsProcess(str(name), str(node.get("_target_")), built))
        else:
            raise TwinInputError(
                f"evaluate_on.{name}: {node.get('_target_')} built a {type(built).__name__}, "
                "not a callable taking a batch record"
            )
    return processes


def _coverage(cfg: DictConfig) -> tuple[dict[str, tuple[float, float]], str]:
    """The decision ranges the calibration data covered, and where they came from: the runs of
    ``optimize.data_dir`` if set, else the calibration's own runs in its config's ``data_dir``
    (``optimize.data_ranges`` are added by :func:`~twin.optimize.optimize_recipe`)."""
    opt = cfg.optimize
    source = "none (no calibration data: nothing can be checked for extrapolation)"
    folder, run_ids = None, None
    if opt.data_dir is not None:
        folder = resolve_user_path(str(opt.data_dir))
        if not folder.is_dir():
            raise TwinInputError(f"optimize.data_dir={str(opt.data_dir)!r}: no folder at {folder}")
    elif cfg.calibration is not None:
        calibration = calibration_from_path(cfg.calibration)
        stored = yaml.safe_load(calibration.config or "") or {}
        run_ids = calibration.run_ids
        if stored.get("data_dir") is None:
            source = "unknown: the calibration records no data_dir (set optimize.data_dir)"
        else:
            folder = resolve_user_path(str(stored["data_dir"]))
            if not folder.is_dir():
                source = f"unknown: the calibration's data_dir {folder} is gone"
                source += " (set optimize.data_dir)"
                folder = None
    ranges: dict[str, tuple[float, float]] = {}
    if folder is not None:
        data = read_run_data(folder)
        if run_ids is not None:
            run_ids = [r for r in run_ids if r in set(data.run_ids)]
        ranges = covered_ranges(data, run_ids)
        count = len(data.run_ids) if run_ids is None else len(run_ids)
        source = f"{folder} ({count} runs)"
    for name, pair in opt.data_ranges.items():
        ranges[name] = (float(pair[0]), float(pair[1]))
    if opt.data_ranges:
        source += f"; optimize.data_ranges for {sorted(opt.data_ranges)}"
    return ranges, source


@twin_config.with_configured_bounds
def run(cfg: DictConfig, out_dir: Path | None = None) -> Optimization:
    """Optimize as ``cfg`` says, write the files into ``out_dir`` (default: Hydra's run
    directory) and return the :class:`~twin.optimize.Optimization`."""
    out_dir = Path(HydraConfig.get().runtime.output_dir) if out_dir is None else Path(out_dir)
    params, structure, solver = twin_config.model_from_config(cfg.model)
    recipe = twin_config.recipe_from_config(cfg.recipe)
    downstream = twin_config.downstream_from_config(cfg.downstream)
    settings = settings_from_config(cfg.optimize)
    processes = []
    if cfg.get("holdout") is not None:
        processes.append(holdout_process(OmegaConf.to_object(cfg.holdout), params, structure))
    processes += events_processes(cfg)
    warnings = []
    if cfg.calibration is None:
        population = DonorPopulation(params, dict(settings.donor_sd))
    else:
        calibration = calibration_from_path(cfg.calibration)
        population, structure = calibration, calibration.structure
        if (line := calibration_warning(str(cfg.calibration))) is not None:
            log.warning(line)
            warnings.append(line)
    start_label = "the recipe config (recipe.*)"
    if cfg.start_events is not None:
        record = read_start_events(
            resolve_user_path(str(cfg.start_events)),
            run_id=None if cfg.start_run_id is None else str(cfg.start_run_id),
            medium_glucose_mM=recipe.medium_glucose_mM,
            medium_il2_IU_per_mL=recipe.medium_il2_IU_per_mL,
        )
        recipe = record.recipe
        start_label = f"run {record.run_id} of {record.path}"
    elif cfg.start_run_id is not None:
        raise TwinInputError(
            f"start_run_id={cfg.start_run_id!r}: needs start_events=FILE (the batch record)"
        )
    data_ranges, data_source = _coverage(cfg)
    result = optimize_recipe(
        population,
        recipe,
        settings,
        downstream=downstream,
        structure=structure,
        solver=solver,
        data_ranges=data_ranges,
        data_source=data_source,
        processes=processes,
        start_label=start_label,
        capacity_ml=cfg.cartridge_capacity_ml,
        progress=log.info,
    )
    result.notes[:0] = [f"WARNING: {line}" for line in warnings]
    result.warnings[:0] = warnings
    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir, cfg, seed=settings.seed)
    write_optimization(result, out_dir)
    return result


PRINTED = [
    "recipe",
    "p_conforming",
    "p_conforming_90_low",
    "p_conforming_90_high",
    "p_gain_vs_start",
    "p_gain_90_low",
    "p_gain_90_high",
    "viable_car_pos_cells",
    "cost_usd",
    "vector_vs_start",
    "vector_limit_met",
    "extrapolates",
    "failed_solves",
]


def report(result: Optimization, cfg: DictConfig) -> str:
    """The comparison tables and the notes, for the terminal."""
    fmt = {"float_format": lambda x: f"{x:.4g}", "index": False}
    lines = ["twin, fresh donors (comparison.csv):"]
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        lines.append(result.comparison[PRINTED].to_string(**fmt))
        for name, table in result.evaluations.items():
            description = cfg.holdout.description if name == "holdout" else name
            if name in (cfg.get("evaluate_on") or {}):
                description = f"{name} ({cfg.evaluate_on[name].get('_target_')})"
            lines.append(f"unseen process: {description} ({name}.csv):")
            lines.append(table[PRINTED].to_string(**fmt))
    return "\n".join([*lines, *result.notes])


@hydra.main(config_path="../configs", config_name="optimize", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Optimize a recipe from a recorded batch (or the recipe config) over donors."""
    with exit_on_input_error(cfg):
        began = time.perf_counter()
        result = run(cfg)
        print(report(result, cfg))
        out_dir = HydraConfig.get().runtime.output_dir
        print(f"run time: {time.perf_counter() - began:.0f} s; outputs: {out_dir}")


if __name__ == "__main__":
    main()
