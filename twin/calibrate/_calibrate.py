"""`calibrate`: run data in, a :class:`~._result.Calibration` out."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .._errors import TwinInputError
from ..assays import (
    MEASURED_VARIABLES,
    AssayNoise,
    assay_residual,
    censored,
    predicted_from_residual,
    to_assay_scale,
)
from ..data import RunData
from ..kinetics import KineticParameters, ModelStructure, default_parameters
from ..simulate import SolverSettings
from ._config import CalibrationConfig, check_calibration_config
from ._laplace import laplace_covariance
from ._model import ModelSpec, ObjectiveData, ParameterLayout, make_prior
from ._problem import CalibrationProblem, build_problem
from ._profile import profile_likelihood
from ._result import Calibration
from ._select import best_forecast, forecast_score, parse_candidate, rank_candidates
from ._solve import LMOptions, LMResult, draw_starts, multistart

log = logging.getLogger(__name__)


def calibrate(
    data: RunData,
    config: CalibrationConfig | None = None,
    *,
    model_parameters: KineticParameters | None = None,
    structure: ModelStructure = ModelStructure(),
    solver: SolverSettings = SolverSettings(),
    noise: AssayNoise = AssayNoise(),
    seed: int = 0,
    config_yaml: str = "",
    progress: bool = True,
    forecast_settings=None,
    on_fit: Callable[[Calibration], None] | None = None,
) -> Calibration:
    """Fit the hierarchical kinetic model to ``data`` (MAP) and approximate its uncertainty.

    **Arguments:**

    - ``data``: a validated dataset (:func:`~twin.data.read_run_data`).
    - ``config``: what to fit and how (:class:`CalibrationConfig`; defaults if ``None``).
    - ``model_parameters``: prior means of the fitted parameters and values of the others
      (natural units; default: the parameter table's defaults).
    - ``structure``, ``solver``: model structure and ODE settings (the solve always runs with
      forward-mode sensitivities).
    - ``noise``: assay noise SDs (the likelihood), re-estimated if ``config.fit_noise``.
    - ``seed``: seeds the random starts. ``config_yaml`` is stored with the result.
    - ``progress``: show progress bars.
    - ``forecast_settings``: how forecasts from this calibration will condition and simulate
      (:class:`twin.forecast.ForecastSettings`, default its defaults); the model discrepancy
      (``config.discrepancy``) is learnt with them.
    - ``on_fit``: called once with the fitted calibration before its model discrepancy is
      learnt (with ``config.select``: the chosen one, after the ranking). Work that needs only
      the fit (figures) can start there, e.g. in a thread, while the discrepancy is learnt.

    **Returns:** a :class:`Calibration`.

    **Raises:** :class:`~twin.TwinInputError` for a bad config or unusable data.
    """
    config = CalibrationConfig() if config is None else config
    check_calibration_config(config)
    _say_omegas_not_estimated(config)
    if config.discrepancy.folds and config.discrepancy.horizons_h:
        from ..forecast._discrepancy import check_folds  # forecasting builds on calibration

        check_folds(data, config.discrepancy)
    inputs = _FitInputs(
        default_parameters() if model_parameters is None else model_parameters,
        structure,
        solver,
        noise,
        seed,
        forecast_settings,
    )
    if not config.select:
        _warn_held_forms(config, structure)
        return _calibrate_one(data, config, inputs, config_yaml, progress, on_fit)
    candidates = [
        parse_candidate(text, structure, f"fit.select[{i}]") for i, text in enumerate(config.select)
    ]
    calibrations = []
    for label, candidate in zip(config.select, candidates, strict=True):
        log.info("structure candidate %r (%s)", label, candidate.describe())
        _warn_held_forms(config, candidate)
        with_candidate = dataclasses.replace(inputs, structure=candidate)
        calibrations.append(_calibrate_one(data, config, with_candidate, config_yaml, progress))
    chosen, ranking = rank_candidates(list(config.select), calibrations)
    log.info("structure ranking (training data only):\n%s", ranking.to_string(index=False))
    calibration = dataclasses.replace(calibrations[chosen], selection=ranking)
    if on_fit is not None:
        on_fit(calibration)
    return calibration


@dataclasses.dataclass(frozen=True)
class _FitInputs:
    """What a calibration is fitted with besides its data and config (the fold fits of a
    cross-fitted discrepancy reuse it)."""

    model_parameters: KineticParameters
    structure: ModelStructure
    solver: SolverSettings
    noise: AssayNoise
    seed: int
    forecast_settings: object


@dataclasses.dataclass(frozen=True)
class _CompletedStart:
    """One start taken to an estimate: its calibration, diagnostics rows, end point and the
    objective's data (noise SDs, prior) it was reached with."""

    start: int
    calibration: Calibration
    rows: list[dict]
    best: LMResult
    data: ObjectiveData


def _warn_held_forms(config: CalibrationConfig, structure: ModelStructure) -> None:
    """Says when ``structure`` reads a form's shape parameter that ``config`` does not fit."""
    held = [n for n in structure.form_parameters if n not in config.fitted]
    if held:
        log.warning(
            "model structure %s reads %s, which fit.fitted does not estimate (held at "
            "model.parameters)",
            structure.describe(),
            ", ".join(held),
        )


def _say_omegas_not_estimated(config: CalibrationConfig) -> None:
    """Names ``fit.donor_sd_estimated`` entries that are not donor-level (nothing to estimate:
    e.g. the default's lactate death rate after ``fit.donor_level`` was changed)."""
    idle = [n for n in config.donor_sd_estimated if n not in config.donor_level]
    if idle and not config.fit_donor_sd:
        log.info(
            "fit.donor_sd_estimated: %s not in fit.donor_level, so no donor SD to estimate",
            ", ".join(idle),
        )


def _drop_unused(config: CalibrationConfig, structure: ModelStructure) -> CalibrationConfig:
    """``config`` without the parameters ``structure`` never reads (their data gradient is 0:
    fitting them would only return the prior); says which, once."""
    unused = set(structure.unused_parameters)
    dropped = [name for name in config.fitted if name in unused]
    if not dropped:
        return config
    log.info(
        "not fitting %s: model structure %s does not use %s (held at model.parameters)",
        ", ".join(dropped),
        structure.describe(),
        "it" if len(dropped) == 1 else "them",
    )
    return dataclasses.replace(
        config,
        fitted=[n for n in config.fitted if n not in unused],
        donor_level=[n for n in config.donor_level if n not in unused],
        donor_sd_estimated=[n for n in config.donor_sd_estimated if n not in unused],
        profile=[n for n in config.profile if n not in unused],
    )


def _calibrate_one(
    data: RunData,
    config: CalibrationConfig,
    inputs: _FitInputs,
    config_yaml: str,
    progress: bool,
    on_fit: Callable[[Calibration], None] | None = None,
) -> Calibration:
    """:func:`calibrate` for one model structure."""
    structure, model_parameters = inputs.structure, inputs.model_parameters
    config = _drop_unused(config, structure)
    problem = build_problem(
        data, pad_multiple=math.lcm(config.pad_multiple, max(config.devices, 1))
    )
    layout = ParameterLayout(
        tuple(config.fitted), tuple(config.donor_level), problem.n_donors_padded
    )
    devices = run_devices(config.devices, problem.arrays.n_runs)
    spec = ModelSpec(
        layout, structure, inputs.solver, config.failure_residual, devices, config.likelihood
    )
    prior = make_prior(model_parameters, layout, config.donor_sds())
    options = LMOptions.from_config(config)
    noise_sd = np.array([inputs.noise.sd(v) for v in MEASURED_VARIABLES])
    objective_data = ObjectiveData(problem.arrays, prior, noise_sd)
    log.info(
        "calibrating %d parameters (%d donor-level) to %d measurements of %d runs, %d donors "
        "(runs split over %d device%s)",
        layout.n_population,
        len(layout.donor_level),
        problem.n_observations,
        len(problem.run_ids),
        len(problem.donor_ids),
        devices,
        "" if devices == 1 else "s",
    )

    starts = draw_starts(
        jax.random.PRNGKey(inputs.seed),
        np.asarray(prior.mean(layout)),
        np.asarray(prior.population_sd),
        layout.size - layout.n_population,
        config.n_starts,
        config.start_spread,
    )
    fit = _Fit(problem, layout, spec, options, config, progress)
    diagnostics: list[dict] = []
    outcomes = multistart(
        starts, objective_data, spec, options, description="starts", progress=progress
    )
    first = _record(outcomes, 0, problem, diagnostics)
    for row in diagnostics:
        row["from_start"] = row["start"]
    by_forecast = config.start_choice == "forecast" and bool(config.discrepancy.horizons_h)
    # Every start failed (no finite objective): the first goes on, as with objective.
    distinct = _distinct_optima(outcomes, len(problem.run_ids)) if by_forecast else []
    starts_kept = distinct or [_index_of(outcomes, first)]
    if len(starts_kept) > 1:
        log.info(
            "starts %s ended at different optima: each is completed, and the one that forecasts "
            "its training runs best (donor-held-out pseudo-backtest) is kept",
            ", ".join(map(str, starts_kept)),
        )

    def learnt(calibration: Calibration) -> Calibration:
        return _with_discrepancy(calibration, data, config, inputs)

    completed: list[_CompletedStart] = []
    merged_rows: list[dict] = []  # of starts whose continuation met an earlier one's optimum
    for start in starts_kept:
        rows: list[dict] = []
        best, final_data = fit.complete(outcomes[start][0], objective_data, rows)
        for row in rows:
            row["from_start"] = start
        if any(_same_optimum(best.objective, c.best.objective) for c in completed):
            # Continued until it met an optimum already completed: nothing new to score.
            log.info("start %d, continued, reached the optimum of an earlier start", start)
            merged_rows += rows
            continue
        calibration = _assemble(
            best, final_data, problem, layout, spec, data, inputs, config, config_yaml
        )
        completed.append(_CompletedStart(start, calibration, rows, best, final_data))
    if len(completed) > 1:
        completed = [dataclasses.replace(c, calibration=learnt(c.calibration)) for c in completed]
        scores = [forecast_score(c.calibration.discrepancy) for c in completed]
        chosen = completed[best_forecast(scores, [c.calibration.objective for c in completed])]
        for c, score in zip(completed, scores, strict=True):
            log.info("start %d: pseudo-backtest forecast error %.4f", c.start, score)
            for row in diagnostics:
                if row["start"] == c.start:
                    row["forecast_error"] = score
        log.info("kept start %d", chosen.start)
    else:
        chosen = completed[0]
    later = [row for c in completed for row in c.rows] + merged_rows
    fit_row = chosen.rows[-1] if chosen.rows else diagnostics[chosen.start]
    for row in diagnostics + later:  # the row of the fit the estimate comes from
        row["selected"] = row is fit_row
    calibration = dataclasses.replace(
        chosen.calibration,
        diagnostics=pd.DataFrame(diagnostics + later),
        profiles=fit.profiles(chosen.best, chosen.data, chosen.calibration.covariance),
    )
    if on_fit is not None:
        on_fit(calibration)
    if len(completed) > 1 or not config.discrepancy.horizons_h:
        return calibration
    return learnt(calibration)


class _Fit:
    """The steps after the multistart that take one start's end point to the estimate."""

    def __init__(self, problem, layout, spec, options, config, progress):
        self.problem, self.layout, self.spec = problem, layout, spec
        self.options, self.config, self.progress = options, config, progress

    def refit(self, x, data: ObjectiveData, description: str):
        # One start from x, with whatever ``data`` holds by then (noise, donor SDs).
        return multistart(
            x[None, :],
            data,
            self.spec,
            self.options,
            description=description,
            progress=self.progress,
        )

    def continued(self, best: LMResult, data, noise_round: int, rows: list[dict]) -> LMResult:
        # A fit that ran out of steps resumes from where it stopped (fresh damping), up to
        # ``config.continuations`` times: misspecified data can need more than one budget.
        for k in range(1, self.config.continuations + 1):
            if best.converged:
                break
            log.info(
                "not converged: continuing from the best point (%d of %d)",
                k,
                self.config.continuations,
            )
            outcomes = self.refit(best.x, data, f"continuation {k}")
            best = _record(outcomes, noise_round, self.problem, rows, continuation=k)
        return best

    def complete(
        self, best: LMResult, data: ObjectiveData, rows: list[dict]
    ) -> tuple[LMResult, ObjectiveData]:
        """Continuations, then the noise and donor SD rounds configured; the final point and
        the objective's data (noise SDs, prior) it was reached with. ``rows``: diagnostics."""
        config, problem, layout = self.config, self.problem, self.layout
        best = self.continued(best, data, 0, rows)
        rounds = config.noise_rounds if config.fit_noise else 0
        for noise_round in range(1, rounds + 1):
            noise_sd = _residual_rms(best, problem, data.noise_sd, self.spec)
            log.info("noise round %d: SDs %s", noise_round, _format_noise(noise_sd))
            data = dataclasses.replace(data, noise_sd=noise_sd)
            outcomes = self.refit(best.x, data, f"noise round {noise_round}")
            best = _record(outcomes, noise_round, problem, rows)
            best = self.continued(best, data, noise_round, rows)
        n_real = _n_real(layout, problem)
        estimated = np.array(config.omega_estimated(), bool)
        rounds = config.donor_sd_rounds if estimated.any() else 0
        for donor_round in range(1, rounds + 1):
            current = np.asarray(data.prior.donor_sd)
            updated = _donor_sd_update(best, layout, len(problem.donor_ids), n_real, current)
            donor_sd = np.where(estimated, updated, current)
            log.info("donor SD round %d: %s", donor_round, _format_sd(layout.donor_level, donor_sd))
            prior = dataclasses.replace(data.prior, donor_sd=jnp.asarray(donor_sd))
            data = dataclasses.replace(data, prior=prior)
            outcomes = self.refit(best.x, data, f"donor SD round {donor_round}")
            best = self.continued(_record(outcomes, 0, problem, rows), data, 0, rows)
        return best, data

    def profiles(self, best: LMResult, data: ObjectiveData, covariance) -> pd.DataFrame:
        posterior_sd = np.sqrt(np.diag(covariance))[: self.layout.n_population]
        return profile_likelihood(
            list(self.config.profile),
            best,
            posterior_sd,
            data,
            self.spec,
            self.options,
            points=self.config.profile_points,
            span_sd=self.config.profile_span_sd,
            progress=self.progress,
        )


def _assemble(
    best, data, problem, layout, spec, run_data, inputs: _FitInputs, config, config_yaml
) -> Calibration:
    """The calibration at ``best`` (Laplace covariance; no profiles or discrepancy yet)."""
    n_real = _n_real(layout, problem)
    theta_pop, effects = layout.split(best.x)
    noise_sd = np.asarray(data.noise_sd)
    return Calibration(
        fitted=layout.fitted,
        donor_level=layout.donor_level,
        donor_ids=problem.donor_ids,
        run_ids=problem.run_ids,
        run_donor_ids=tuple(run_data.donor_of(run_id) for run_id in problem.run_ids),
        model_parameters=inputs.model_parameters,
        estimate=np.asarray(theta_pop),
        donor_effects=np.asarray(effects)[: len(problem.donor_ids)],
        covariance=laplace_covariance(best.jacobian, keep=n_real),
        prior_sd=np.asarray(data.prior.population_sd),
        donor_sd=np.asarray(data.prior.donor_sd),
        noise=AssayNoise(**dict(zip(MEASURED_VARIABLES, map(float, noise_sd), strict=True))),
        initial_noise=inputs.noise,
        structure=inputs.structure,
        solver=spec.solver,
        objective=float(best.objective),
        n_observations=problem.n_observations,
        observations=_observations(best, problem, noise_sd, spec),
        diagnostics=pd.DataFrame(),
        profiles=pd.DataFrame(),
        prior_dominated_ratio=config.prior_dominated_ratio,
        high_correlation=config.high_correlation,
        config=config_yaml,
        likelihood=config.likelihood,
    )


def _with_discrepancy(
    calibration: Calibration, data: RunData, config: CalibrationConfig, inputs: _FitInputs
) -> Calibration:
    """``calibration`` with the model discrepancy learnt on its training runs
    (``config.discrepancy``: in-sample, or cross-fitted over donor folds, each fold fitted
    by :func:`_calibrate_one` with the same ``inputs``)."""
    # A local import: forecasting builds on calibration.
    from ..forecast._discrepancy import learn_discrepancy, learn_discrepancy_cross_fitted

    settings = inputs.forecast_settings
    if not config.discrepancy.folds:
        log.info("learning the forecast's model discrepancy on the training runs")
        discrepancy = learn_discrepancy(calibration, data, config.discrepancy, settings)
        return dataclasses.replace(calibration, discrepancy=discrepancy)
    log.info(
        "learning the forecast's model discrepancy on %d donor folds of the training runs",
        config.discrepancy.folds,
    )
    # Each fold is fitted as this calibration was (same structure, noise, starts), without
    # profiles or a discrepancy of its own (so its starts are chosen by objective).
    fold_config = dataclasses.replace(
        config,
        profile=[],
        discrepancy=dataclasses.replace(config.discrepancy, horizons_h=(), folds=0),
    )

    def fit_fold(fold_data: RunData) -> Calibration:
        return _calibrate_one(fold_data, fold_config, inputs, config_yaml="", progress=False)

    discrepancy = learn_discrepancy_cross_fitted(
        data, fit_fold, config.discrepancy, settings, inputs.seed
    )
    return dataclasses.replace(calibration, discrepancy=discrepancy)


# Two starts whose objectives agree this closely (relative) ended at the same optimum.
SAME_OPTIMUM_RTOL = 1.0e-4


def _same_optimum(objective: float, other: float) -> bool:
    return abs(float(objective) - float(other)) <= SAME_OPTIMUM_RTOL * abs(float(other))


def _index_of(outcomes, result: LMResult) -> int:
    return next(i for i, (r, _) in enumerate(outcomes) if r is result)


def _distinct_optima(outcomes, n_runs: int) -> list[int]:
    """The starts that ended at a usable point (finite objective and gradient, every run's
    solve a success), one per optimum (the first start reaching it), in order of objective."""
    objectives = np.array(
        [
            float(r.objective)
            if np.isfinite(float(r.gradient_norm)) and bool(np.all(r.run_success[:n_runs]))
            else np.inf
            for r, _ in outcomes
        ]
    )
    kept: list[int] = []
    for i in np.argsort(np.where(np.isfinite(objectives), objectives, np.inf), kind="stable"):
        if not np.isfinite(objectives[i]):
            break
        if not any(_same_optimum(objectives[i], objectives[j]) for j in kept):
            kept.append(int(i))
    return kept


def _n_real(layout: ParameterLayout, problem: CalibrationProblem) -> int:
    """Unknowns that are not padding: the population parameters and the real donors' effects."""
    return layout.n_population + len(problem.donor_ids) * len(layout.donor_level)


# An omega below this (estimation scale) would pin every donor to the population value.
MIN_DONOR_SD = 0.02


def _donor_sd_update(
    best: LMResult, layout: ParameterLayout, n_donors: int, n_real: int, current: np.ndarray
):
    """One EM step for the donor SDs (omega) of a Gaussian random-effects model: the mean over
    the real donors of each effect's square plus its posterior variance (Laplace, at ``best``).
    Where that is not finite (a Jacobian with a failed sensitivity), ``current`` stays."""
    _, effects = layout.split(best.x)
    effects = np.asarray(effects)[:n_donors]
    variance = np.diag(laplace_covariance(best.jacobian, keep=n_real))[layout.n_population :]
    variance = variance.reshape(n_donors, len(layout.donor_level))
    updated = np.sqrt(np.mean(effects**2 + variance, axis=0))
    finite = np.isfinite(updated)
    if not finite.all():
        log.warning(
            "donor SD update not finite: kept at %s",
            _format_sd(np.asarray(layout.donor_level)[~finite], current[~finite]),
        )
    return np.where(finite, np.maximum(updated, MIN_DONOR_SD), current)


def _format_sd(names, values) -> str:
    return ", ".join(f"{n} {v:.3g}" for n, v in zip(names, values, strict=True))


def run_devices(requested: int, n_runs: int, available: int | None = None) -> int:
    """How many of the ``available`` (default: all local) devices to split ``n_runs`` (padded)
    runs over: ``requested``, or if 0 the most that divide ``n_runs`` evenly.

    **Raises:** :class:`~twin.TwinInputError` if more are requested than there are.
    """
    available = jax.local_device_count() if available is None else available
    if requested > available:
        raise TwinInputError(
            f"fit.devices={requested}: only {available} local device(s); on CPU set "
            f"JAX_NUM_CPU_DEVICES={requested} before JAX starts"
        )
    if requested:
        return requested
    return max(d for d in range(1, min(available, n_runs) + 1) if n_runs % d == 0)


def _record(
    outcomes: list[tuple[LMResult, float]],
    noise_round: int,
    problem: CalibrationProblem,
    diagnostics: list[dict],
    continuation: int = 0,
) -> LMResult:
    """Log and tabulate each start; return the best one (lowest finite objective)."""
    n_runs = len(problem.run_ids)
    objectives = [float(result.objective) for result, _ in outcomes]
    chosen = int(np.argmin(np.where(np.isfinite(objectives), objectives, np.inf)))
    for previous in diagnostics:
        previous["selected"] = False
    for start, (result, wall_s) in enumerate(outcomes):
        failed = int(n_runs - result.run_success[:n_runs].sum())
        diagnostics.append(
            {
                "noise_round": noise_round,
                "continuation": continuation,
                "start": start,
                "objective": float(result.objective),
                "steps": int(result.steps),
                "accepted_steps": int(result.accepted_steps),
                "failed_evaluations": int(result.failed_evaluations),
                "gradient_norm": float(result.gradient_norm),
                "decrement": float(result.decrement),
                "converged": bool(result.converged),
                "failed_runs": failed,
                "wall_s": wall_s,
                "selected": start == chosen,
            }
        )
        log.info(
            "round %d start %d: objective %.4g after %d steps (%d accepted), max|gradient| %.2g, "
            "%s, %.1f s",
            noise_round,
            start,
            result.objective,
            result.steps,
            result.accepted_steps,
            result.gradient_norm,
            "converged" if result.converged and not failed else "NOT converged",
            wall_s,
        )
        if result.failed_evaluations:
            log.warning(
                "round %d start %d: the ODE solve failed at %d of %d evaluated points "
                "(penalized, never NaN), for %d run(s) at the end point",
                noise_round,
                start,
                result.failed_evaluations,
                result.steps + 1,
                failed,
            )
    return outcomes[chosen][0]


def _scaled_data_residuals(result: LMResult, problem: CalibrationProblem) -> np.ndarray:
    """The assay part of the residual vector as ``[runs, times, variables]``."""
    shape = problem.arrays.observed.shape
    return result.residuals[: int(np.prod(shape))].reshape(shape)


def _predicted(
    result: LMResult, problem: CalibrationProblem, noise_sd: np.ndarray, spec: ModelSpec
) -> np.ndarray:
    """The fit's predictions in natural units, ``[runs, times, variables]``, recovered from
    its residuals (:func:`~twin.assays.predicted_from_residual`)."""
    scaled = _scaled_data_residuals(result, problem)
    observed = np.asarray(problem.arrays.observed)
    return np.stack(
        [
            np.asarray(
                predicted_from_residual(
                    v, observed[..., j], scaled[..., j], float(noise_sd[j]), spec.likelihood
                )
            )
            for j, v in enumerate(MEASURED_VARIABLES)
        ],
        axis=-1,
    )


def _censored(problem: CalibrationProblem, spec: ModelSpec) -> np.ndarray:
    """Which entries of the observed array are censored readings, ``[runs, times, variables]``."""
    observed = np.asarray(problem.arrays.observed)
    return np.stack(
        [
            np.asarray(censored(v, observed[..., j], spec.likelihood))
            for j, v in enumerate(MEASURED_VARIABLES)
        ],
        axis=-1,
    )


def _residual_rms(
    result: LMResult, problem: CalibrationProblem, noise_sd: np.ndarray, spec: ModelSpec
) -> np.ndarray:
    """Each assay's RMS residual on its own scale (the noise SD that the fit implies), over
    the uncensored measurements of runs whose solve succeeded; the current SD where there are
    none."""
    observed = np.asarray(problem.arrays.observed)
    predicted = _predicted(result, problem, noise_sd, spec)
    raw = np.stack(
        [
            np.asarray(to_assay_scale(v, observed[..., j]) - to_assay_scale(v, predicted[..., j]))
            for j, v in enumerate(MEASURED_VARIABLES)
        ],
        axis=-1,
    )
    used = np.asarray(problem.arrays.mask) & ~_censored(problem, spec)
    used &= result.run_success[:, None, None]
    used[len(problem.run_ids) :] = False
    count = used.sum(axis=(0, 1))
    total = np.where(used, raw**2, 0.0).sum(axis=(0, 1))
    return np.where(count > 0, np.sqrt(total / np.maximum(count, 1)), noise_sd)


def _observations(
    result: LMResult, problem: CalibrationProblem, noise_sd: np.ndarray, spec: ModelSpec
) -> pd.DataFrame:
    """Measured vs fitted values, one row per measurement (natural units); ``censored`` marks
    readings at or below their detection limit. ``scaled_residual`` is the likelihood's
    residual (Student-t transformed, or a censored reading's tail, when so configured);
    ``standardized_residual`` the plain miss on the assay scale in noise SDs (NaN where
    censored), which is what an average over runs should be taken of."""
    scaled = _scaled_data_residuals(result, problem)
    arrays = problem.arrays
    index = np.nonzero(np.asarray(arrays.mask))
    run, time, variable = index
    observed = np.asarray(arrays.observed)
    predicted = _predicted(result, problem, noise_sd, spec)
    standardized = np.stack(
        [
            np.asarray(assay_residual(v, observed[..., j], predicted[..., j])) / noise_sd[j]
            for j, v in enumerate(MEASURED_VARIABLES)
        ],
        axis=-1,
    )
    is_censored = _censored(problem, spec)
    return pd.DataFrame(
        {
            "run_id": np.asarray(problem.run_ids)[run],
            "time_h": np.asarray(arrays.time_h)[run, time],
            "variable": np.asarray(MEASURED_VARIABLES)[variable],
            "observed": observed[index],
            "predicted": predicted[index],
            "scaled_residual": scaled[index],
            "standardized_residual": np.where(is_censored, np.nan, standardized)[index],
            "censored": is_censored[index],
        }
    )


def _format_noise(noise_sd: np.ndarray) -> str:
    return ", ".join(f"{v}={sd:.3g}" for v, sd in zip(MEASURED_VARIABLES, noise_sd, strict=True))
