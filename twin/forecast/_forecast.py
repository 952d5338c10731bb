"""Forecast running batches: condition on their data, propagate uncertainty, advise on harvest.

For each run: its donor effects are conditioned on its own measurements (:mod:`._condition`);
parameter draws combine that run posterior (donor-level parameters) with the calibration's
population posterior (the other fitted parameters); every draw is simulated over the run's
planned schedule, continued ``advice_extension_h`` past the planned harvest with no further
events, and assay noise is added so the intervals are for *what would be measured*.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .._errors import TwinInputError
from .._limits import MAX_DRAWS, MAX_TIME_POINTS, over_limit
from ..calibrate import Calibration, build_problem
from ..calibrate._bands import simulate_parameter_draws
from ..data import RunData
from ..observe import observables
from ..process import Downstream, Event, Recipe, build_schedule, stack_schedules
from ._condition import (
    RunPosterior,
    condition_runs,
    conditioned_positions,
    effect_prior,
    structure_run_level_sd,
)
from ._discrepancy import DISCREPANCY_SCALES, anchor_residuals, apply_discrepancy
from ._predictive import (
    FORECAST_VARIABLES,
    forecast_frame,
    harvest_advice,
    interval_rows,
    measured_draws,
    release_odds,
)

log = logging.getLogger(__name__)

# The columns of ``Forecast.runs`` a reader looks at first (the command's printout, the report).
KEY_RUN_COLUMNS = (
    "run_id",
    "assumed_plan",
    "now_h",
    "planned_harvest_time_h",
    "p_conforming_at_planned",
    "expected_viable_car_pos_cells_at_planned",
    "recommended_harvest_time_h",
    "p_conforming_at_recommended",
    "expected_product_car_pos_cells_at_recommended",
    "failed_draws",  # stated when 0: the quantiles are over the other draws
)

# Chosen by the mean over the mismatch bench's four plants (experiments/validity.py, 60 h
# ahead, with forgetting and the learnt discrepancy): viable CAR+ error 19.3 % with the first
# two only, 18.4 % adding the decline time, 18.2 % adding the lactate yield too (the worst
# plant 26.6 -> 24.7 -> 22.8 %). On the example alone (the twin's own equations) the first two
# had been best. The decline floor (2026-12-06, pooled over three draws of the bench): mean
# 16.0 -> 15.9 %, worst plant 1.45 -> 1.42x, the lowest coverage of a plant and draw 75 -> 85 %.
DEFAULT_RUN_LEVEL_SD = {
    "activation_efficiency": 0.5,
    "glucose_per_new_cell_pmol": 0.15,
    "lactate_per_glucose": 0.1,
    "growth_decline_floor": 0.5,
}


@dataclasses.dataclass(frozen=True)
class ForecastSettings:
    """How to forecast (Hydra config ``forecast``).

    - ``n_draws``: parameter draws per run (each one simulation).
    - ``use_known_donors``: for a donor in the calibration data, start from its calibrated
      effects (its own earlier batches) rather than from a new donor's prior.
    - ``population_uncertainty``: also draw the non-donor-level fitted parameters from the
      calibration's posterior.
    - ``planned_harvest_time_h``: harvest time of a running batch whose events plan none.
    - ``advice_extension_h``, ``time_step_h``: how far past the planned harvest of a running
      batch the harvest advice looks (a finished batch's advice ends at its recorded harvest),
      and the spacing of the forecast's time grid.
    - ``run_level_sd``: fitted population-level parameters that each run may also move, with
      this SD (estimation scale) around the population estimate: an allowance for the model
      being wrong that lets a run's own data correct them (:func:`._condition.effect_prior`).
      Default: :data:`DEFAULT_RUN_LEVEL_SD`; ``None`` or ``{}``: the donor-level ones only.
    - ``memory_h``: exponential forgetting of a run's older measurements when conditioning
      on them (weight ``exp(-age / memory_h)``, age counted back from its latest
      measurement); ``None``: all count alike (:func:`._condition.condition_runs`).
    - ``prior_dof``: degrees of freedom of the Student-t prior on each run's effects, which
      shrinks a donor in the population's tails less than a normal prior would (``None``:
      normal; :func:`._condition.condition_runs`). Default 4: on the mismatch bench, over two
      draws of its data, it lowered the worst twin/oracle ratio (1.29 -> 1.26x and
      1.78 -> 1.63x) and the mean error (15.8 -> 15.65 %).
    - ``apply_discrepancy``: correct the draws by the model discrepancy the calibration learnt
      on its training runs (bias and interval scale by time ahead; :mod:`._discrepancy`).
    """

    n_draws: int = 200
    seed: int = 0
    use_known_donors: bool = True
    population_uncertainty: bool = True
    planned_harvest_time_h: float = 192.0
    advice_extension_h: float = 48.0
    time_step_h: float = 6.0
    run_level_sd: dict[str, float] | None = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_RUN_LEVEL_SD)
    )
    apply_discrepancy: bool = True
    memory_h: float | None = 48.0
    prior_dof: float | None = 4.0

    def __post_init__(self):
        if self.n_draws < 10:
            raise ValueError(f"forecast.n_draws={self.n_draws!r}: must be >= 10")
        for name in ("planned_harvest_time_h", "time_step_h"):
            if not getattr(self, name) > 0:
                raise ValueError(f"forecast.{name}={getattr(self, name)!r}: must be > 0")
        steps = self.planned_harvest_time_h / self.time_step_h
        limit = over_limit(
            "forecast.n_draws", self.n_draws, self.n_draws, MAX_DRAWS, "draws per run"
        ) or over_limit(
            "forecast.time_step_h", self.time_step_h, steps, MAX_TIME_POINTS, "time points"
        )
        if limit:
            raise ValueError(limit)
        if self.memory_h is not None and not self.memory_h > 0:
            raise ValueError(f"forecast.memory_h={self.memory_h!r}: must be > 0 (or null)")
        if self.prior_dof is not None and not self.prior_dof > 0:
            raise ValueError(f"forecast.prior_dof={self.prior_dof!r}: must be > 0 (or null)")
        if self.advice_extension_h < 0:
            raise ValueError(
                f"forecast.advice_extension_h={self.advice_extension_h!r}: must be >= 0"
            )


@dataclasses.dataclass(frozen=True, eq=False)
class Forecast:
    """The forecast of every run.

    - ``table``: forecast.csv rows (RUN_DATA.md), at each run's planned harvest.
    - ``runs``: one row per run: ``finished`` (a harvest is recorded), ``now_h`` (last
      measurement), planned (or recorded) harvest, ``transduction_time_h``, release odds at
      the planned harvest, the recommended harvest time with its odds and expected yield, the
      conditioning diagnostics, and ``anchor_<variable>``: the latest reading minus the
      forecast median at ``now_h`` (log or logit scale; 0: not read then), which the learnt
      discrepancy carries forward (:mod:`._discrepancy`). The advice looks over
      ``[now_h, advice_until_h]``: up to the recorded harvest for a finished run,
      ``advice_extension_h`` past the planned one for a running run.
    - ``time_h``: ``[runs, times]`` forecast grid; ``quantiles``: per variable
      ``[runs, times, 5]`` measured-value quantiles (5, 25, 50, 75, 95 %).
    """

    table: pd.DataFrame
    runs: pd.DataFrame
    time_h: np.ndarray
    quantiles: dict[str, np.ndarray]


QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def planned_events(
    events: list[Event],
    settings: ForecastSettings,
    run_id: str,
    plan: Recipe | None = None,
    plan_name: str = "recipe",
) -> tuple[list[Event], str]:
    """A run's events ending with a harvest, and what was assumed, in words.

    A finished run keeps its record. A running one (no harvest) continues with the events of
    ``plan`` later than its last recorded event, harvest included, if a plan is given; else
    it is harvested at ``settings.planned_harvest_time_h`` with no further operations.
    """
    if events and events[-1].operation == "harvest":
        return list(events), "recorded batch record (finished)"
    last = max(e.time_h for e in events)
    if plan is not None:
        future = [e for e in plan.events() if e.time_h > last]
        if not future:
            raise TwinInputError(
                f"run {run_id!r}: its last event ({last:g} h) is at or after the harvest of "
                f"{plan_name} ({plan.harvest_time_h:g} h): nothing left to plan"
            )
        done = ", ".join(sorted({e.operation for e in future[:-1]})) or "no further operations"
        return [*events, *future], (
            f"recorded events to {last:g} h, then {plan_name}: {done}; harvest at "
            f"{future[-1].time_h:g} h"
        )
    harvest = settings.planned_harvest_time_h
    if harvest < last:
        raise TwinInputError(
            f"run {run_id!r} has no harvest and its last event ({last:g} h) is later than "
            f"forecast.planned_harvest_time_h={harvest:g}"
        )
    return [*events, Event(harvest, "harvest")], (
        f"recorded events to {last:g} h, no further operations; harvest at {harvest:g} h "
        "(forecast.planned_harvest_time_h)"
    )


def forecast(
    calibration: Calibration,
    data: RunData,
    downstream: Downstream = Downstream(),
    settings: ForecastSettings = ForecastSettings(),
    plan: Recipe | None = None,
    plan_name: str = "recipe",
) -> Forecast:
    """Forecast every run of ``data`` to its (planned) harvest; see the module docstring.
    Running batches continue with ``plan``'s later events if given (:func:`planned_events`);
    ``runs['assumed_plan']`` says what was assumed for each run."""
    run_ids = list(data.run_ids)
    planned = {r: planned_events(data.events_for(r), settings, r, plan, plan_name) for r in run_ids}
    events = {r: planned[r][0] for r in run_ids}
    planned_h = np.array([events[r][-1].time_h for r in run_ids])
    # Each run's latest measurement time (0 for a run not yet measured).
    latest = data.measurements.groupby("run_id")["time_h"].max()
    now_h = latest.reindex(run_ids).fillna(0.0).to_numpy(float)
    run_level_sd = structure_run_level_sd(calibration, dict(settings.run_level_sd or {}))
    position = conditioned_positions(calibration, run_level_sd)
    began = time.perf_counter()
    log.info("forecast: conditioning %d run(s) on their own measurements", len(run_ids))
    posterior = _posterior(calibration, data, run_ids, settings, run_level_sd, position)

    recipe = Recipe()
    end_h = planned_h + settings.advice_extension_h
    schedules = []
    for run_id, end in zip(run_ids, end_h, strict=True):
        extended = [*events[run_id][:-1], Event(float(end), "harvest")]
        schedules.append(
            build_schedule(
                extended,
                medium_glucose_mM=recipe.medium_glucose_mM,
                medium_il2_IU_per_mL=recipe.medium_il2_IU_per_mL,
            )
        )
    grid = [
        np.unique(np.r_[np.arange(0.0, end, settings.time_step_h), now, planned, end])
        for now, planned, end in zip(now_h, planned_h, end_h, strict=True)
    ]
    n_times = max(g.size for g in grid)
    time_h = np.stack([np.r_[g, np.full(n_times - g.size, g[-1])] for g in grid])

    theta = _parameter_draws(calibration, posterior, settings, position)
    log.info(
        "forecast: simulating %d run(s) x %d draws to %.0f h (%.0f s so far)",
        len(run_ids),
        settings.n_draws,
        float(end_h.max()),
        time.perf_counter() - began,
    )
    states = simulate_parameter_draws(
        calibration, theta, stack_schedules(schedules), jnp.asarray(time_h)
    )
    truth = observables(states)
    # One assay-noise deviate per draw over the time axis: same intervals at each time, smooth
    # quantile curves, harvest times compared without sampling jitter.
    measured = measured_draws(
        jax.random.PRNGKey(settings.seed + 1), truth, calibration.noise, shared_axis=-1
    )
    # How far each run's latest readings are from its forecast there (the discrepancy's anchor).
    at_now = np.array([np.searchsorted(t, now) for t, now in zip(time_h, now_h, strict=True)])
    with warnings.catch_warnings():  # a run whose draws all failed: NaN median, no anchor
        warnings.simplefilter("ignore", RuntimeWarning)
        median_now = {
            v: np.nanmedian(measured[v][np.arange(len(run_ids)), :, at_now], axis=1)
            for v in DISCREPANCY_SCALES
        }
    anchors = anchor_residuals(data, run_ids, now_h, median_now)
    if settings.apply_discrepancy and not calibration.discrepancy.empty:
        measured = apply_discrepancy(
            calibration.discrepancy, measured, time_h - now_h[:, None], anchors, time_h
        )
    # measured[v]: [runs, draws, times]
    # Draws whose solve failed are NaN from the failure on (never plausible numbers): the
    # quantiles are over the others, and each run reports how many failed (failed_draws).
    failed_draws = np.isnan(np.asarray(truth["viable_cells"])).any(axis=-1).sum(axis=-1)
    with warnings.catch_warnings():  # a run whose draws all failed: NaN quantiles, reported
        warnings.simplefilter("ignore", RuntimeWarning)
        quantiles = {
            v: np.moveaxis(np.nanquantile(measured[v], QUANTILES, axis=1), 0, -1)
            for v in FORECAST_VARIABLES
        }

    rows, summaries = [], []
    for i, run_id in enumerate(run_ids):
        at_planned = int(np.searchsorted(time_h[i], planned_h[i]))
        at = {v: measured[v][i, :, at_planned] for v in FORECAST_VARIABLES}
        rows += interval_rows(run_id, float(planned_h[i]), at)
        odds = release_odds({v: measured[v][i] for v in FORECAST_VARIABLES}, downstream)
        # A finished run was harvested at its recorded time: the advice looks from its last
        # measurement up to that harvest, never past it. A running one may be advised later.
        finished = data.is_finished(run_id)
        advice_until_h = planned_h[i] if finished else end_h[i]
        candidates = advice_window(time_h[i], now_h[i], planned_h[i], end_h[i], finished)
        advice = harvest_advice(
            time_h[i][candidates], {k: np.asarray(x)[candidates] for k, x in odds.items()}
        )
        summaries.append(
            {
                "run_id": run_id,
                "donor_id": data.donor_of(run_id),
                "finished": finished,
                "now_h": now_h[i],
                "planned_harvest_time_h": planned_h[i],
                "transduction_time_h": _first_time(events[run_id], "transduce"),
                "advice_until_h": float(advice_until_h),
                "assumed_plan": planned[run_id][1],
                **{f"{k}_at_planned": float(np.asarray(x)[at_planned]) for k, x in odds.items()},
                **advice,
                **{f"anchor_{v}": float(anchors[v][i]) for v in DISCREPANCY_SCALES},
                "conditioning_converged": bool(posterior.converged[i]),
                "conditioning_solve_success": bool(posterior.solve_success[i]),
                "failed_draws": int(failed_draws[i]),
            }
        )
    log.info("forecast: done in %.0f s", time.perf_counter() - began)
    return Forecast(
        table=forecast_frame(rows),
        runs=pd.DataFrame(summaries),
        time_h=time_h,
        quantiles=quantiles,
    )


def advice_window(
    time_h: np.ndarray, now_h: float, harvest_h: float, end_h: float, finished: bool
) -> np.ndarray:
    """Mask of the times the harvest advice may pick: from the last measurement (``now_h``)
    to the recorded harvest ``harvest_h`` of a finished run, or to ``end_h`` (the planned
    harvest plus ``advice_extension_h``) for a running one. A finished run measured at or
    after its harvest has the harvest alone."""
    until = harvest_h if finished else end_h
    return (time_h >= min(now_h, until)) & (time_h <= until)


def _first_time(events: list[Event], operation: str) -> float:
    """Time of the first ``operation`` event (h), NaN if there is none."""
    times = [e.time_h for e in events if e.operation == operation]
    return float(min(times)) if times else float("nan")


def _posterior(
    calibration: Calibration,
    data: RunData,
    run_ids: list[str],
    settings: ForecastSettings,
    run_level_sd: dict[str, float],
    position: np.ndarray,
) -> RunPosterior:
    donors = [data.donor_of(r) for r in run_ids]
    mean, covariance = effect_prior(calibration, donors, settings.use_known_donors, run_level_sd)
    if data.measurements.empty:  # nothing to condition on: the prior is the posterior
        n = len(run_ids)
        return RunPosterior(
            jnp.asarray(mean),
            jnp.asarray(covariance),
            jnp.zeros(n),
            jnp.ones(n, bool),
            jnp.ones(n, bool),
        )
    problem = build_problem(data)
    n_padded = problem.arrays.n_runs
    pad = n_padded - len(run_ids)
    mean = np.concatenate([mean, np.zeros((pad, mean.shape[1]))])
    covariance = np.concatenate(
        [covariance, np.broadcast_to(covariance[:1], (pad,) + covariance.shape[1:])]
    )
    posterior = condition_runs(
        calibration,
        problem.arrays,
        mean,
        covariance,
        position,
        memory_h=settings.memory_h,
        prior_dof=settings.prior_dof,
    )
    return jax.tree.map(lambda x: x[: len(run_ids)], posterior)


def _parameter_draws(
    calibration: Calibration,
    posterior: RunPosterior,
    settings: ForecastSettings,
    position: np.ndarray,
) -> np.ndarray:
    """``[runs, draws, fitted]`` draws on the estimation scale."""
    key_pop, key_run = jax.random.split(jax.random.PRNGKey(settings.seed))
    n_runs, p = posterior.effects.shape[0], len(calibration.fitted)
    estimate = jnp.asarray(calibration.estimate)
    if settings.population_uncertainty:
        pop = jax.random.multivariate_normal(
            key_pop,
            estimate,
            jnp.asarray(calibration.covariance[:p, :p]),
            (n_runs, settings.n_draws),
        )
    else:
        pop = jnp.broadcast_to(estimate, (n_runs, settings.n_draws, p))
    effects = jax.vmap(
        lambda k, m, c: jax.random.multivariate_normal(k, m, c, (settings.n_draws,))
    )(jax.random.split(key_run, n_runs), posterior.effects, posterior.covariance)
    # Conditioned parameters (donor-level and run-level) come from the run's own posterior
    # (which already absorbed the population value); the others from the population posterior.
    theta = pop.at[..., position].set(estimate[position][None, None, :] + effects)
    return theta
