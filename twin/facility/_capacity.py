"""Discrete-event sweeps without the biology: throughput and turnaround against demand, and the
number of Shuttles that serves a demand within a target turnaround."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ._config import FacilityConfig
from ._run import run_des_only


def turnaround_days(cfg: FacilityConfig) -> tuple[np.ndarray, float]:
    """Arrival-to-release times (days) of the batches arriving in the horizon's middle third
    (the empty start would flatter them; the last third leaves time for release), NaN if not
    released by the horizon's end; and the batches finished per week over the last two thirds.
    """
    des, _, arrivals = run_des_only(cfg)
    third_h = des.horizon_h / 3
    arrival = arrivals.arrival_h
    window = (arrival >= third_h) & (arrival < 2 * third_h)
    release = np.where(des.release_h <= des.horizon_h, des.release_h, np.nan)
    end = des.fill_finish_end_h
    finished = np.sum((end >= third_h) & (end <= des.horizon_h))
    return (release - arrival)[window] / 24.0, finished / (2 * third_h / 168.0)


def demand_sweep(cfg: FacilityConfig, factors: list[float], horizon_days: float) -> pd.DataFrame:
    """Throughput (finished per week) and turnaround percentiles at ``factors`` x demand, each
    over ``horizon_days`` (see :func:`turnaround_days`)."""
    rows = []
    for factor in factors:
        c = dataclasses.replace(
            cfg, arrivals_per_week=cfg.arrivals_per_week * factor, horizon_days=horizon_days
        )
        days, per_week = turnaround_days(c)
        done = days[np.isfinite(days)]
        rows.append(
            {
                "demand_factor": factor,
                "arrivals_per_week": c.arrivals_per_week,
                "finished_per_week": per_week,
                "released_fraction": float(np.isfinite(days).mean()) if len(days) else np.nan,
                "median_turnaround_days": float(np.median(done)) if len(done) else np.nan,
                "p95_turnaround_days": float(np.percentile(done, 95)) if len(done) else np.nan,
            }
        )
    return pd.DataFrame(rows)


def shuttles_needed(
    cfg: FacilityConfig,
    patients_per_year: float,
    target_days: float,
    *,
    quantile: float = 0.95,
    max_shuttles: int = 200,
    horizon_days: float = 240.0,
) -> tuple[int, pd.DataFrame]:
    """The fewest Shuttles for which ``quantile`` of the batches arriving (at
    ``patients_per_year``) in the horizon's second half are released within ``target_days``
    (unreleased batches count as late). Scans upward from the bay-cycle bound (the fewest
    Shuttles whose bays can keep up with the demand at all)."""
    bay_cycle_days = _bay_cycle_days(cfg)
    lower = patients_per_year * bay_cycle_days / 365.0 / cfg.bays_per_shuttle
    # Fewer Shuttles than the bay-cycle bound cannot keep up: the queue grows without end, even
    # if a finite run's turnaround still looks acceptable.
    n = max(1, int(np.ceil(lower)))
    rows = []
    while n <= max_shuttles:
        c = dataclasses.replace(
            cfg,
            shuttles=n,
            arrivals_per_week=patients_per_year * 7.0 / 365.0,
            horizon_days=horizon_days,
        )
        days, _ = turnaround_days(c)
        within = float(np.mean(np.nan_to_num(days, nan=np.inf) <= target_days))
        rows.append({"shuttles": n, "fraction_within_target": within})
        if within >= quantile:
            return n, pd.DataFrame(rows)
        n += 1
    return -1, pd.DataFrame(rows)


def _bay_cycle_days(cfg: FacilityConfig) -> float:
    """Bay time per batch without waiting: seed work, the longest recipe, harvest, fill-finish,
    turnaround (days)."""
    from ._plan import compile_plans

    plans = compile_plans(cfg)
    cycles = [
        p.duration_h[0] + p.offset_h[-1] + p.duration_h[-1] + 2 * cfg.robot_move_h for p in plans
    ]
    return (max(cycles) + cfg.bay_turnaround_h) / 24.0
