"""The piecewise solver: one pure ``simulate(params, schedule, save_times_h)`` for everything.

All unit-operation times are known from the schedule, so no root finding is needed: the solve is
a ``lax.scan`` over the schedule's event slots. Slot ``i`` applies event ``i``'s jump map, then
integrates the culture from ``t_i`` to ``t_{i+1}`` with one ``diffeqsolve``. No-op padding slots
are zero-length segments, so schedules of any recipe share one shape and ``vmap`` together, and
the whole solve is differentiable in kinetic parameters, event values and event times.

Output convention (RUN_DATA.md): the state saved at time ``t`` is the culture *just before* any
event at ``t`` (so a measurement at harvest describes the culture before harvest), except at
``t = 0``, which shows the freshly seeded culture. Save times after the schedule's end are NaN.
"""

from __future__ import annotations

import dataclasses

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from .kinetics import (
    CultureState,
    KineticParameters,
    ModelStructure,
    culture_vector_field,
    empty_state as _empty_state,
)
from .process._operations import JUMP_MAPS, EventValues
from .process._schedule import EVENT_FIELDS, Schedule


@dataclasses.dataclass(frozen=True)
class SolverSettings:
    """Numerical settings of the ODE solve (hashable: static under ``jit``).

    **Arguments:**

    - ``rtol``, ``atol``: step-size controller tolerances (state units: millions of cells, mM,
      IU/mL, mL, millions of TU).
    - ``max_steps``: step budget per segment; exceeding it marks the solve as failed.
    - ``solver``: ``"tsit5"`` (explicit, default) or ``"kvaerno5"`` (implicit, for stiff
      parameter regions).
    - ``adjoint``: ``"recursive"`` (reverse mode, for ``grad``) or ``"forward"`` (for
      ``jacfwd``, usually faster for tens of parameters).
    """

    rtol: float = 1e-6
    atol: float = 1e-8
    max_steps: int = 4096
    solver: str = "tsit5"
    adjoint: str = "recursive"

    def __post_init__(self):
        if not (0 < self.rtol < 1 and self.atol > 0):
            raise ValueError(
                f"solver tolerances must be positive, got rtol={self.rtol}, atol={self.atol}"
            )
        if self.solver not in ("tsit5", "kvaerno5"):
            raise ValueError(f"solver must be 'tsit5' or 'kvaerno5', got {self.solver!r}")
        if self.adjoint not in ("recursive", "forward"):
            raise ValueError(f"adjoint must be 'recursive' or 'forward', got {self.adjoint!r}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")

    def make_solver(self) -> diffrax.AbstractSolver:
        return diffrax.Tsit5() if self.solver == "tsit5" else diffrax.Kvaerno5()

    def make_adjoint(self) -> diffrax.AbstractAdjoint:
        if self.adjoint == "forward":
            return diffrax.ForwardMode()
        return diffrax.RecursiveCheckpointAdjoint()


class Trajectory(eqx.Module):
    """A simulated batch.

    **Fields:**

    - ``time_h``: the save times (hours since seed).
    - ``states``: the culture state at each save time (leaves gain a leading ``times`` axis).
    - ``end_state``: the state at the schedule's end (just before harvest).
    - ``success``: ``False`` if any segment's solve failed (step budget, non-finite state).
    """

    time_h: Float[Array, " times"]
    states: CultureState
    end_state: CultureState
    success: Bool[Array, ""]


def _event_slots(schedule: Schedule) -> tuple[Float[Array, " events"], EventValues]:
    next_time_h = jnp.concatenate([schedule.time_h[1:], schedule.time_h[-1:]])
    values = EventValues(time_h=schedule.time_h, **{f: getattr(schedule, f) for f in EVENT_FIELDS})
    return next_time_h, values


def simulate(
    params: KineticParameters,
    schedule: Schedule,
    save_times_h: Float[Array, " times"],
    structure: ModelStructure = ModelStructure(),
    solver: SolverSettings = SolverSettings(),
) -> Trajectory:
    """Simulate one cartridge from seed to the schedule's end.

    **Arguments:**

    - ``params``: kinetic parameters (natural units).
    - ``schedule``: one unbatched, padded event schedule; its first event must be the seed.
    - ``save_times_h``: increasing times (h since seed) at which to record the state.
    - ``structure``, ``solver``: static model structure and numerical settings.

    **Returns:** a :class:`Trajectory`. Batch with ``jax.vmap`` over ``params`` and/or
    ``schedule`` (padded to a common length with ``stack_schedules``).
    """
    # One positional call signature, so that defaulted and explicit calls share a compile.
    return _simulate(params, schedule, jnp.asarray(save_times_h, float), structure, solver)


@eqx.filter_jit
def _simulate(params, schedule, save_times_h, structure, solver) -> Trajectory:
    next_time_h, events = _event_slots(schedule)
    term = diffrax.ODETerm(culture_vector_field)
    ode_solver = solver.make_solver()
    controller = diffrax.PIDController(rtol=solver.rtol, atol=solver.atol)
    adjoint = solver.make_adjoint()

    state0 = _empty_state(structure)
    buffer0 = jax.tree.map(
        lambda x: jnp.full(save_times_h.shape + x.shape, jnp.nan, x.dtype), state0
    )

    def slot(carry, inputs):
        state, buffer, success = carry
        index, operation, t1, event = inputs
        state = jax.lax.switch(operation, JUMP_MAPS, state, event, params)
        t0 = event.time_h
        solution = diffrax.diffeqsolve(
            term,
            ode_solver,
            t0,
            t1,
            None,
            state,
            args=params,
            saveat=diffrax.SaveAt(ts=jnp.clip(save_times_h, t0, t1), t1=True),
            stepsize_controller=controller,
            adjoint=adjoint,
            max_steps=solver.max_steps,
            throw=False,
        )
        saved = jax.tree.map(lambda y: y[:-1], solution.ys)
        state = jax.tree.map(lambda y: y[-1], solution.ys)
        in_segment = ((t0 < save_times_h) & (save_times_h <= t1)) | (
            (index == 0) & (save_times_h == t0)
        )

        def write(new, old):
            mask = in_segment.reshape(in_segment.shape + (1,) * (new.ndim - 1))
            return jnp.where(mask, new, old)

        buffer = jax.tree.map(write, saved, buffer)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(state)]))
        success = success & (solution.result == diffrax.RESULTS.successful) & finite
        return (state, buffer, success), None

    indices = jnp.arange(schedule.n_events)
    (end_state, buffer, success), _ = jax.lax.scan(
        slot,
        (state0, buffer0, jnp.array(True)),
        (indices, schedule.operation, next_time_h, events),
    )
    return Trajectory(time_h=save_times_h, states=buffer, end_state=end_state, success=success)


def simulate_batch(
    params: KineticParameters,
    schedules: Schedule,
    save_times_h: Float[Array, "batch times"],
    structure: ModelStructure = ModelStructure(),
    solver: SolverSettings = SolverSettings(),
) -> Trajectory:
    """:func:`simulate` over a batch: every argument's leaves carry the same leading axis."""
    return _simulate_batch(params, schedules, jnp.asarray(save_times_h, float), structure, solver)


@eqx.filter_jit
def _simulate_batch(params, schedules, save_times_h, structure, solver) -> Trajectory:
    return jax.vmap(lambda p, s, t: _simulate(p, s, t, structure, solver))(
        params, schedules, save_times_h
    )
