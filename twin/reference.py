"""An independent reference solve with ``scipy.integrate.solve_ivp``.

Same vector field and jump maps as :func:`twin.simulate` (the model is defined once), but a
different integrator and a plain Python loop over events. Used by the tests (agreement at tight
tolerance) and by the benchmark (the one-by-one baseline).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from scipy.integrate import solve_ivp

from .kinetics import (
    CultureState,
    KineticParameters,
    ModelStructure,
    culture_vector_field,
    empty_state as _empty_state,
)
from .process import EVENT_FIELDS, JUMP_MAPS, EventValues, Schedule


class ReferenceSolver:
    """Compiles the vector field and jump maps once for a structure; solves with SciPy."""

    def __init__(self, structure: ModelStructure = ModelStructure()):
        flat, self._unravel = ravel_pytree(_empty_state(structure))
        self.structure = structure
        self.size = flat.size

        def rhs(t, y, params):
            return ravel_pytree(culture_vector_field(t, self._unravel(y), params, structure))[0]

        def jump(code, y, event, params):
            state = jax.lax.switch(code, JUMP_MAPS, self._unravel(y), event, params)
            return ravel_pytree(state)[0]

        self._rhs = jax.jit(rhs)
        self._jump = jax.jit(jump)

    def unravel(self, y: np.ndarray) -> CultureState:
        return self._unravel(jnp.asarray(y))

    def solve(
        self,
        params: KineticParameters,
        schedule: Schedule,
        save_times_h: np.ndarray,
        *,
        rtol: float = 1e-10,
        atol: float = 1e-12,
        method: str = "DOP853",
    ) -> tuple[list[CultureState], CultureState]:
        """Solve one batch; returns the states at ``save_times_h`` (before events at that time,
        as in :func:`twin.simulate`) and the end state."""
        times = np.asarray(schedule.time_h, float)
        codes = np.asarray(schedule.operation)
        fields = {f: np.asarray(getattr(schedule, f), float) for f in EVENT_FIELDS}
        save = np.asarray(save_times_h, float)
        saved: dict[int, np.ndarray] = {}
        y = np.zeros(self.size)

        def rhs(t, y):
            return np.asarray(self._rhs(t, jnp.asarray(y), params))

        for i, code in enumerate(codes):
            event = EventValues(
                time_h=jnp.asarray(times[i]),
                **{f: jnp.asarray(fields[f][i]) for f in EVENT_FIELDS},
            )
            y = np.asarray(self._jump(int(code), jnp.asarray(y), event, params))
            t0 = times[i]
            t1 = times[i + 1] if i + 1 < len(times) else t0
            if i == 0:
                for j in np.flatnonzero(save == t0):
                    saved[int(j)] = y.copy()
            inside = np.flatnonzero((save > t0) & (save <= t1))
            if t1 > t0:
                t_eval = np.append(save[inside][save[inside] < t1], t1)
                solution = solve_ivp(
                    rhs, (t0, t1), y, method=method, t_eval=t_eval, rtol=rtol, atol=atol
                )
                if not solution.success:
                    raise RuntimeError(f"reference solve failed in segment {i}: {solution.message}")
                y = solution.y[:, -1]
                for j in inside:
                    saved[int(j)] = solution.y[:, int(np.searchsorted(t_eval, save[j]))]
        nan = np.full(self.size, np.nan)
        states = [self.unravel(saved.get(j, nan)) for j in range(save.size)]
        return states, self.unravel(y)
