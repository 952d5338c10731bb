"""Each batch's biology on its realized and its planned schedule, with the project's simulator.

Realized event times are the recipe times plus each operation's lateness (see ``_plan``);
the planned schedule is the recipe's own. Both go through ``twin.simulate.simulate_batch``
(vmapped) in chunks of one fixed size, so the solve compiles once per schedule length.
With a checkpoint folder each chunk's outcomes are written as soon as they are solved, so a
killed factory run resumes (``resume=true``) with the chunks it had not finished.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .._atomic import atomic_path
from ..kinetics import PARAMETER_NAMES, KineticParameters, ModelStructure
from ..observe import observables
from ..process import EVENT_FIELDS, Downstream, Schedule, product
from ..simulate import SolverSettings, simulate_batch
from ..virtual import sample_donor_parameters
from ._config import FacilityConfig
from ._model import Arrivals
from ._plan import RecipePlan

# Product quantities reported per batch.
OUTCOMES: tuple[str, ...] = (
    "viable_car_pos_cells",
    "viability",
    "car_pos_fraction",
    "vcn_per_transduced_cell",
    "product_viable_car_pos_cells",
    "product_viability",
    "doses",
    "conforming",
    "success",
)


def donor_parameters(
    cfg: FacilityConfig, population: KineticParameters, arrivals: Arrivals, seed: int
) -> dict[str, np.ndarray]:
    """Each batch's kinetic parameters (natural units), one array per parameter name.

    With ``cfg.donor_variability`` false every batch of a group gets the group's population
    values exactly; otherwise autologous batches draw their own donor and bank batches share
    their bank donor's draw.
    """
    n = len(arrivals.arrival_h)
    out = {name: np.zeros(n) for name in PARAMETER_NAMES}
    key = jax.random.PRNGKey(seed)
    for g, group in enumerate(cfg.donors.values()):
        members = np.flatnonzero(arrivals.group == g)
        base = population.replace(
            **{p: getattr(population, p) * factor for p, factor in group.parameter_factors.items()}
        )
        key, sub = jax.random.split(key)
        if not cfg.donor_variability or group.donor_sd_scale == 0 or not cfg.donor_sd:
            for p in PARAMETER_NAMES:
                out[p][members] = float(getattr(base, p))
            continue
        sd = {p: s * group.donor_sd_scale for p, s in cfg.donor_sd.items()}
        n_draws = group.bank_size if group.bank_size > 0 else max(len(members), 1)
        draws = sample_donor_parameters(sub, base, sd, n_draws)
        index = arrivals.donor[members] if group.bank_size > 0 else np.arange(len(members))
        for p in PARAMETER_NAMES:
            out[p][members] = np.asarray(getattr(draws, p))[index]
    return out


def batch_schedules(
    plans: list[RecipePlan], recipe: np.ndarray, lateness_h: list[np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(realized, planned)`` schedule arrays, shape ``(batches, events)``."""
    # No batch harvested within a short horizon: empty (0, events) arrays, not an error.
    planned = {
        f: np.stack([plans[r].schedule[f] for r in recipe])
        if len(recipe)
        else np.zeros((0, len(plans[0].schedule[f])), np.asarray(plans[0].schedule[f]).dtype)
        for f in ("time_h", "operation", *EVENT_FIELDS)
    }
    realized = dict(planned)
    time_h = planned["time_h"].copy()
    for i, late in enumerate(lateness_h):
        k = len(late)
        time_h[i, :k] += late
        time_h[i, k:] = time_h[i, k - 1]  # padding stays at the (realized) harvest
    # Operations of one batch run one after another, so realized times never go back.
    realized["time_h"] = np.maximum.accumulate(time_h, axis=1)
    return realized, planned


def _fingerprint(params, schedules, downstream, structure, solver, size) -> str:
    """A hash of everything the biology's outcomes depend on: a checkpoint is reused only for
    exactly the same solves."""
    digest = hashlib.sha256()
    for name, array in sorted(params.items()) + sorted(schedules.items()):
        array = np.ascontiguousarray(array)
        digest.update(f"{name}{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    digest.update(repr((downstream, structure, solver, size)).encode())
    return digest.hexdigest()[:24]


def simulate_outcomes(
    params: dict[str, np.ndarray],
    schedules: dict[str, np.ndarray],
    downstream: Downstream,
    *,
    structure: ModelStructure,
    solver: SolverSettings,
    chunk: int,
    progress=None,
    checkpoint_dir: Path | None = None,
) -> dict[str, np.ndarray]:
    """Solve every row and return :data:`OUTCOMES` (harvest observables and product).

    With ``checkpoint_dir`` each chunk's outcomes are kept there (``biology_<hash>_<row>.npz``,
    written atomically) and read back, bit for bit, instead of solved again.
    """
    n = len(schedules["time_h"])
    results = {name: np.zeros(n) for name in OUTCOMES}
    if n == 0:
        return results
    size = chunk  # one shape for every run: one compile per process
    key = None
    if checkpoint_dir is not None:
        key = _fingerprint(params, schedules, downstream, structure, solver, size)
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    save = jnp.zeros((size, 1))
    for start in range(0, n, size):
        take = slice(start, min(start + size, n))
        m = take.stop - take.start
        path = None if key is None else Path(checkpoint_dir) / f"biology_{key}_{start}.npz"
        if path is not None and path.is_file():
            with np.load(path) as stored:
                for name in OUTCOMES:
                    results[name][take] = stored[name]
        else:
            chunk_outcomes = _solve_chunk(
                params, schedules, start, size, n, downstream, structure, solver, save
            )
            for name in OUTCOMES:
                results[name][take] = chunk_outcomes[name][:m]
            if path is not None:
                with atomic_path(path) as tmp, open(tmp, "wb") as stream:
                    np.savez(stream, **{name: results[name][take] for name in OUTCOMES})
        if progress is not None:
            progress.update(m)
    return results


def _solve_chunk(params, schedules, start, size, n, downstream, structure, solver, save):
    rows = np.arange(start, start + size)
    rows = np.minimum(rows, n - 1)  # the last chunk repeats its final row: same shape
    p = KineticParameters(**{k: jnp.asarray(v[rows]) for k, v in params.items()})
    s = Schedule(**{k: jnp.asarray(v[rows]) for k, v in schedules.items()})
    trajectory = simulate_batch(p, s, save, structure, solver)
    harvest = observables(trajectory.end_state)
    made = product(harvest, downstream)
    out = {}
    for name in OUTCOMES:
        if name == "success":
            value = trajectory.success
        elif name in made:
            value = made[name]
        else:
            value = harvest[name]
        out[name] = np.asarray(value)
    return out
