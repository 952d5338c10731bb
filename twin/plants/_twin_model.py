"""The twin's own equations as an oracle's process model: the oracle of the shipped example,
whose batches the twin generated (``twin/data/example/generate_config.yaml`` holds the true
population and donor SDs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from ..assays import AssayNoise, assay_residual
from ..kinetics import PARAMETER_NAMES, PARAMETER_TABLE, KineticParameters, ModelStructure
from ..observe import observables
from ..process import Event, build_schedule
from ..simulate import SolverSettings, simulate
from ._base import Param

N_EVENTS = 48  # schedule slots: one compile for every run
N_SAVES = 16


class TwinModel:
    """The twin with a known population: ``observe`` runs :func:`twin.simulate`."""

    name = "twin"
    glucose_detection_limit_mM = 0.0

    def __init__(
        self,
        population: KineticParameters,
        donor_sd: Mapping[str, float],
        structure: ModelStructure,
        solver: SolverSettings,
        noise: AssayNoise,
    ):
        transforms = {spec.name: spec.transform for spec in PARAMETER_TABLE}
        self.parameters = {
            name: Param(
                float(getattr(population, name)), float(donor_sd.get(name, 0.0)), transforms[name]
            )
            for name in PARAMETER_NAMES
        }
        self.structure, self.solver, self.noise = structure, solver, noise

    def residual(self, variable: str, observed: float, predicted: float) -> float:
        r = assay_residual(variable, jnp.asarray(observed), jnp.asarray(predicted))
        return float(r) / self.noise.sd(variable)

    def observe(
        self, events: Sequence[Event], p: dict, times_h: Sequence[float]
    ) -> dict[float, dict[str, float]] | None:
        seed = events[0]
        schedule = build_schedule(
            events,
            medium_glucose_mM=seed.glucose_mM if seed.glucose_mM is not None else 11.1,
            medium_il2_IU_per_mL=seed.il2_IU_per_mL if seed.il2_IU_per_mL is not None else 0.0,
            n_events=N_EVENTS,
        )
        times = sorted(times_h)
        save = np.array(times + [times[-1]] * (N_SAVES - len(times)), float)
        params = KineticParameters(**{n: jnp.asarray(p[n], float) for n in PARAMETER_NAMES})
        trajectory = simulate(params, schedule, jnp.asarray(save), self.structure, self.solver)
        if not bool(trajectory.success):
            return None
        obs = {k: np.asarray(v) for k, v in observables(trajectory.states).items()}
        if not np.all(np.isfinite(obs["viable_car_pos_cells"][: len(times)])):
            return None
        return {t: {k: float(v[i]) for k, v in obs.items()} for i, t in enumerate(times)}
