"""Profile likelihood: the objective re-minimized over all other unknowns, one parameter fixed.

A parameter is held at a value by giving it a prior of that mean and a negligible SD
(:data:`PIN_SD`), so the compiled Levenberg-Marquardt function of the main fit is reused as is
(prior means and SDs are data, not structure). The pinning term is then swapped for the
parameter's own prior term, so profile objectives are comparable with the fit's objective.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm import tqdm

from ._laplace import to_natural
from ._model import ModelSpec, ObjectiveData
from ._solve import LMOptions, LMResult, fit_one

PIN_SD = 1.0e-6  # estimation-scale SD that holds a profiled parameter at its value


def profile_likelihood(
    names: list[str],
    best: LMResult,
    posterior_sd: np.ndarray,
    data: ObjectiveData,
    spec: ModelSpec,
    options: LMOptions,
    *,
    points: int,
    span_sd: float,
    progress: bool = True,
) -> pd.DataFrame:
    """Profile each of ``names`` at ``points`` values spanning ``span_sd`` posterior SDs
    (``posterior_sd``, estimation scale, per fitted parameter) around the estimate.

    **Returns:** rows ``parameter, value_unconstrained, value (natural), objective, converged``.
    """
    layout = spec.layout
    n_data = best.residuals.size - layout.size
    prior_mean = np.asarray(data.prior.mean(layout))
    prior_sd = np.asarray(data.prior.population_sd)
    grid = [
        (name, value)
        for name in names
        for value in best.x[layout.fitted.index(name)]
        + posterior_sd[layout.fitted.index(name)] * np.linspace(-span_sd, span_sd, points)
    ]
    rows = []
    for name, value in tqdm(
        grid, desc="profile", unit="point", disable=not (progress and grid), leave=False
    ):
        k = layout.fitted.index(name)
        pinned = dataclasses.replace(
            data.prior,
            base=data.prior.base.at[layout.fitted_index[k]].set(value),
            population_sd=data.prior.population_sd.at[k].set(PIN_SD),
        )
        x0 = best.x.copy()
        x0[k] = value
        result = fit_one(jnp.asarray(x0), dataclasses.replace(data, prior=pinned), spec, options)
        pin_residual = float(result.residuals[n_data + k])
        own_prior = (value - prior_mean[k]) / prior_sd[k]
        rows.append(
            {
                "parameter": name,
                "value_unconstrained": float(value),
                "value": float(to_natural(name, value)),
                "objective": float(result.objective) - 0.5 * pin_residual**2 + 0.5 * own_prior**2,
                "converged": bool(result.converged),
            }
        )
    return pd.DataFrame(rows)
