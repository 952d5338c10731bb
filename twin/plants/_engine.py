"""Run a plant through a batch record: piecewise LSODA (``odeint``) between events, jumps at events.

The unit operations (RUN_DATA.md) act on any plant alike, as mass balances: ``seed`` fills the
cartridge, ``exchange`` replaces a fraction of the medium (cells retained, some dead cells washed
out per plant), ``feed`` adds a bolus, ``sample`` withdraws culture, ``transduce`` adds
``moi x viable cells`` transducing units, ``activate`` starts the plant's activation.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np
from scipy.integrate import ODEintWarning, odeint

from ..process import Event
from ._base import Context, Plant

RTOL = 1e-6
ATOL = 1e-9


@dataclasses.dataclass
class PlantRun:
    """A simulated batch: noise-free observables at each ``sample`` event (before it draws
    culture) and at harvest; ``success`` False with ``message`` when a solve failed."""

    sample_times_h: list[float]
    samples: list[dict[str, float]]
    harvest_time_h: float | None
    harvest: dict[str, float] | None
    success: bool = True
    message: str = ""


def _medium(event: Event, seed: Event, field: str) -> float:
    value = event.value(field)
    if value is None or not np.isfinite(value):
        value = seed.value(field)
    return 0.0 if value is None or not np.isfinite(value) else float(value)


def simulate_events(
    plant: Plant,
    events: Sequence[Event],
    p: dict,
    *,
    until_h: float | None = None,
    states_at: Sequence[float] = (),
) -> PlantRun:
    """Simulate one batch record (events in time order, first ``seed`` at time 0).

    ``until_h``: stop there (a forecast's cut-off; events after it are ignored).
    ``states_at``: extra times whose observables are returned among the samples.
    """
    if not events or events[0].operation != "seed":
        raise ValueError("a batch record must start with a seed event")
    seed = events[0]
    viability = float(seed.viability)
    viable = float(seed.cells) / 1e6
    y = np.zeros(plant.n_states)
    y[: plant.cell_states] = plant.seed(viable, viable * (1 - viability) / viability, p)
    y[plant.solute_index("glucose_mM")] = _medium(seed, seed, "glucose_mM")
    y[plant.solute_index("il2_IU_per_mL")] = _medium(seed, seed, "il2_IU_per_mL")
    ctx = Context(volume_ml=float(seed.volume_ml))
    t = 0.0
    extra = sorted(float(s) for s in states_at)
    times, samples = [], []
    harvest_time, harvest = None, None

    fired: set[float] = set()  # breakpoints already passed (each jumps once)

    def advance(t_end: float) -> str | None:
        nonlocal y, t
        pending = sorted(b for b in plant.breakpoints(ctx, p) if b not in fired and b <= t_end)
        for stop in [*pending, t_end]:
            if stop - t > 1e-9 * (1.0 + abs(t)):  # LSODA refuses a span of rounding size
                # LSODA through odeint: the Fortran loop calls the vector field directly
                # (less Python overhead per step than solve_ivp's stepper).
                with warnings.catch_warnings():  # a failure is read from info, not warned
                    warnings.simplefilter("ignore", ODEintWarning)
                    path, info = odeint(
                        plant.rhs,
                        y,
                        [t, stop],
                        args=(ctx, p),
                        tfirst=True,
                        rtol=RTOL,
                        atol=ATOL,
                        mxstep=50_000,
                        full_output=True,
                    )
                if info["message"] != "Integration successful." or not np.all(
                    np.isfinite(path[-1])
                ):
                    return f"LSODA failed between {t:g} h and {stop:g} h: {info['message']}"
                y = path[-1].copy()
            t = max(t, stop)
            if stop in pending and stop not in fired:
                fired.add(stop)
                y = plant.at_breakpoint(t, y, ctx, p)
        return None

    def failed(message: str) -> PlantRun:
        return PlantRun(times, samples, harvest_time, None, success=False, message=message)

    for event in [*events[1:], None]:
        t_next = until_h if event is None else float(event.time_h)
        if until_h is not None:
            t_next = min(t_next, until_h)
        while extra and extra[0] <= t_next:
            if (msg := advance(extra[0])) is not None:
                return failed(msg)
            times.append(extra.pop(0))
            samples.append(plant.observe(y))
        if event is None or (until_h is not None and float(event.time_h) > until_h):
            break
        if (msg := advance(t_next)) is not None:
            return failed(msg)
        op = event.operation
        if op == "sample":
            times.append(t)
            samples.append(plant.observe(y))
            keep = 1.0 - float(event.volume_ml) / ctx.volume_ml
            y[: plant.cell_states] *= keep
            ctx.volume_ml -= float(event.volume_ml)
        elif op == "activate":
            ctx.activation_time_h = t
            y = plant.activate(y, p)
        elif op == "transduce":
            tu = float(event.moi) * plant.viable_M(y)
            y[plant.solute_index("vector_MTU_per_mL")] += tu / ctx.volume_ml
        elif op == "exchange":
            f = float(event.fraction)
            y = _replace_medium(plant, y, f, event, seed)
            y[plant.dead_index] *= 1.0 - plant.dead_removed_per_exchange * f
        elif op == "feed":
            added = float(event.volume_ml)
            f = added / (ctx.volume_ml + added)
            y = _replace_medium(plant, y, f, event, seed)  # a bolus dilutes like a mixing
            ctx.volume_ml += added
        elif op == "harvest":
            harvest_time, harvest = t, plant.observe(y)
            break
        elif op != "seed":
            raise ValueError(f"unknown operation {op!r} at {event.time_h} h")
        else:
            raise ValueError(f"a second seed event at {event.time_h} h")
    return PlantRun(times, samples, harvest_time, harvest)


def _replace_medium(plant: Plant, y: np.ndarray, f: float, event: Event, seed: Event):
    """Solute concentrations after a share ``f`` of the medium is fresh medium."""
    y = y.copy()
    fresh = {
        "glucose_mM": _medium(event, seed, "glucose_mM"),
        "il2_IU_per_mL": _medium(event, seed, "il2_IU_per_mL"),
    }
    for name in plant.solutes:
        i = plant.solute_index(name)
        y[i] = (1 - f) * y[i] + f * fresh.get(name, 0.0)
    return y
