"""The discrete-event model of the factory, on SimPy.

Resources: per Shuttle, each module unit is a ``simpy.PriorityResource`` of capacity 1 and the
robot a ``simpy.Resource``; bays are tokens in one factory-wide ``simpy.Store`` (a patient batch
takes the first free bay of any Shuttle); the QC workcell's stations are units like a module's.
Processes: one per batch (arrival, bay, the recipe's operations at their planned times, fill-
finish, QC release), one per module unit for breakdowns. A batch sends each operation to the
unit of its module with the fewest cartridges holding or waiting for it. A breakdown takes its
unit at the highest priority once the current operation ends (non-preemptive: the fault is
found between operations) and holds it for the repair time.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import simpy

from ._config import FacilityConfig
from ._plan import RecipePlan

# Lateness below this (h, ~4 ms) is floating-point noise from adding waits, not a delay.
_LATENESS_EPS_H = 1e-6
_BREAKDOWN_PRIORITY = 0
_BATCH_PRIORITY = 1


@dataclasses.dataclass
class Arrivals:
    """The demand: one entry per batch, in arrival order."""

    arrival_h: np.ndarray
    recipe: np.ndarray  # index into the plans
    group: np.ndarray  # index into cfg.donors
    donor: np.ndarray  # donor index within its group (bank) or -1 (own donor)
    donor_id: list[str]


def sample_arrivals(cfg: FacilityConfig, rng: np.random.Generator) -> Arrivals:
    """Poisson arrivals (rate linear in time from ``arrivals_per_week`` to
    ``arrivals_per_week_end``, by thinning) with their donor group, donor and recipe."""
    horizon_h = 24.0 * cfg.horizon_days
    start = cfg.arrivals_per_week / 168.0
    end = start if cfg.arrivals_per_week_end is None else cfg.arrivals_per_week_end / 168.0
    peak = max(start, end)
    if peak == 0:
        times = np.zeros(0)
    else:
        n = rng.poisson(peak * horizon_h)
        times = np.sort(rng.uniform(0.0, horizon_h, n))
        rate = start + (end - start) * times / horizon_h
        times = times[rng.uniform(0.0, 1.0, n) * peak < rate]
    groups = list(cfg.donors.values())
    frac = times / horizon_h
    w0 = np.array([g.weight for g in groups])
    w1 = np.array([g.weight if g.weight_end is None else g.weight_end for g in groups])
    weights = w0[None, :] + (w1 - w0)[None, :] * frac[:, None]
    cum = np.cumsum(weights, axis=1)
    u = rng.uniform(0.0, 1.0, len(times)) * cum[:, -1]
    group = np.minimum((cum < u[:, None]).sum(axis=1), len(groups) - 1)
    names = list(cfg.recipes)
    recipe_w = np.array([r.weight for r in cfg.recipes.values()])
    drawn = rng.choice(len(names), size=len(times), p=recipe_w / recipe_w.sum())
    fixed = np.array([-1 if g.recipe is None else names.index(g.recipe) for g in groups])
    recipe = np.where(fixed[group] >= 0, fixed[group], drawn)
    bank = np.array([g.bank_size for g in groups])
    donor = np.where(
        bank[group] > 0, np.floor(rng.uniform(0, 1, len(times)) * bank[group]).astype(int), -1
    )
    group_names = list(cfg.donors)
    donor_id = [
        f"P{i:06d}" if d < 0 else f"{group_names[g]}-D{d:03d}"
        for i, (g, d) in enumerate(zip(group, donor, strict=True))
    ]
    return Arrivals(times, recipe.astype(int), group.astype(int), donor.astype(int), donor_id)


@dataclasses.dataclass
class DesResult:
    """Per-batch times (h since the start; NaN if not reached within the horizon), per-
    operation lateness (h) and the module log (one tuple per unit occupation)."""

    shuttle: np.ndarray
    bay: np.ndarray
    bay_start_h: np.ndarray
    seed_h: np.ndarray
    planned_harvest_h: np.ndarray
    harvest_h: np.ndarray
    fill_finish_end_h: np.ndarray
    bay_end_h: np.ndarray
    release_h: np.ndarray
    lateness_h: list[np.ndarray | None]
    module_log: list[tuple[str, int, int, str, float, float]]
    horizon_h: float


class _Units:
    """The units of one module (or the QC stations): capacity-1 priority resources."""

    __slots__ = ("name", "units", "offset")

    def __init__(
        self, env: simpy.Environment, name: str, count: int, offset: int = 0, breaks=False
    ):
        self.name = name
        # Priorities only where breakdowns need them: a PriorityResource re-sorts its queue on
        # every request, which dominated the run time of long queues.
        kind = simpy.PriorityResource if breaks else simpy.Resource
        self.units = [kind(env, capacity=1) for _ in range(count)]
        self.offset = offset  # unit numbers are factory-wide: shuttle * capacity + index

    def pick(self) -> int:
        loads = [len(u.users) + len(u.queue) for u in self.units]
        return loads.index(min(loads))


def _request(unit):
    if isinstance(unit, simpy.PriorityResource):
        return unit.request(priority=_BATCH_PRIORITY)
    return unit.request()


def run_des(
    cfg: FacilityConfig,
    plans: list[RecipePlan],
    arrivals: Arrivals,
    rng: np.random.Generator,
    *,
    progress=None,
) -> DesResult:
    """Run the factory over ``cfg.horizon_days``. ``progress``: an optional tqdm-like object
    updated with simulated hours."""
    env = simpy.Environment()
    horizon_h = 24.0 * cfg.horizon_days
    n = len(arrivals.arrival_h)
    nan = np.full(n, np.nan)
    out = DesResult(
        shuttle=np.full(n, -1),
        bay=np.full(n, -1),
        bay_start_h=nan.copy(),
        seed_h=nan.copy(),
        planned_harvest_h=nan.copy(),
        harvest_h=nan.copy(),
        fill_finish_end_h=nan.copy(),
        bay_end_h=nan.copy(),
        release_h=nan.copy(),
        lateness_h=[None] * n,
        module_log=[],
        horizon_h=horizon_h,
    )
    log = out.module_log
    move_h = cfg.robot_move_h
    shuttles = []
    for s in range(cfg.shuttles):
        modules = {
            name: _Units(env, name, spec.capacity, s * spec.capacity, spec.mtbf_h is not None)
            for name, spec in cfg.modules.items()
        }
        robots = _Units(env, "robot", cfg.robots_per_shuttle, s * cfg.robots_per_shuttle)
        shuttles.append((modules, robots))
    qc = _Units(env, "qc", cfg.qc.capacity)
    bays = simpy.Store(env)
    bays.items.extend((s, b) for s in range(cfg.shuttles) for b in range(cfg.bays_per_shuttle))
    release_delay_h = cfg.qc.release_turnaround_h
    in_process_h = cfg.qc.in_process_assay_h

    def occupy(units: _Units, batch: int, operation: str, duration_h: float):
        index = units.pick()
        unit = units.units[index]
        with _request(unit) as request:
            yield request
            start = env.now
            yield env.timeout(duration_h)
            log.append((units.name, units.offset + index, batch, operation, start, env.now))

    def operate(modules, robots, batch: int, operation: str, module: str, duration_h: float):
        """Module unit, then a robot move into it, then the work. Returns the work's start."""
        units = modules[module]
        index = units.pick()
        unit = units.units[index]
        with _request(unit) as request:
            yield request
            start = env.now
            if move_h > 0:
                yield from occupy(robots, batch, "move", move_h)
            work_start = env.now
            yield env.timeout(duration_h)
            log.append((module, units.offset + index, batch, operation, start, env.now))
        return work_start

    def in_process_assay(batch: int):
        yield from occupy(qc, batch, "in_process_assay", in_process_h)

    def return_bay(token, batch: int):
        yield env.timeout(cfg.bay_turnaround_h)
        out.bay_end_h[batch] = env.now
        yield bays.put(token)

    def batch_process(batch: int):
        yield env.timeout(arrivals.arrival_h[batch])
        token = yield bays.get()
        shuttle, bay = token
        out.shuttle[batch], out.bay[batch] = shuttle, bay
        out.bay_start_h[batch] = env.now
        modules, robots = shuttles[shuttle]
        plan = plans[arrivals.recipe[batch]]
        ops, mods = plan.operations, plan.modules
        offsets, durations = plan.offset_h, plan.duration_h
        lateness = np.zeros(len(ops))
        # A view, filled as the operations happen: a batch harvested just before the horizon
        # has all its recipe events even if its fill-finish is still to come.
        out.lateness_h[batch] = lateness[: len(plan.events)]
        yield from operate(modules, robots, batch, ops[0], mods[0], durations[0])
        seed_h = env.now
        out.seed_h[batch] = seed_h
        last = len(ops) - 1
        for k in range(1, len(ops)):
            planned = seed_h + offsets[k]
            if env.now < planned:
                yield env.timeout(planned - env.now)
            if ops[k] == "harvest":
                out.planned_harvest_h[batch] = planned + move_h
            work_start = yield from operate(modules, robots, batch, ops[k], mods[k], durations[k])
            late = work_start - (planned + move_h)
            lateness[k] = late if late > _LATENESS_EPS_H else 0.0
            if ops[k] == "harvest":
                out.harvest_h[batch] = work_start
            elif ops[k] == "sample" and in_process_h > 0:
                env.process(in_process_assay(batch))
            if k == last:
                out.fill_finish_end_h[batch] = env.now
        env.process(return_bay(token, batch))
        yield from occupy(qc, batch, "release_panel", cfg.qc.release_assay_h)
        out.release_h[batch] = env.now + release_delay_h

    def breakdowns(units: _Units, index: int, mtbf_h: float, mttr_h: float, stream):
        unit = units.units[index]
        while True:
            yield env.timeout(stream.exponential(mtbf_h))
            with unit.request(priority=_BREAKDOWN_PRIORITY) as request:
                yield request
                start = env.now
                yield env.timeout(stream.exponential(mttr_h))
                log.append((units.name, units.offset + index, -1, "repair", start, env.now))

    # Each unit draws its faults from its own stream, so that changing one setting (a duration,
    # the demand) leaves every unit's fault history alone: common random numbers.
    for s, (modules, _) in enumerate(shuttles):
        for m, (name, spec) in enumerate(cfg.modules.items()):
            if spec.mtbf_h is None:
                continue
            for index in range(spec.capacity):
                seq = np.random.SeedSequence(cfg.seed, spawn_key=(1, s, m, index))
                stream = np.random.default_rng(seq)
                env.process(breakdowns(modules[name], index, spec.mtbf_h, spec.mttr_h, stream))
    for batch in range(n):
        env.process(batch_process(batch))
    if progress is None:
        env.run(until=horizon_h)
    else:
        step_h = 24.0 * 7
        t = 0.0
        while t < horizon_h:
            t_next = min(t + step_h, horizon_h)
            env.run(until=t_next)
            progress.update(t_next - t)
            t = t_next
    return out
