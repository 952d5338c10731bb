"""The calibrated model: estimates, uncertainty and diagnostics, with what forecasting needs."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..assays import AssayNoise, Likelihood
from ..kinetics import (
    PARAMETER_NAMES,
    KineticParameters,
    ModelStructure,
    from_unconstrained,
    to_unconstrained,
)
from ..simulate import SolverSettings
from ._laplace import high_correlations, parameter_summary, to_natural


@dataclasses.dataclass(frozen=True, eq=False)
class Calibration:
    """A fitted hierarchical model (everything on the estimation scale, log or logit, unless
    the name says natural).

    **Fields:**

    - ``fitted``, ``donor_level``: the estimated parameters; ``donor_ids``: the donors seen;
      ``run_ids`` with ``run_donor_ids``: the runs fitted.
    - ``model_parameters``: the model config's values (natural units): prior means of the
      fitted parameters and the fixed values of all others.
    - ``estimate``: population values of ``fitted`` (MAP). ``donor_effects``: ``[donor,
      donor_level]`` effects (MAP). ``covariance``: Laplace covariance over
      ``[estimate, donor_effects.ravel()]``, entries named by :attr:`entry_names`.
    - ``prior_sd`` (per fitted), ``donor_sd`` (omega, per donor-level parameter).
    - ``noise``: assay noise SDs used in the final fit; ``initial_noise``: those configured.
    - ``structure``, ``solver``: the model structure and ODE settings the fit used.
    - ``objective``: ``0.5 |r|^2`` at the estimate; ``n_observations``: measured values used.
    - ``observations``: one row per measurement (``run_id, time_h, variable, observed,
      predicted, scaled_residual, standardized_residual, censored``; predicted in natural
      units; ``scaled_residual`` is the likelihood's residual, ``standardized_residual`` the
      plain miss on the assay scale in noise SDs, NaN where censored).
    - ``diagnostics``: one row per optimizer run (noise round, start, objective, steps,
      gradient norm, convergence, failed runs, wall time).
    - ``profiles``: profile-likelihood points (``parameter, value_unconstrained, value,
      objective, converged``; objective minimized over all other unknowns), may be empty.
    - ``prior_dominated_ratio``, ``high_correlation``: thresholds of the identifiability flags.
    - ``config``: the resolved config (YAML) that produced this calibration.
    - ``likelihood``: how readings entered the fit (censoring, residual distribution).
    - ``discrepancy``: the forecast's model-discrepancy table learnt on the training runs
      (``variable, horizon_h, bias, scale, n_runs, gain``, errors;
      :mod:`twin.forecast._discrepancy`).
    - ``selection``: the ranking of candidate structures when ``fit.select`` was given
      (:mod:`._select`), else empty.
    """

    fitted: tuple[str, ...]
    donor_level: tuple[str, ...]
    donor_ids: tuple[str, ...]
    run_ids: tuple[str, ...]
    run_donor_ids: tuple[str, ...]
    model_parameters: KineticParameters
    estimate: np.ndarray
    donor_effects: np.ndarray
    covariance: np.ndarray
    prior_sd: np.ndarray
    donor_sd: np.ndarray
    noise: AssayNoise
    initial_noise: AssayNoise
    structure: ModelStructure
    solver: SolverSettings
    objective: float
    n_observations: int
    observations: pd.DataFrame
    diagnostics: pd.DataFrame
    profiles: pd.DataFrame
    prior_dominated_ratio: float
    high_correlation: float
    config: str = ""
    likelihood: Likelihood = Likelihood()
    discrepancy: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    selection: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)

    @property
    def entry_names(self) -> list[str]:
        """Names of the covariance entries: fitted names, then ``name[donor]``."""
        effects = [f"{n}[{d}]" for d in self.donor_ids for n in self.donor_level]
        return list(self.fitted) + effects

    @property
    def prior_mean(self) -> np.ndarray:
        unconstrained = to_unconstrained(self.model_parameters)
        return np.array([float(getattr(unconstrained, n)) for n in self.fitted])

    @property
    def population(self) -> KineticParameters:
        """Population (typical-donor) parameters in natural units: fitted ones at the estimate,
        the others at the model config's values."""
        return self._parameters(self.estimate)

    def donor_parameters(self, donor_id: str) -> KineticParameters:
        """A seen donor's parameters (natural units): population plus the donor's effects.

        **Raises:** ``KeyError`` for a donor not in :attr:`donor_ids` (use :attr:`population`
        or :meth:`sample_parameters` for a new donor).
        """
        return self._parameters(self.donor_theta(donor_id))

    @property
    def donor_effects_by_donor(self) -> dict[str, dict[str, float]]:
        """``{donor_id: {parameter: effect}}`` (estimation scale)."""
        return {
            donor: dict(zip(self.donor_level, map(float, row), strict=True))
            for donor, row in zip(self.donor_ids, self.donor_effects, strict=True)
        }

    @property
    def noise_sd(self) -> Mapping[str, float]:
        return dataclasses.asdict(self.noise)

    @property
    def converged(self) -> bool:
        """Whether the optimizer run that produced the estimate converged with every run's
        ODE solve successful at the estimate (a fit that penalized a failed run is not one)."""
        best = self.diagnostics.loc[self.diagnostics["selected"]]
        failed = int(best["failed_runs"].sum()) if "failed_runs" in best.columns else 0
        return bool(best["converged"].all()) and failed == 0

    def summary(self) -> pd.DataFrame:
        """One row per fitted parameter: estimate, 95 % interval, prior and the identified
        flag (natural units; see :func:`~._laplace.parameter_summary`), plus profile-likelihood
        95 % bounds for profiled parameters."""
        posterior_sd = np.sqrt(np.diag(self.covariance))[: len(self.fitted)]
        table = parameter_summary(
            self.fitted,
            self.estimate,
            posterior_sd,
            self.prior_mean,
            self.prior_sd,
            self.prior_dominated_ratio,
        )
        if not self.profiles.empty:
            bounds = _profile_bounds(self.profiles, self.objective)
            table = table.merge(bounds, on="parameter", how="left")
        return table

    def correlated_pairs(self) -> pd.DataFrame:
        """Pairs of population parameters with posterior ``|correlation| > high_correlation``.

        Donor effects are left out: with few donors each is strongly (negatively) correlated
        with its population value by construction, which says nothing about identifiability.
        """
        p = len(self.fitted)
        return high_correlations(self.covariance[:p, :p], self.fitted, self.high_correlation)

    def sample_parameters(
        self, key: jax.Array, n: int, donor_id: str | None = None
    ) -> KineticParameters:
        """``n`` parameter sets (leading axis; natural units) from the Laplace posterior.

        For a seen ``donor_id`` the population values and that donor's effects are drawn
        jointly; for ``None`` or a new donor the population values are drawn and a new donor
        effect is added from ``N(0, donor_sd^2)`` (a new donor from the same population).
        """
        return self._parameters(self.sample_theta(key, n, donor_id))

    def sample_theta(self, key: jax.Array, n: int, donor_id: str | None = None) -> np.ndarray:
        """As :meth:`sample_parameters`, on the estimation scale: ``[n, fitted]``."""
        key_joint, key_new = jax.random.split(key)
        p, q = len(self.fitted), len(self.donor_level)
        if donor_id in self.donor_ids:
            start = p + self.donor_ids.index(donor_id) * q
            index = np.r_[np.arange(p), np.arange(start, start + q)]
            mean = np.r_[self.estimate, self.donor_effects[self.donor_ids.index(donor_id)]]
        else:
            index = np.arange(p)
            mean = self.estimate
        draws = np.asarray(
            jax.random.multivariate_normal(
                key_joint,
                jnp.asarray(mean),
                jnp.asarray(self.covariance[np.ix_(index, index)]),
                (n,),
            )
        )
        theta = draws[:, :p].copy()
        position = [self.fitted.index(name) for name in self.donor_level]
        if donor_id in self.donor_ids:
            theta[:, position] += draws[:, p:]
        else:
            theta[:, position] += np.asarray(jax.random.normal(key_new, (n, q))) * self.donor_sd
        return theta

    def donor_theta(self, donor_id: str) -> np.ndarray:
        """The estimate for a seen donor (population plus its donor effects), on the
        estimation scale: ``[fitted]``."""
        if donor_id not in self.donor_ids:
            raise KeyError(f"donor {donor_id!r} was not in the calibration data")
        theta = self.estimate.copy()
        position = [self.fitted.index(name) for name in self.donor_level]
        theta[position] += self.donor_effects[self.donor_ids.index(donor_id)]
        return theta

    def _parameters(self, theta: np.ndarray) -> KineticParameters:
        """Natural-unit parameters with the fitted ones from ``theta`` (``[..., fitted]``)."""
        theta = np.asarray(theta, float)
        batch = theta.shape[:-1]
        base = to_unconstrained(self.model_parameters)
        values = {n: np.broadcast_to(np.asarray(getattr(base, n)), batch) for n in PARAMETER_NAMES}
        values.update({n: theta[..., i] for i, n in enumerate(self.fitted)})
        return from_unconstrained(
            KineticParameters(**{n: jnp.asarray(v, float) for n, v in values.items()})
        )


def _profile_bounds(profiles: pd.DataFrame, best_objective: float) -> pd.DataFrame:
    """Where each profile crosses ``2 (objective - best) = 3.84`` (chi-square, 1 d.o.f., 95 %),
    interpolated linearly on the estimation scale; NaN where the profiled range stays below."""
    threshold = best_objective + 0.5 * 3.841458820694124
    rows = []
    for name, group in profiles.groupby("parameter", sort=False):
        group = group.sort_values("value_unconstrained")
        u = group["value_unconstrained"].to_numpy()
        objective = group["objective"].to_numpy()
        centre = int(np.argmin(objective))
        lower = _crossing(u[: centre + 1][::-1], objective[: centre + 1][::-1], threshold)
        upper = _crossing(u[centre:], objective[centre:], threshold)
        rows.append(
            {
                "parameter": name,
                "profile_lower_95": float(to_natural(name, lower)),
                "profile_upper_95": float(to_natural(name, upper)),
            }
        )
    return pd.DataFrame(rows)


def _crossing(u: np.ndarray, objective: np.ndarray, threshold: float) -> float:
    """The first point, walking outward from the minimum (``u[0]``), where ``objective``
    reaches ``threshold``, by linear interpolation; NaN if it never does."""
    above = np.flatnonzero(objective >= threshold)
    if above.size == 0 or above[0] == 0:
        return float("nan")
    i = above[0]
    fraction = (threshold - objective[i - 1]) / (objective[i] - objective[i - 1])
    return float(u[i - 1] + fraction * (u[i] - u[i - 1]))
