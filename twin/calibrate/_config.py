"""The ``fit`` config group (what calibration estimates): schema and checks."""

from __future__ import annotations

import dataclasses
import math

from omegaconf import DictConfig, OmegaConf

from .._errors import TwinInputError
from ..assays import Likelihood
from ..kinetics import PARAMETER_NAMES

_DEFAULT_FITTED = (
    "max_growth_rate_per_h",
    "activation_lag_h",
    "activation_efficiency",
    "susceptible_fraction",
    "transduction_rate_mL_per_TU_h",
    "base_death_rate_per_h",
    "glucose_per_new_cell_pmol",
    "lactate_per_glucose",
    "growth_decline_time_h",
    "growth_decline_shape",
    "growth_decline_floor",
    "il2_uptake_IU_per_cell_h",
    "density_half_cells_per_mL",
    "lactate_inhibition_mM",
    "starvation_death_rate_per_h",
    "lactate_death_rate_per_h",
    "uptake_capacity_share",
)
_DEFAULT_DONOR_LEVEL = (
    "max_growth_rate_per_h",
    "activation_lag_h",
    "susceptible_fraction",
    "base_death_rate_per_h",
    "growth_decline_time_h",
    "lactate_death_rate_per_h",
)
# Donors differ in how lactate kills (the mismatch bench's lognormal_onset); how much is
# estimated, so that processes where they do not keep a narrow spread (2026-12-07).
_DEFAULT_OMEGA_ESTIMATED = ("lactate_death_rate_per_h",)


START_CHOICES = ("objective", "forecast")


@dataclasses.dataclass(frozen=True)
class DiscrepancySettings:
    """How the model discrepancy is learnt after the fit (Hydra: ``fit.discrepancy``; see
    :mod:`twin.forecast._discrepancy`).

    - ``horizons_h``: cut the training runs this many hours before harvest (empty: off).
    - ``coverage``: the central interval share the scale is calibrated for.
    - ``n_draws``: forecast draws per training run and horizon.
    - ``max_scale``: cap on the stretch factor (a guard against a degenerate forecast spread).
    - ``anchor``: also learn how much of a run's miss at its latest reading carries on to the
      horizon (the ``gain``), so that forecasts are anchored to the latest measurements.
    - ``age_trend``: also learn how the error changes with the culture time at the forecast
      target (a slope, kept where significant), for a model whose decline with age is off.
    - ``folds``: 0 (default): the training runs are forecast with the calibration of all of
      them (fast; the errors are nearly out-of-sample). ``k >= 2``: cross-fitted, each donor
      fold's runs forecast by a calibration of the other folds' donors (``k`` more fits; the
      errors and the interval scale are those of donors the fit never saw).
    """

    horizons_h: tuple[float, ...] = (24.0, 48.0, 72.0, 96.0)
    coverage: float = 0.9
    n_draws: int = 64
    max_scale: float = 20.0
    anchor: bool = True
    age_trend: bool = True
    folds: int = 0

    def __post_init__(self):
        object.__setattr__(self, "horizons_h", tuple(float(h) for h in self.horizons_h))
        for h in self.horizons_h:
            if not (math.isfinite(h) and h > 0):
                raise ValueError(f"horizons_h contains {h!r}: each must be > 0")
        if not 0 < self.coverage < 1:
            raise ValueError(f"coverage={self.coverage!r}: must be in (0, 1)")
        if self.n_draws < 10:
            raise ValueError(f"n_draws={self.n_draws!r}: must be >= 10")
        if not self.max_scale >= 1:
            raise ValueError(f"max_scale={self.max_scale!r}: must be >= 1")
        if self.folds == 1 or self.folds < 0:
            raise ValueError(f"folds={self.folds!r}: must be 0 (in-sample) or >= 2")


@dataclasses.dataclass
class CalibrationConfig:
    """What to estimate and how (Hydra group ``fit``; also the Python API's options).

    - ``fitted``: kinetic parameters estimated at population level; all others stay at their
      ``model.parameters`` values. ``donor_level``: the subset that also varies by donor.
    - ``donor_sd``: SD of a donor effect on the estimation scale (log or logit), the same for
      every donor-level parameter unless ``donor_sd_by_parameter`` names it (omega).
    - ``n_starts``: optimizer starts; the first is the prior mean, the others are drawn as the
      prior mean plus ``start_spread`` prior SDs times a standard normal draw.
    - ``start_choice``: which optimum is the estimate when starts end at different ones:
      ``forecast`` (default): each is completed (continuations, rounds, discrepancy) and the
      one whose donor-held-out forecasts of its training runs err least is kept (the
      pseudo-backtest score ``select`` ranks by; without ``discrepancy.horizons_h``, the
      lowest objective); ``objective``: the lowest objective. On misspecified data a lower
      objective can forecast worse; the price is one more discrepancy per distinct optimum.
    - ``max_steps``, ``decrement_tol``: Levenberg-Marquardt budget and convergence threshold
      (Gauss-Newton decrement, objective units; one datum one SD off contributes 0.5);
      ``decrement_tol_relative``: also converged below this times the objective (0: off;
      default 1e-6, about the ODE solver's relative tolerance).
    - ``continuations``: a fit still not converged after ``max_steps`` resumes from its best
      point up to this many times (misspecified data can need more steps).
    - ``fit_noise``: re-estimate each assay's noise SD as the RMS of its residuals after a fit
      and refit, ``noise_rounds`` times.
    - ``fit_donor_sd``: re-estimate each donor-level parameter's omega from the fitted donor
      effects (an EM step: ``omega^2 = mean(effect^2 + its posterior variance)``, Laplace) and
      refit, ``donor_sd_rounds`` times; ``donor_sd`` (or ``donor_sd_by_parameter``) is then
      the first round's value only. ``donor_sd_estimated``: parameters whose omega is
      re-estimated so without ``fit_donor_sd`` where they are in ``donor_level`` (the others'
      stay as given; default the lactate death rate's).
    - ``failure_residual``: residual given to every observation of a run whose ODE solve fails.
    - ``pad_multiple``: runs, observation times and donors are padded to a multiple of this, so
      datasets of similar size reuse compiled code.
    - ``devices``: local devices to split the runs over; 0 takes as many as divide the padded
      number of runs evenly. CPU cores count as devices when ``JAX_NUM_CPU_DEVICES`` is set
      before JAX starts (``experiments/calibrate.py`` sets it to the number of cores).
    - ``prior_dominated_ratio``: a parameter whose posterior SD exceeds this fraction of its
      prior SD is flagged as not identified by the data. ``high_correlation``: posterior
      correlations above this (in absolute value) are reported.
    - ``profile``: fitted parameters to profile (objective re-minimized over the others at
      ``profile_points`` values within ``profile_span_sd`` posterior SDs of the estimate).
    - ``likelihood``: how readings enter the fit: ``residuals`` (gaussian | student_t),
      ``student_t_dof``, ``detection_limits.<assay>`` (readings at or below are censored).
    - ``discrepancy``: how the forecast's model discrepancy is learnt from the training runs
      after the fit (:class:`DiscrepancySettings`; ``horizons_h=[]``: not learnt).
    - ``select``: candidate model structures (``"field=value,..."`` changes of
      ``model.structure``, or ``"default"``) to calibrate and rank on the data
      (:mod:`._select`); the best is the calibration returned. Empty: no selection.
    """

    fitted: list[str] = dataclasses.field(default_factory=lambda: list(_DEFAULT_FITTED))
    donor_level: list[str] = dataclasses.field(default_factory=lambda: list(_DEFAULT_DONOR_LEVEL))
    donor_sd: float = 0.3
    donor_sd_by_parameter: dict[str, float] = dataclasses.field(default_factory=dict)
    n_starts: int = 2
    start_spread: float = 0.5
    start_choice: str = "forecast"
    max_steps: int = 50
    continuations: int = 2
    decrement_tol: float = 1.0e-4
    decrement_tol_relative: float = 1.0e-6
    fit_noise: bool = False
    noise_rounds: int = 2
    fit_donor_sd: bool = False
    donor_sd_estimated: list[str] = dataclasses.field(
        default_factory=lambda: list(_DEFAULT_OMEGA_ESTIMATED)
    )
    donor_sd_rounds: int = 2
    failure_residual: float = 1.0e3
    pad_multiple: int = 8
    devices: int = 0
    prior_dominated_ratio: float = 0.7
    high_correlation: float = 0.95
    profile: list[str] = dataclasses.field(default_factory=list)
    profile_points: int = 7
    profile_span_sd: float = 3.0
    likelihood: Likelihood = dataclasses.field(default_factory=Likelihood)
    discrepancy: DiscrepancySettings = dataclasses.field(default_factory=DiscrepancySettings)
    select: list[str] = dataclasses.field(default_factory=list)

    def donor_sds(self) -> tuple[float, ...]:
        """Omega of each donor-level parameter, in ``donor_level`` order."""
        return tuple(self.donor_sd_by_parameter.get(n, self.donor_sd) for n in self.donor_level)

    def omega_estimated(self) -> tuple[bool, ...]:
        """Whether each donor-level parameter's omega is re-estimated, in ``donor_level`` order."""
        return tuple(self.fit_donor_sd or n in self.donor_sd_estimated for n in self.donor_level)


def calibration_config_problems(config: CalibrationConfig, key: str = "fit") -> list[str]:
    """Every problem with ``config``, one line each naming ``<key>.<field>`` and the value."""
    problems = []
    known = set(PARAMETER_NAMES)

    def names(field: str, allowed: set[str], what: str) -> None:
        values = list(getattr(config, field))
        for i, name in enumerate(values):
            if name not in allowed:
                problems.append(f"{key}.{field}[{i}]={name!r}: {what}")
            elif name in values[:i]:
                problems.append(f"{key}.{field}[{i}]={name!r}: listed twice")

    names("fitted", known, "not a kinetic parameter (see docs/parameters.md)")
    if not config.fitted:
        problems.append(f"{key}.fitted=[]: fit at least one parameter")
    names("donor_level", set(config.fitted), f"not in {key}.fitted")
    for name, sd in config.donor_sd_by_parameter.items():
        if name not in config.donor_level:
            problems.append(f"{key}.donor_sd_by_parameter.{name}: not in {key}.donor_level")
        elif not (math.isfinite(sd) and sd > 0):
            problems.append(f"{key}.donor_sd_by_parameter.{name}={sd!r}: must be > 0")
    names("donor_sd_estimated", known, "not a kinetic parameter (see docs/parameters.md)")
    names("profile", set(config.fitted), f"not in {key}.fitted")
    if config.start_choice not in START_CHOICES:
        problems.append(
            f"{key}.start_choice={config.start_choice!r}: one of {', '.join(START_CHOICES)}"
        )
    positive = ("donor_sd", "decrement_tol", "failure_residual", "profile_span_sd")
    for field in positive:
        value = getattr(config, field)
        if not (math.isfinite(value) and value > 0):
            problems.append(f"{key}.{field}={value!r}: must be > 0")
    if config.devices < 0:
        problems.append(f"{key}.devices={config.devices!r}: must be >= 0 (0: all that fit)")
    for field in ("start_spread", "decrement_tol_relative"):
        value = getattr(config, field)
        if not (math.isfinite(value) and value >= 0):
            problems.append(f"{key}.{field}={value!r}: must be >= 0")
    at_least = {"n_starts": 1, "max_steps": 1, "noise_rounds": 1, "pad_multiple": 1}
    at_least["donor_sd_rounds"] = 1
    at_least["continuations"] = 0
    at_least["profile_points"] = 2
    for field, low in at_least.items():
        value = getattr(config, field)
        if value < low:
            problems.append(f"{key}.{field}={value!r}: must be >= {low}")
    for field in ("prior_dominated_ratio", "high_correlation"):
        value = getattr(config, field)
        if not 0 < value < 1:
            problems.append(f"{key}.{field}={value!r}: must be in (0, 1)")
    return problems


def check_calibration_config(config: CalibrationConfig, key: str = "fit") -> None:
    """**Raises:** :class:`~twin.TwinInputError` listing every problem of ``config``."""
    problems = calibration_config_problems(config, key)
    if problems:
        raise TwinInputError(problems[0], problems=problems)


def calibration_from_config(node: DictConfig) -> CalibrationConfig:
    """A checked :class:`CalibrationConfig` from the ``fit`` config group."""
    schema = OmegaConf.structured(CalibrationConfig)
    # The likelihood is a frozen (hashable) dataclass, which OmegaConf would make read-only.
    OmegaConf.set_readonly(schema.likelihood, False)
    OmegaConf.set_readonly(schema.likelihood.detection_limits, False)
    OmegaConf.set_readonly(schema.discrepancy, False)
    config = OmegaConf.to_object(OmegaConf.merge(schema, node))
    check_calibration_config(config)
    return config
