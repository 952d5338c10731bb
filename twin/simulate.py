"""The piecewise solver: one pure ``simulate(params, schedule, save_times_h)`` for everything.

All unit-operation times are known from the schedule, so no root finding is needed: the solve is
a ``lax.scan`` over slots, the schedule's events and the save times merged in time order. Slot
``i`` applies its event's jump map (a save is a ``noop`` that records the state on entry), then
integrates the culture from ``t_i`` to ``t_{i+1}`` with one ``diffeqsolve`` that keeps only its
end state (by default with :class:`~twin._tsit5.StackedTsit5`, diffrax's Tsit5 method in a
layout that XLA runs about twice as fast here). No-op padding slots are zero-length segments,
so schedules of any recipe share one shape and ``vmap`` together, and the whole solve is
differentiable in kinetic parameters, event values and event times. Each segment starts from
the previous one's mean step size.

(Stopping at the save times rather than saving with ``SaveAt(ts=...)``, and carrying the step
size over, is for speed: measured once on 40 vmapped runs of the calibration benchmark, forward-
mode Jacobians (ten tangents) 19 % and residuals 18 % faster. Stopping alone made the residuals
slower, from restarting the step-size controller at every segment.)

Output convention (RUN_DATA.md): the state saved at time ``t`` is the culture *just before* any
event at ``t`` (so a measurement at harvest describes the culture before harvest), except at
``t = 0``, which shows the freshly seeded culture. Save times after the schedule's end are NaN.

``SolverSettings(loop="events")`` swaps the scan of ``diffeqsolve`` calls for one adaptive
loop per run that crosses its own events (:mod:`twin._event_loop`): same method, step
acceptance, outputs and failure semantics, without the per-segment lockstep of a ``vmap`` batch.

Failures are data (diffrax's style): each run carries a :class:`SolveResult` (``successful``,
``max_steps_reached``, ``nonfinite_state``, ...), the first failing segment's. A failed solve is
never continued from where it stopped: later segments are given zero length (so a failed run
costs a ``vmap`` batch no extra steps), and every state saved after the failure, and the end
state, is NaN.
"""

from __future__ import annotations

import dataclasses
import functools

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ._event_loop import all_finite, solve_slots
from ._tsit5 import StackedTsit5
from .kinetics import (
    CultureState,
    KineticParameters,
    ModelStructure,
    culture_vector_field,
    empty_state as _empty_state,
)
from .process._operations import JUMP_MAPS, EventValues
from .process._schedule import EVENT_FIELDS, OPERATION_CODE, Schedule

_SOLVERS = {
    "tsit5": StackedTsit5,
    "diffrax_tsit5": diffrax.Tsit5,
    "kvaerno5": diffrax.Kvaerno5,
}


@dataclasses.dataclass(frozen=True)
class SolverSettings:
    """Numerical settings of the ODE solve (hashable: static under ``jit``).

    **Arguments:**

    - ``rtol``, ``atol``: step-size controller tolerances (state units: millions of cells, mM,
      IU/mL, mL, millions of TU).
    - ``max_steps``: step budget per segment; exceeding it marks the solve as failed.
    - ``solver``: ``"tsit5"`` (explicit, default: :class:`~twin._tsit5.StackedTsit5`),
      ``"diffrax_tsit5"`` (diffrax's implementation of the same method: a slower cross-check)
      or ``"kvaerno5"`` (implicit, for stiff parameter regions).
    - ``adjoint``: ``"recursive"`` (reverse mode, for ``grad``) or ``"forward"`` (for
      ``jacfwd``, usually faster for tens of parameters).
    - ``loop``: ``"segments"`` (one ``diffeqsolve`` per slot between events and saves: under
      ``vmap`` a batch steps in lockstep, segment by segment, at its slowest run's pace) or
      ``"events"`` (:mod:`twin._event_loop`: one adaptive loop per run that crosses its own
      events, so a batch takes as many steps as its longest run). Same method and step
      acceptance; answers agree to the tolerances.
    """

    rtol: float = 1e-6
    atol: float = 1e-8
    max_steps: int = 4096
    solver: str = "tsit5"
    adjoint: str = "recursive"
    loop: str = "segments"

    def __post_init__(self):
        if not (0 < self.rtol < 1 and self.atol > 0):
            raise ValueError(
                f"solver tolerances must be positive, got rtol={self.rtol}, atol={self.atol}"
            )
        if self.solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {sorted(_SOLVERS)}, got {self.solver!r}")
        if self.adjoint not in ("recursive", "forward"):
            raise ValueError(f"adjoint must be 'recursive' or 'forward', got {self.adjoint!r}")
        if self.loop not in ("segments", "events"):
            raise ValueError(f"loop must be 'segments' or 'events', got {self.loop!r}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")

    def make_solver(self) -> diffrax.AbstractSolver:
        return _SOLVERS[self.solver]()

    def make_adjoint(self) -> diffrax.AbstractAdjoint:
        if self.adjoint == "forward":
            return diffrax.ForwardMode()
        return diffrax.RecursiveCheckpointAdjoint()


class SolveResult(diffrax.RESULTS):  # pyright: ignore[reportGeneralTypeIssues]
    """Why a solve failed (``successful`` if it did not): diffrax's results plus our own."""

    nonfinite_state = (
        "The culture state became non-finite (NaN or inf): parameters or event values outside "
        "the model's range, or an unstable step."
    )


def result_names(result: SolveResult) -> np.ndarray:
    """The name of each (batched) result, e.g. ``"max_steps_reached"``, as a string array."""
    names = np.full(np.shape(result == SolveResult.successful), "successful", dtype=object)
    for name in _RESULT_NAMES:
        names[np.asarray(result == getattr(SolveResult, name))] = name
    return names.astype(str)


_RESULT_NAMES = (
    "successful",
    "max_steps_reached",
    "dt_min_reached",
    "max_steps_rejected",
    "internal_error",
    "nonfinite_state",
)


class Trajectory(eqx.Module):
    """A simulated batch.

    **Fields:**

    - ``time_h``: the save times (hours since seed).
    - ``states``: the culture state at each save time (leaves gain a leading ``times`` axis);
      NaN after a failed segment.
    - ``end_state``: the state at the schedule's end (just before harvest); NaN if the solve
      failed.
    - ``result``: a :class:`SolveResult`, the first failure of any segment (read it with
      :func:`result_names` or ``SolveResult[result]``).
    - ``accepted_steps``: accepted solver steps over the whole run.
    - ``step_attempts``: step attempts (accepted and rejected) per slot of the solve (saves
      and events merged in time order): what :func:`lockstep_efficiency` reads.
    """

    time_h: Float[Array, " times"]
    states: CultureState
    end_state: CultureState
    result: SolveResult
    accepted_steps: Int[Array, ""]
    step_attempts: Int[Array, " slots"]

    @property
    def success(self) -> Bool[Array, ""]:
        """``False`` if any segment's solve failed (step budget, non-finite state)."""
        return self.result == SolveResult.successful


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


def _breakpoints(schedule: Schedule, save_times_h: Float[Array, " times"]):
    """Events and save times merged into one time-ordered slot sequence.

    A save is a ``noop`` slot that records the state on entry, so a save slot sorts before
    an event at the same time (the culture just before the event), except at the seed's
    time, which shows the freshly seeded culture. Saves after the schedule's end are moved to
    it (their values are replaced by NaN). **Returns** ``(time_h, operation, values, save_slot)``:
    the slots' times, operation codes and event values, and each save time's slot.
    """
    n_saves = save_times_h.shape[0]
    save_h = jnp.minimum(save_times_h, schedule.time_h[-1])
    time_h = jnp.concatenate([save_h, schedule.time_h])
    # Tie-break at equal times: saves (0) before events (2); saves at the seed's time (1) come
    # right after the seed (0), before any other event at that time.
    rank = jnp.concatenate(
        [
            jnp.where(save_h <= schedule.time_h[0], 1, 0),
            jnp.zeros(1, int),
            jnp.full(schedule.n_events - 1, 2),
        ]
    )
    order = jnp.lexsort((rank, time_h))
    save_slot = jnp.argsort(order)[:n_saves]
    events = EventValues(time_h=schedule.time_h, **{f: getattr(schedule, f) for f in EVENT_FIELDS})
    as_slots = jax.tree.map(
        lambda x: jnp.concatenate([jnp.broadcast_to(x[:1], (n_saves,) + x.shape[1:]), x])[order],
        events,
    )
    noop = jnp.full(n_saves, OPERATION_CODE["noop"], schedule.operation.dtype)
    operation = jnp.concatenate([noop, schedule.operation])
    return time_h[order], operation[order], as_slots, save_slot


@eqx.filter_jit
def _simulate(params, schedule, save_times_h, structure, solver) -> Trajectory:
    if solver.loop == "events":
        return _simulate_event_loop(params, schedule, save_times_h, structure, solver)
    time_h, operations, events, save_slot = _breakpoints(schedule, save_times_h)
    next_time_h = jnp.concatenate([time_h[1:], time_h[-1:]])
    term = diffrax.ODETerm(functools.partial(culture_vector_field, structure=structure))
    ode_solver = solver.make_solver()
    controller = diffrax.PIDController(rtol=solver.rtol, atol=solver.atol)
    adjoint = solver.make_adjoint()

    def slot(carry, inputs):
        state, result, dt_h = carry
        operation, t0, t1, event = inputs
        ok = result == SolveResult.successful
        entry = (state, ok)
        state = jax.lax.switch(operation, JUMP_MAPS, state, event, params)
        # After a failure the segments have zero length: nothing is continued from the failed
        # state (which is masked as NaN on output, not in the carry, so that derivatives of
        # the successful runs of a batch stay finite).
        t1 = jnp.where(ok, t1, t0)
        # Only the end state is saved: the slots already stop at every save time.
        solution = diffrax.diffeqsolve(
            term,
            ode_solver,
            t0,
            t1,
            dt_h,
            state,
            args=params,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=controller,
            adjoint=adjoint,
            max_steps=solver.max_steps,
            throw=False,
        )
        state = jax.tree.map(lambda y: y[-1], solution.ys)
        finite = all_finite(state)
        segment = SolveResult.where(
            finite, SolveResult.promote(solution.result), SolveResult.nonfinite_state
        )
        result = SolveResult.where(ok, segment, result)  # the first failure is kept
        steps = solution.stats["num_accepted_steps"]
        # Not differentiated: where the steps fall is the controller's choice, not the model's.
        dt_h = jax.lax.stop_gradient(jnp.where(steps > 0, (t1 - t0) / jnp.maximum(steps, 1), dt_h))
        return (state, result, dt_h), (entry, steps, solution.stats["num_steps"])

    (end_state, result, _), ((entries, entry_ok), accepted, attempts) = jax.lax.scan(
        slot,
        # 0.01 h: a first guess for the first segment only (the controller corrects it); later
        # segments start from the previous one's mean step.
        (_empty_state(structure), SolveResult.successful, jnp.asarray(0.01)),
        (operations, time_h, next_time_h, events),
    )
    saved = jax.tree.map(lambda x: x[save_slot], entries)
    # Slot i's segment ends at slot i + 1: attempts indexed by the slot they integrate up to,
    # as the event loop counts them.
    attempts = jnp.concatenate([jnp.zeros(1, attempts.dtype), attempts[:-1]])
    return _trajectory(
        save_times_h,
        schedule,
        saved,
        entry_ok[save_slot],
        end_state,
        result,
        accepted.sum(),
        attempts,
    )


def _trajectory(save_times_h, schedule, saved, saved_ok, end_state, result, accepted, attempts):
    """The :class:`Trajectory`, NaN where a save was not reached or the solve failed."""
    missing = (save_times_h > schedule.time_h[-1]) | ~saved_ok

    def masked(x):
        return jnp.where(missing.reshape(missing.shape + (1,) * (x.ndim - 1)), jnp.nan, x)

    states = jax.tree.map(masked, saved)
    failed = result != SolveResult.successful
    end_state = jax.tree.map(lambda x: jnp.where(failed, jnp.nan, x), end_state)
    return Trajectory(
        time_h=save_times_h,
        states=states,
        end_state=end_state,
        result=result,
        accepted_steps=accepted,
        step_attempts=attempts,
    )


def _simulate_event_loop(params, schedule, save_times_h, structure, solver) -> Trajectory:
    time_h, operations, events, save_slot = _breakpoints(schedule, save_times_h)
    term = diffrax.ODETerm(functools.partial(culture_vector_field, structure=structure))
    saved, saved_ok, end_state, result, accepted, attempts = solve_slots(
        term,
        solver.make_solver(),
        diffrax.PIDController(rtol=solver.rtol, atol=solver.atol),
        params,
        _empty_state(structure),
        time_h,
        operations,
        events,
        save_slot,
        jnp.asarray(0.01),  # a first guess only: the controller corrects it
        solver.max_steps,
        solver.adjoint == "recursive",
        SolveResult,
    )
    return _trajectory(
        save_times_h, schedule, saved, saved_ok, end_state, result, accepted, attempts
    )


def lockstep_efficiency(trajectories: Trajectory, loop: str) -> float:
    """Mean accepted steps per run / step iterations a ``vmap`` batch of these runs executes.

    A batch executes, with ``loop="segments"``, the sum over slots of the most attempts any
    run makes in that slot; with ``loop="events"``, the most attempts any run makes in all.
    1 means no run ever waits for another (and no step is rejected).
    """
    attempts = np.asarray(trajectories.step_attempts).reshape(
        -1, trajectories.step_attempts.shape[-1]
    )
    # segments: the slots one after the other, each at its slowest run's pace.
    executed = attempts.max(axis=0).sum() if loop == "segments" else attempts.sum(axis=1).max()
    return float(np.mean(np.asarray(trajectories.accepted_steps)) / max(executed, 1))


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
