"""Virtual batches: donors from a population, recipes from a design, noisy assays.

The generator is the twin run forwards with known truth: each donor's kinetic parameters are
drawn around the population values (log-normal for positive parameters, logit-normal for
fractions, i.e. Gaussian on the estimation scale of :data:`~twin.kinetics.PARAMETER_TABLE`),
each run's recipe comes from a design over recipe fields, and assays are sampled with the
noise model of :mod:`twin.assays` at the recipe's sample times.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._errors import TwinInputError
from .assays import MEASURED_VARIABLES, AssayNoise, sample_assay
from .data import RunData
from .kinetics import (
    PARAMETER_NAMES,
    KineticParameters,
    ModelStructure,
    from_unconstrained,
    to_unconstrained,
)
from .observe import observables
from .process import EVENT_FIELDS, Recipe, stack_schedules
from .simulate import SolverSettings, simulate_batch

# Recipe fields a design may vary (scalars), plus the pseudo-field `exchange_fraction` (all
# exchanges of the run).
DESIGN_FIELDS: tuple[str, ...] = (
    "seed_cells",
    "seed_viability",
    "seed_volume_ml",
    "medium_glucose_mM",
    "medium_il2_IU_per_mL",
    "activation_time_h",
    "transduction_time_h",
    "moi",
    "harvest_time_h",
    "exchange_fraction",
)


def sample_donor_parameters(
    key: jax.Array,
    population: KineticParameters,
    donor_sd: Mapping[str, float],
    n_donors: int,
) -> KineticParameters:
    """``n_donors`` parameter sets (leading axis) around ``population``.

    ``donor_sd`` gives, per parameter name, the SD of the donor effect on the estimation
    scale (log or logit); parameters not named are shared by all donors.
    """
    unknown = sorted(set(donor_sd) - set(PARAMETER_NAMES))
    if unknown:
        raise TwinInputError(f"population.donor_sd: unknown parameter(s) {unknown}")
    for name, sd in donor_sd.items():
        if not sd >= 0:
            raise TwinInputError(f"population.donor_sd.{name}={sd!r}: must be >= 0")
    centre = to_unconstrained(population)
    keys = dict(zip(PARAMETER_NAMES, jax.random.split(key, len(PARAMETER_NAMES)), strict=True))
    draws = from_unconstrained(
        KineticParameters(
            **{
                name: getattr(centre, name)
                + donor_sd.get(name, 0.0) * jax.random.normal(keys[name], (n_donors,))
                for name in PARAMETER_NAMES
            }
        )
    )
    # Shared parameters keep their exact value (no round trip through the transform).
    return KineticParameters(
        **{
            name: getattr(draws, name)
            if donor_sd.get(name, 0.0) > 0
            else jnp.broadcast_to(getattr(population, name), (n_donors,))
            for name in PARAMETER_NAMES
        }
    )


def design_recipes(
    base: Recipe,
    n_runs: int,
    rng: np.random.Generator,
    *,
    grid: Mapping[str, Sequence[float]] | None = None,
    uniform: Mapping[str, Sequence[float]] | None = None,
) -> list[Recipe]:
    """``n_runs`` recipes varying ``base``.

    ``grid``: field -> values; runs cycle through the Cartesian product in order.
    ``uniform``: field -> ``[low, high]``; each run draws uniformly. Exchanges and samples that a
    run's (drawn) harvest time makes late are not performed; a sample is always taken at harvest.
    """
    grid = dict(grid or {})
    uniform = dict(uniform or {})
    for source, fields in (("design.grid", grid), ("design.uniform", uniform)):
        for name, values in fields.items():
            if name not in DESIGN_FIELDS:
                raise TwinInputError(
                    f"{source}.{name}: not a design field (choose from {list(DESIGN_FIELDS)})"
                )
            if source == "design.uniform" and (len(values) != 2 or values[0] > values[1]):
                raise TwinInputError(f"{source}.{name}={list(values)!r}: expected [low, high]")
    overlap = sorted(set(grid) & set(uniform))
    if overlap:
        raise TwinInputError(f"design fields {overlap} are in both design.grid and design.uniform")
    combos = list(itertools.product(*grid.values())) if grid else [()]
    recipes = []
    for i in range(n_runs):
        values = dict(zip(grid, combos[i % len(combos)], strict=True))
        values.update({k: float(rng.uniform(lo, hi)) for k, (lo, hi) in uniform.items()})
        recipes.append(_apply_design(base, values))
    return recipes


def _apply_design(base: Recipe, values: Mapping[str, float]) -> Recipe:
    values = dict(values)
    fraction = values.pop("exchange_fraction", None)
    recipe = dataclasses.replace(base, **{k: float(v) for k, v in values.items()})
    harvest = recipe.harvest_time_h
    exchanges = [
        dataclasses.replace(step, fraction=step.fraction if fraction is None else float(fraction))
        for step in recipe.exchanges
        if step.time_h < harvest
    ]
    samples = sorted({t for t in recipe.sample_times_h if t < harvest} | {harvest})
    feeds = [step for step in recipe.feeds if step.time_h < harvest]
    return dataclasses.replace(recipe, exchanges=exchanges, sample_times_h=samples, feeds=feeds)


@dataclasses.dataclass(frozen=True)
class AssayPlan:
    """Which variables are measured at each sample: transduction read-outs (%CAR+, VCN) only
    from ``transduction_readout_delay_h`` after transduction (integration takes days)."""

    variables: tuple[str, ...] = MEASURED_VARIABLES
    transduction_readout_delay_h: float = 48.0

    def __post_init__(self):
        unknown = sorted(set(self.variables) - set(MEASURED_VARIABLES))
        if unknown:
            raise TwinInputError(
                f"assays.variables: unknown variable(s) {unknown} "
                f"(choose from {list(MEASURED_VARIABLES)})"
            )

    def measured(self, variable: str, time_h: float, recipe: Recipe) -> bool:
        if variable not in self.variables:
            return False
        if variable in ("car_pos_fraction", "vcn_per_cell"):
            return time_h >= recipe.transduction_time_h + self.transduction_readout_delay_h
        return True


def simulate_assays(
    key: jax.Array,
    params: KineticParameters,
    recipes: Sequence[Recipe],
    noise: AssayNoise,
    plan: AssayPlan,
    *,
    structure: ModelStructure = ModelStructure(),
    solver: SolverSettings = SolverSettings(),
    capacity_ml: float | None = None,
) -> tuple[list[tuple[int, float, str, float]], np.ndarray]:
    """Simulate every run (``params`` batched like ``recipes``) and sample its assays.

    **Returns:** ``(rows, success)``: measurement rows ``(run index, time_h, variable, value)``
    at each recipe's sample times, and per-run solver success flags.
    """
    schedules = [r.schedule(capacity_ml=capacity_ml) for r in recipes]
    batch = stack_schedules(schedules)
    n_times = max(len(r.sample_times_h) for r in recipes)
    save = np.array(
        [_pad(sorted(r.sample_times_h), n_times, r.harvest_time_h) for r in recipes], float
    )
    trajectories = simulate_batch(params, batch, jnp.asarray(save), structure, solver)
    obs = observables(trajectories.states)
    keys = jax.random.split(key, len(MEASURED_VARIABLES))
    noisy = {
        variable: np.asarray(sample_assay(k, variable, obs[variable], noise.sd(variable)))
        for k, variable in zip(keys, MEASURED_VARIABLES, strict=True)
    }
    rows = []
    for i, recipe in enumerate(recipes):
        for j, time_h in enumerate(sorted(recipe.sample_times_h)):
            for variable in MEASURED_VARIABLES:
                if plan.measured(variable, time_h, recipe):
                    rows.append((i, float(time_h), variable, float(noisy[variable][i, j])))
    return rows, np.asarray(trajectories.success)


def _pad(times: list[float], n: int, fill: float) -> list[float]:
    return times + [fill] * (n - len(times))


@dataclasses.dataclass(frozen=True)
class VirtualDataset:
    """Generated batches: the run data and each run's true kinetic parameters."""

    run_data: RunData
    true_parameters: pd.DataFrame  # run_id, donor_id, one column per kinetic parameter
    recipes: list[Recipe]


def generate_dataset(
    seed: int,
    population: KineticParameters,
    donor_sd: Mapping[str, float],
    base_recipe: Recipe,
    *,
    n_donors: int,
    runs_per_donor: int,
    grid: Mapping[str, Sequence[float]] | None = None,
    uniform: Mapping[str, Sequence[float]] | None = None,
    noise: AssayNoise = AssayNoise(),
    plan: AssayPlan = AssayPlan(),
    structure: ModelStructure = ModelStructure(),
    solver: SolverSettings = SolverSettings(),
    capacity_ml: float | None = None,
    run_id_format: str = "R{run:03d}",
    donor_id_format: str = "D{donor:02d}",
) -> VirtualDataset:
    """Donors x runs of virtual batches in the run-data format (seeded, reproducible).

    Runs ``r * runs_per_donor ... (r + 1) * runs_per_donor - 1`` share donor ``r`` (split-donor
    runs with different recipes).

    **Raises:** :class:`TwinInputError` for a bad design or a run whose solve fails.
    """
    if n_donors < 1 or runs_per_donor < 1:
        raise TwinInputError(
            f"n_donors={n_donors}, runs_per_donor={runs_per_donor}: both must be >= 1"
        )
    key_donors, key_assays = jax.random.split(jax.random.PRNGKey(seed))
    rng = np.random.default_rng(seed)
    donors = sample_donor_parameters(key_donors, population, donor_sd, n_donors)
    n_runs = n_donors * runs_per_donor
    recipes = design_recipes(base_recipe, n_runs, rng, grid=grid, uniform=uniform)
    donor_of_run = np.repeat(np.arange(n_donors), runs_per_donor)
    run_params = jax.tree.map(lambda x: x[donor_of_run], donors)
    rows, success = simulate_assays(
        key_assays,
        run_params,
        recipes,
        noise,
        plan,
        structure=structure,
        solver=solver,
        capacity_ml=capacity_ml,
    )
    run_ids = [run_id_format.format(run=i + 1) for i in range(n_runs)]
    donor_ids = [donor_id_format.format(donor=int(d) + 1) for d in donor_of_run]
    failed = [run_ids[i] for i in np.flatnonzero(~success)]
    if failed:
        raise TwinInputError(f"the simulation failed for generated runs {failed}")
    runs = pd.DataFrame({"run_id": run_ids, "donor_id": donor_ids})
    event_rows = []
    for run_id, recipe in zip(run_ids, recipes, strict=True):
        for event in recipe.events(capacity_ml=capacity_ml):
            values = {f: np.nan if event.value(f) is None else event.value(f) for f in EVENT_FIELDS}
            event_rows.append(
                {"run_id": run_id, "time_h": event.time_h, "operation": event.operation, **values}
            )
    measurements = pd.DataFrame(
        [(run_ids[i], t, variable, value) for i, t, variable, value in rows],
        columns=["run_id", "time_h", "variable", "value"],
    )
    truth = pd.DataFrame({"run_id": run_ids, "donor_id": donor_ids})
    for name in PARAMETER_NAMES:
        truth[name] = np.asarray(getattr(run_params, name))
    run_data = RunData(runs=runs, events=pd.DataFrame(event_rows), measurements=measurements)
    return VirtualDataset(run_data=run_data, true_parameters=truth, recipes=recipes)
