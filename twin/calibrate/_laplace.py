"""Laplace approximation at the optimum: covariance, marginal intervals, identifiability flags.

The posterior of the unknowns ``x`` is approximated by a Gaussian at the MAP estimate with
precision ``J^T J`` (the Gauss-Newton Hessian of ``0.5 |r|^2``; prior rows included, so it is
positive definite). Intervals are formed on the estimation scale (log / logit) and mapped to
natural units, so they are asymmetric there and never leave the parameter's domain.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..kinetics import PARAMETER_TABLE

_SPECS = {spec.name: spec for spec in PARAMETER_TABLE}
Z_95 = 1.959963984540054  # two-sided 95 % normal quantile


def laplace_covariance(jacobian: np.ndarray, keep: int) -> np.ndarray:
    """``inv(J^T J)`` restricted to the first ``keep`` unknowns (the padding donors' effects,
    which only their prior touches, form a separate block and are dropped)."""
    hessian = jacobian.T @ jacobian
    factor = np.linalg.cholesky(hessian)
    inverse_factor = np.linalg.solve(factor, np.eye(hessian.shape[0]))
    covariance = inverse_factor.T @ inverse_factor
    return covariance[:keep, :keep]


def to_natural(name: str, u: np.ndarray | float) -> np.ndarray:
    """A value on the estimation scale of ``name`` in natural units."""
    u = np.asarray(u, float)
    return np.exp(u) if _SPECS[name].transform == "log" else 1.0 / (1.0 + np.exp(-u))


def parameter_summary(
    fitted: Sequence[str],
    estimate: np.ndarray,
    posterior_sd: np.ndarray,
    prior_mean: np.ndarray,
    prior_sd: np.ndarray,
    prior_dominated_ratio: float,
) -> pd.DataFrame:
    """One row per fitted parameter: estimate and 95 % interval (natural units), the prior
    value and 95 % interval, SDs on the estimation scale, and whether the data identify it
    (posterior SD at most ``prior_dominated_ratio`` of the prior SD)."""
    rows = []
    for i, name in enumerate(fitted):
        low, high = estimate[i] - Z_95 * posterior_sd[i], estimate[i] + Z_95 * posterior_sd[i]
        prior_low = prior_mean[i] - Z_95 * prior_sd[i]
        prior_high = prior_mean[i] + Z_95 * prior_sd[i]
        ratio = posterior_sd[i] / prior_sd[i]
        rows.append(
            {
                "parameter": name,
                "unit": _SPECS[name].unit,
                "estimate": float(to_natural(name, estimate[i])),
                "lower_95": float(to_natural(name, low)),
                "upper_95": float(to_natural(name, high)),
                "prior": float(to_natural(name, prior_mean[i])),
                "prior_lower_95": float(to_natural(name, prior_low)),
                "prior_upper_95": float(to_natural(name, prior_high)),
                "posterior_sd": float(posterior_sd[i]),
                "prior_sd": float(prior_sd[i]),
                "sd_ratio": float(ratio),
                "identified": bool(ratio <= prior_dominated_ratio),
            }
        )
    return pd.DataFrame(rows)


def correlation_matrix(covariance: np.ndarray) -> np.ndarray:
    sd = np.sqrt(np.diag(covariance))
    return covariance / np.outer(sd, sd)


def high_correlations(
    covariance: np.ndarray, names: Sequence[str], threshold: float
) -> pd.DataFrame:
    """Pairs of entries whose posterior correlation exceeds ``threshold`` in absolute value,
    strongest first (columns ``first, second, correlation``)."""
    correlation = correlation_matrix(covariance)
    first, second = np.triu_indices_from(correlation, k=1)
    strong = np.abs(correlation[first, second]) > threshold
    pairs = pd.DataFrame(
        {
            "first": [names[i] for i in first[strong]],
            "second": [names[j] for j in second[strong]],
            "correlation": correlation[first[strong], second[strong]],
        }
    )
    return pairs.sort_values("correlation", key=np.abs, ascending=False, ignore_index=True)
