"""One sweep point -> harvest outcomes, and a chunk of points compiled once over all devices.

A point sets its swept recipe decisions and kinetic parameters, then simulates the recipe
(for one set of kinetic parameters, or for every donor of a common sample: the same donors at
every point, so differences between points are not donor noise). Outcomes are the harvest
observables and the release checks of :func:`twin.process.product`. A failed solve is data:
``success`` is false, ``failure`` says why (:data:`FAILURES`), float outcomes are NaN and
``conforming`` is false (a failed batch does not conform), so no NaN ever passes as a value.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..calibrate._model import map_runs
from ..kinetics import PARAMETER_NAMES, KineticParameters, ModelStructure
from ..observe import observables
from ..process import Downstream, Recipe, product, recipe_values, schedule_from_values
from ..simulate import SolverSettings, simulate
from ._space import SweepSpace

# Failure codes stored per simulation (flag_values / flag_meanings in the store).
FAILURES: dict[int, str] = {
    0: "ok",
    1: "solver_failed: step budget (model.solver.max_steps) exceeded or non-finite state",
    2: "nonfinite_outcome: the solve succeeded but a harvest outcome is not finite",
}

# name -> (unit, dtype): what each simulation yields.
OUTCOMES: dict[str, tuple[str, str]] = {
    "viable_cells": ("cells", "f8"),
    "viability": ("fraction", "f8"),
    "car_pos_fraction": ("fraction", "f8"),
    "vcn_per_transduced_cell": ("copies/cell", "f8"),
    "viable_car_pos_cells": ("cells", "f8"),
    "memory_like_fraction": ("fraction", "f8"),
    "vector_TU": ("TU", "f8"),
    "product_viable_car_pos_cells": ("cells", "f8"),
    "product_viability": ("fraction", "f8"),
    "doses": ("doses", "f8"),
    "passes_viability": ("", "bool"),
    "passes_car_pos": ("", "bool"),
    "passes_vcn": ("", "bool"),
    "passes_dose": ("", "bool"),
    "conforming": ("", "bool"),
    "success": ("", "bool"),
    "failure": ("code (see flag_meanings)", "i1"),
}


@dataclasses.dataclass(frozen=True)
class SweepModel:
    """Everything a point's simulation needs besides its swept values (static under jit)."""

    space: SweepSpace
    recipe: Recipe
    downstream: Downstream
    structure: ModelStructure = ModelStructure()
    solver: SolverSettings = SolverSettings()


def point_trajectory(x: Float[Array, " d"], params: KineticParameters, model: SweepModel):
    """Simulate one point: ``(trajectory saved at transduction, recipe values)``."""
    values = recipe_values(model.recipe)
    swept = dict(zip(model.space.names, x, strict=True))
    for name, value in swept.items():
        if name in values:
            values[name] = jnp.broadcast_to(value, values[name].shape)
    params = KineticParameters(
        **{n: swept.get(n, getattr(params, n)) for n in PARAMETER_NAMES}  # type: ignore[arg-type]
    )
    schedule = schedule_from_values(model.recipe, values)
    transduction_h = model.recipe.activation_time_h + values["transduction_delay_h"]
    trajectory = simulate(
        params, schedule, transduction_h.reshape(1), model.structure, model.solver
    )
    return trajectory, values


def point_solution(x: Float[Array, " d"], params: KineticParameters, model: SweepModel):
    """Simulate one point: ``(end state, state at transduction, solver success, MOI)``."""
    trajectory, values = point_trajectory(x, params, model)
    at_transduction = jax.tree.map(lambda leaf: leaf[0], trajectory.states)
    return trajectory.end_state, at_transduction, trajectory.success, values["moi"]


def solution_outcomes(solution, model: SweepModel) -> dict[str, Array]:
    """The outcomes (:data:`OUTCOMES`) of one :func:`point_solution` (traceable)."""
    end_state, at_transduction, solved, moi = solution
    harvest = observables(end_state)
    released = product(harvest, model.downstream)
    floats = {
        "viable_cells": harvest["viable_cells"],
        "viability": harvest["viability"],
        "car_pos_fraction": harvest["car_pos_fraction"],
        "vcn_per_transduced_cell": harvest["vcn_per_transduced_cell"],
        "viable_car_pos_cells": harvest["viable_car_pos_cells"],
        "memory_like_fraction": harvest["memory_like_fraction"],
        "vector_TU": moi * observables(at_transduction)["viable_cells"],
        "product_viable_car_pos_cells": released["product_viable_car_pos_cells"],
        "product_viability": released["product_viability"],
        "doses": released["doses"],
    }
    finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in floats.values()]))
    success = solved & finite
    failure = jnp.where(solved, jnp.where(finite, 0, 2), 1).astype(jnp.int8)
    out = {k: jnp.where(success, v, jnp.nan) for k, v in floats.items()}
    for k in ("passes_viability", "passes_car_pos", "passes_vcn", "passes_dose", "conforming"):
        out[k] = success & released[k]
    return {**out, "success": success, "failure": failure}


def point_outcomes(
    x: Float[Array, " d"], params: KineticParameters, model: SweepModel
) -> dict[str, Array]:
    """The outcomes (:data:`OUTCOMES`) of one simulation at swept values ``x`` (traceable)."""
    return solution_outcomes(point_solution(x, params, model), model)


def chunk_function(model: SweepModel, devices: int, donors: bool, chunk_size: int):
    """``f(x[n, d], params) -> outcomes`` (NumPy in and out, ``n <= chunk_size``) running
    one compiled program: every call is padded (with copies of its last point) to
    ``chunk_size`` rounded up to a multiple of ``devices``, and the points are split over the
    first ``devices`` local devices. With ``donors``, ``params`` carry a leading donor axis
    and outcomes gain a donor axis after the point axis; else one set serves all points.

    The solves run split over the devices; the outcomes (observables, release checks) of the
    whole chunk are then computed on one device: XLA may sum the copy classes in another
    order for another batch shape (seen: 1 ulp in VCN per transduced cell), and this way the
    results are the same whatever the number of devices.
    """

    def per_point(x, params):
        if donors:
            return jax.vmap(lambda p: point_solution(x, p, model))(params)
        return point_solution(x, params, model)

    solve = jax.jit(lambda x, params: map_runs(per_point, devices, (x,), (params,)))
    outcomes = jax.vmap(lambda s: solution_outcomes(s, model))
    if donors:
        outcomes = jax.vmap(outcomes)
    outcomes = jax.jit(outcomes)
    padded_size = -(-chunk_size // devices) * devices
    first = jax.local_devices()[0]

    def evaluate(x: np.ndarray, params) -> dict[str, np.ndarray]:
        n = x.shape[0]
        if n > chunk_size:
            raise ValueError(f"{n} points in a chunk of {chunk_size}")
        padded = np.concatenate([x, np.repeat(x[-1:], padded_size - n, axis=0)])
        solution = jax.device_put(solve(jnp.asarray(padded, float), params), first)
        return {k: np.asarray(v)[:n] for k, v in outcomes(solution).items()}

    return evaluate


def bytes_per_point(model: SweepModel, n_donors: int) -> int:
    """Working memory of one point, a conservative estimate for the chunk size.

    Per simulation the compiled chunk holds the state at every slot of the scan (events +
    one save), the Tsit5 stages and controller copies of the state (about a dozen), and the
    outcomes: about 6 kB for the default recipe. XLA's temporaries and the compiler are
    allowed a factor of 16 on top (about 100 kB per point), set from a measurement
    (``experiments/benchmark_sweep.py``, 2 CPU devices, chunks of 4096: a whole sweep's peak
    resident memory 720 MiB, against 364 MiB for the same process without the simulation,
    i.e. at most about 90 kB per point, compilation included).
    """
    n_state = sum(np.size(leaf) for leaf in jax.tree.leaves(_state_shapes(model.structure)))
    n_slots = 4 + len(model.recipe.exchanges) + len(model.recipe.feeds)
    n_slots += len(model.recipe.sample_times_h) + 1
    per_simulation = 8 * (n_state * (n_slots + 12) + len(OUTCOMES))
    return 16 * per_simulation * max(n_donors, 1)


def _state_shapes(structure: ModelStructure):
    from ..kinetics import empty_state

    return jax.eval_shape(lambda: empty_state(structure))
