"""What a calibration says each run looked like between its samples: the fitted trajectory on a
dense time grid (feeds and exchanges visible) and a 90 % band of what would be measured there
(parameter draws from the Laplace posterior of the run's donor, plus assay noise)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..assays import MEASURED_VARIABLES, sample_assay
from ..data import RunData
from ..kinetics import ModelStructure
from ..observe import observables
from ..simulate import SolverSettings, simulate
from ._model import ParameterLayout, kinetic_parameters, make_prior, map_runs_on_all_devices
from ._problem import build_problem
from ._result import Calibration

BAND_COLUMNS = ("run_id", "variable", "time_h", "fitted", "lower_90", "upper_90")
# Copy-number readouts are not defined before the vector is added: no curve there.
_AFTER_TRANSDUCTION = ("car_pos_fraction", "vcn_per_cell")


def simulate_parameter_draws(calibration: Calibration, theta, schedules, time_h):
    """Simulated states ``[runs, draws, times]`` of parameter draws ``theta``
    (``[runs, draws, fitted]``, estimation scale) over each run's schedule."""
    layout = ParameterLayout(calibration.fitted, calibration.donor_level, n_donors=1)
    base = make_prior(calibration.model_parameters, layout, calibration.donor_sd).base
    return _simulate_all(
        theta, schedules, time_h, base, layout, calibration.structure, calibration.solver
    )


@eqx.filter_jit
def _simulate_all(
    theta, schedules, time_h, base, layout, structure: ModelStructure, solver: SolverSettings
):
    def one_run(theta_run, schedule, times, base):
        def one_draw(t):
            params = kinetic_parameters(t, base, layout)
            return simulate(params, schedule, times, structure, solver).states

        return jax.vmap(one_draw)(theta_run)

    return map_runs_on_all_devices(one_run, (theta, schedules, time_h), (base,))


def fit_bands(
    calibration: Calibration,
    data: RunData,
    *,
    n_draws: int = 40,
    n_times: int = 121,
    seed: int = 0,
) -> pd.DataFrame:
    """Per run of ``data`` (the calibration's runs) and measured variable, on ``n_times``
    times from seed to the run's last measurement: the trajectory at the estimate
    (``fitted``) and the central 90 % of what would be measured (``lower_90``,
    ``upper_90``). Columns :data:`BAND_COLUMNS`; one compiled program for all runs."""
    problem = build_problem(data)
    run_ids = list(problem.run_ids)
    last_h = np.asarray(problem.arrays.time_h).max(axis=1)
    time_h = np.linspace(0.0, 1.0, n_times)[None, :] * last_h[:, None]
    key_theta, key_noise = jax.random.split(jax.random.PRNGKey(seed))
    keys = jax.random.split(key_theta, len(run_ids))
    theta = np.stack(
        [
            np.concatenate(
                [
                    calibration.donor_theta(data.donor_of(r))[None],
                    calibration.sample_theta(k, n_draws, data.donor_of(r)),
                ]
            )
            for r, k in zip(run_ids, keys, strict=True)
        ]
    )
    n_padded = problem.arrays.n_runs
    theta = np.concatenate([theta, np.repeat(theta[:1], n_padded - len(run_ids), axis=0)])
    states = simulate_parameter_draws(
        calibration, jnp.asarray(theta), problem.arrays.schedules, jnp.asarray(time_h)
    )
    values = observables(states)
    transduced_h = {
        r: min((e.time_h for e in data.events_for(r) if e.operation == "transduce"), default=None)
        for r in run_ids
    }
    frames = []
    for variable, key in zip(
        MEASURED_VARIABLES, jax.random.split(key_noise, len(MEASURED_VARIABLES)), strict=True
    ):
        truth = np.asarray(values[variable])[: len(run_ids)]  # [runs, 1 + draws, times]
        # One noise draw per parameter draw, shared over the times: the same marginal
        # quantiles at each time as independent noise, without a ragged band.
        measured = np.asarray(
            sample_assay(
                key,
                variable,
                jnp.asarray(truth[:, 1:]),
                calibration.noise_sd[variable],
                shared_axis=-1,
            )
        )
        lower, upper = np.quantile(measured, [0.05, 0.95], axis=1)
        for i, run_id in enumerate(run_ids):
            frame = pd.DataFrame(
                {
                    "run_id": run_id,
                    "variable": variable,
                    "time_h": time_h[i],
                    "fitted": truth[i, 0],
                    "lower_90": lower[i],
                    "upper_90": upper[i],
                }
            )
            start = transduced_h[run_id]
            if variable in _AFTER_TRANSDUCTION:
                before = frame["time_h"] < (np.inf if start is None else start)
                frame.loc[before, ["fitted", "lower_90", "upper_90"]] = np.nan
            frames.append(frame)
    return pd.concat(frames, ignore_index=True).loc[:, list(BAND_COLUMNS)]
