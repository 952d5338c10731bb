"""One library function for a factory run: demand -> SimPy model -> biology -> costs -> summary."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..kinetics import KineticParameters, ModelStructure
from ..process import Downstream
from ..simulate import SolverSettings
from ._biology import batch_schedules, donor_parameters, simulate_outcomes
from ._config import FacilityConfig, check_config
from ._cost import COST_COLUMNS, annual_fixed_cost_usd, batch_costs
from ._model import Arrivals, DesResult, run_des, sample_arrivals
from ._plan import RecipePlan, compile_plans

BATCH_COLUMNS: tuple[str, ...] = (
    "batch_id",
    "shuttle",
    "bay",
    "donor_id",
    "arrival_h",
    "seed_h",
    "planned_harvest_h",
    "harvest_h",
    "release_h",
    "viable_car_pos_cells",
    "viable_car_pos_cells_if_on_time",
    "conforming",
    "doses",
)
MODULE_LOG_COLUMNS: tuple[str, ...] = (
    "module",
    "unit",
    "batch_id",
    "operation",
    "start_h",
    "end_h",
)
SUMMARY_KEYS: tuple[str, ...] = (
    "batches_started",
    "batches_released",
    "batches_conforming",
    "doses_released",
    "doses_per_year",
    "bay_utilization",
    "module_utilization",
    "median_turnaround_days",
    "p90_turnaround_days",
    "bottleneck",
    "cogs_per_batch_usd",
    "cogs_per_dose_usd",
)


@dataclasses.dataclass
class FacilityResult:
    """``batches`` (one row per arriving batch; :data:`BATCH_COLUMNS` first), ``module_log``
    (:data:`MODULE_LOG_COLUMNS`), ``summary`` (:data:`SUMMARY_KEYS` first), ``timings_s``
    (``des``, ``biology``), and the compiled ``plans``."""

    batches: pd.DataFrame
    module_log: pd.DataFrame
    summary: dict
    timings_s: dict[str, float]
    plans: list[RecipePlan]


def run_des_only(
    cfg: FacilityConfig, *, progress=None
) -> tuple[DesResult, list[RecipePlan], Arrivals]:
    """The discrete-event part alone (no biology): for capacity and demand sweeps."""
    check_config(cfg)
    plans = compile_plans(cfg)
    rng = np.random.default_rng(cfg.seed)
    arrivals = sample_arrivals(cfg, rng)
    return run_des(cfg, plans, arrivals, rng, progress=progress), plans, arrivals


def run_facility(
    cfg: FacilityConfig,
    population: KineticParameters,
    downstream: Downstream,
    *,
    structure: ModelStructure = ModelStructure(),
    solver: SolverSettings = SolverSettings(),
    des_progress=None,
    biology_progress=None,
    checkpoint_dir: Path | None = None,
) -> FacilityResult:
    """Run the factory of ``cfg`` with the biology of ``population`` (the mean donor).

    Every batch harvested within the horizon is simulated twice with the project's simulator:
    on its realized schedule and on its planned (recipe) one. With ``checkpoint_dir`` the
    biology is checkpointed per chunk (see :func:`simulate_outcomes`): a rerun of a killed run
    solves only the chunks it had not finished (the discrete-event part is seeded and cheap).

    **Raises:** :class:`~twin.TwinInputError` for a bad config (naming ``facility.<key>``).
    """
    check_config(cfg)
    t0 = time.perf_counter()
    plans = compile_plans(cfg)
    rng = np.random.default_rng(cfg.seed)
    arrivals = sample_arrivals(cfg, rng)
    des = run_des(cfg, plans, arrivals, rng, progress=des_progress)
    t1 = time.perf_counter()

    harvested = np.flatnonzero(~np.isnan(des.harvest_h))
    params = donor_parameters(cfg, population, arrivals, cfg.seed)
    recipe = arrivals.recipe
    realized, planned = batch_schedules(
        plans, recipe[harvested], [des.lateness_h[i] for i in harvested]
    )
    both = {k: np.concatenate([realized[k], planned[k]]) for k in realized}
    both_params = {k: np.concatenate([v[harvested], v[harvested]]) for k, v in params.items()}
    outcomes = simulate_outcomes(
        both_params,
        both,
        downstream,
        structure=structure,
        solver=solver,
        chunk=cfg.biology_chunk,
        progress=biology_progress,
        checkpoint_dir=checkpoint_dir,
    )
    t2 = time.perf_counter()

    n = len(arrivals.arrival_h)
    m = len(harvested)
    sterile = rng.uniform(0.0, 1.0, n) >= cfg.qc.sterility_failure_probability
    batches = pd.DataFrame(
        {
            "batch_id": np.arange(n),
            "shuttle": des.shuttle,
            "bay": des.bay,
            "donor_id": arrivals.donor_id,
            "arrival_h": arrivals.arrival_h,
            "seed_h": des.seed_h,
            "planned_harvest_h": des.planned_harvest_h,
            "harvest_h": des.harvest_h,
            "release_h": des.release_h,
        }
    )

    def per_batch(values: np.ndarray, fill=np.nan) -> np.ndarray:
        column = np.full(n, fill, dtype=float)
        column[harvested] = values
        return column

    real = {k: v[:m] for k, v in outcomes.items()}
    on_time = {k: v[m:] for k, v in outcomes.items()}
    success = per_batch(real["success"] * on_time["success"], 0.0).astype(bool)
    conforming_bio = per_batch(real["conforming"], 0.0).astype(bool) & success
    batches["viable_car_pos_cells"] = per_batch(real["viable_car_pos_cells"])
    batches["viable_car_pos_cells_if_on_time"] = per_batch(on_time["viable_car_pos_cells"])
    batches["conforming"] = conforming_bio & sterile
    batches["doses"] = per_batch(real["doses"])
    # Extra columns after the required ones.
    batches["recipe"] = [plans[r].name for r in recipe]
    batches["donor_group"] = [list(cfg.donors)[g] for g in arrivals.group]
    batches["bay_start_h"] = des.bay_start_h
    batches["fill_finish_end_h"] = des.fill_finish_end_h
    batches["max_lateness_h"] = per_batch(
        np.array([des.lateness_h[i].max() for i in harvested]) if m else np.zeros(0)
    )
    for name in ("viability", "car_pos_fraction", "vcn_per_transduced_cell", "product_viability"):
        batches[name] = per_batch(real[name])
        batches[f"{name}_if_on_time"] = per_batch(on_time[name])
    batches["doses_if_on_time"] = per_batch(on_time["doses"])
    batches["conforming_if_on_time"] = (
        per_batch(on_time["conforming"], 0.0).astype(bool) & success & sterile
    )
    batches["sterility_pass"] = sterile
    batches["solver_success"] = success
    batches["released"] = batches["conforming"] & (batches["release_h"] <= des.horizon_h)
    batches["turnaround_days"] = (batches["release_h"] - batches["arrival_h"]) / 24.0
    finished = ~np.isnan(des.fill_finish_end_h)
    costs = batch_costs(cfg, plans, recipe, finished)
    for name in COST_COLUMNS:
        batches[name] = np.where(finished, costs[name], np.nan)

    module_log = pd.DataFrame(des.module_log, columns=list(MODULE_LOG_COLUMNS))
    module_log = module_log.sort_values(["module", "unit", "start_h"], kind="stable")
    summary = summarize(cfg, batches, module_log, des.horizon_h)
    summary["failed_solves"] = int(m - np.sum(real["success"] * on_time["success"]))
    timings = {"des": t1 - t0, "biology": t2 - t1, "solves": 2 * m}
    return FacilityResult(batches, module_log.reset_index(drop=True), summary, timings, plans)


def module_utilization(
    cfg: FacilityConfig, module_log: pd.DataFrame, horizon_h: float
) -> dict[str, dict[str, float]]:
    """Per module: ``busy`` (batch work) and ``down`` (repairs) as fractions of unit-hours."""
    start = module_log["start_h"].clip(upper=horizon_h)
    end = module_log["end_h"].clip(upper=horizon_h)
    length = (end - start).to_numpy()
    repair = (module_log["operation"] == "repair").to_numpy()
    modules = module_log["module"].to_numpy()
    units = {name: spec.capacity * cfg.shuttles for name, spec in cfg.modules.items()}
    units["robot"] = cfg.robots_per_shuttle * cfg.shuttles
    units["qc"] = cfg.qc.capacity
    out = {}
    for name, count in units.items():
        here = modules == name
        capacity_h = count * horizon_h
        out[name] = {
            "busy": float(length[here & ~repair].sum() / capacity_h),
            "down": float(length[here & repair].sum() / capacity_h),
        }
    return out


def summarize(
    cfg: FacilityConfig, batches: pd.DataFrame, module_log: pd.DataFrame, horizon_h: float
) -> dict:
    """The keys of :data:`SUMMARY_KEYS` (and more) from the batch table and the module log."""
    bay_end = np.fmin(_bay_end(batches, cfg, horizon_h).to_numpy(), horizon_h)
    occupied = np.nansum(bay_end - batches["bay_start_h"].to_numpy())
    bay_utilization = float(occupied / (cfg.shuttles * cfg.bays_per_shuttle * horizon_h))
    utilization = module_utilization(cfg, module_log, horizon_h)
    busy = {name: u["busy"] for name, u in utilization.items()}
    candidates = {"bays": bay_utilization, **busy}
    bottleneck = max(candidates, key=candidates.get)
    released = batches["released"].to_numpy()
    finished = batches["fill_finish_end_h"].notna().to_numpy()
    turnaround = batches.loc[released, "turnaround_days"].to_numpy()
    doses_released = float(batches.loc[released, "doses"].sum())
    cost_finished = float(batches.loc[finished, "cost_usd"].sum())
    conforming_doses = float(batches.loc[batches["conforming"] & finished, "doses"].sum())
    summary = {
        "batches_arrived": int(len(batches)),
        "batches_started": int(batches["bay_start_h"].notna().sum()),
        "batches_harvested": int(batches["harvest_h"].notna().sum()),
        "batches_finished": int(finished.sum()),
        "batches_released": int(released.sum()),
        "batches_conforming": int(batches["conforming"].sum()),
        "batches_conforming_if_on_time": int(batches["conforming_if_on_time"].sum()),
        "doses_released": doses_released,
        "doses_per_year": doses_released * 365.0 / cfg.horizon_days,
        "bay_utilization": bay_utilization,
        "module_utilization": busy,
        "module_downtime": {name: u["down"] for name, u in utilization.items()},
        "median_turnaround_days": float(np.median(turnaround)) if len(turnaround) else None,
        "p90_turnaround_days": float(np.percentile(turnaround, 90)) if len(turnaround) else None,
        "p95_turnaround_days": float(np.percentile(turnaround, 95)) if len(turnaround) else None,
        "bottleneck": bottleneck,
        "cogs_per_batch_usd": cost_finished / finished.sum() if finished.any() else None,
        "cogs_per_dose_usd": cost_finished / conforming_doses if conforming_doses else None,
        "annual_fixed_cost_usd": annual_fixed_cost_usd(cfg),
        "lost_viable_car_pos_cells_fraction": _lost_fraction(batches),
        "horizon_days": cfg.horizon_days,
    }
    return summary


def _bay_end(batches: pd.DataFrame, cfg: FacilityConfig, horizon_h: float) -> pd.Series:
    """When each bay was freed (fill-finish end + turnaround), or the horizon if still held."""
    end = batches["fill_finish_end_h"] + cfg.bay_turnaround_h
    started = batches["bay_start_h"].notna()
    return end.where(end.notna() | ~started, horizon_h)


def _lost_fraction(batches: pd.DataFrame) -> float | None:
    done = batches["viable_car_pos_cells"].notna()
    on_time = batches.loc[done, "viable_car_pos_cells_if_on_time"].sum()
    if not on_time:
        return None
    return float(1.0 - batches.loc[done, "viable_car_pos_cells"].sum() / on_time)
