"""One adaptive loop per run that crosses its own events: no per-segment lockstep under ``vmap``.

The segment solver (:func:`twin.simulate.simulate` with ``loop="segments"``) calls one
``diffeqsolve`` per slot. Under ``vmap`` each of those is a ``while_loop`` that runs until the
slowest run of the batch reaches the slot's end, so a batch executes, slot by slot, the
*largest* step count of any run: runs that deplete glucose take ~50 steps in a segment where
the others take 8-10, and every run waits for them in every segment.

Here each run carries its own time, step size and slot index through a single ``while_loop``.
An iteration is one step attempt of every unfinished run: the step is clipped to the run's
next breakpoint; an accepted step that lands on it applies every slot at that time (records
the saves, applies the jump maps) and sets ``made_jump`` so the solver recomputes the
first-same-as-last derivative. A batch then executes the largest *total* step count of any of
its runs rather than the sum over slots of the per-slot maxima.

Step acceptance is diffrax's: the solver's ``step`` and the controller's ``adapt_step_size``
are called as ``diffeqsolve`` calls them, with its non-finite-error rule and its 100-ULP
snap to the breakpoint, so the accepted steps inside a segment are the segment solver's. What
differs is the first step after a breakpoint: the segment solver starts each segment from the
previous one's mean step, this loop from the step the controller would have taken had the
breakpoint not cut it short.

Semantics shared with the segment solver: ``max_steps`` bounds the attempts within one
segment (exceeding it fails the run with ``max_steps_reached``), a non-finite state at a
breakpoint fails it with ``nonfinite_state``, and a failed run stops (its later saves are
missing). Derivatives: forward mode through ``lax.while_loop``; reverse mode through
equinox's checkpointed ``while_loop`` (``adjoint="recursive"``). The controller's step-size
choices are not differentiated (as in :mod:`twin.simulate`).

Measured on CPU (docs/sweep.md, "Solver loop"): about 15 % fewer points per second than the
segment loop on a sweep design, with the same lockstep efficiency there, because its batches
wait for their slowest runs overall rather than segment by segment; so it is an option, not
the default.
"""

from __future__ import annotations

import equinox.internal as eqxi
import jax
import jax.numpy as jnp

from .process._operations import JUMP_MAPS


def _snap_floor(t):
    """``t`` minus 100 ULPs: a step ending above it is snapped to ``t`` (diffrax's rule)."""
    for _ in range(100):
        t = eqxi.prevbefore(t)
    return t


def all_finite(tree) -> jax.Array:
    """Whether every entry of every leaf of ``tree`` is finite (a scalar bool)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _tree_where(condition, a, b):
    return jax.tree.map(lambda x, y: jnp.where(condition, x, y), a, b)


def solve_slots(
    term,
    ode_solver,
    controller,
    params,
    y0,
    time_h,
    operations,
    events,
    save_slot,
    dt0_h,
    max_steps: int,
    reverse_mode: bool,
    results,
):
    """Integrate one run through its time-ordered slots (see :func:`twin.simulate._breakpoints`).

    **Returns** ``(saved, saved_ok, end_state, result, accepted, attempts_per_slot)``: the state
    on entry to each save slot, whether it was reached, the state after the last slot, the
    first failure (``results``: the :class:`~twin.simulate.SolveResult` enumeration), the
    accepted steps and, per slot, the step attempts made while integrating up to it.
    """
    n_slots = time_h.shape[0]
    n_saves = save_slot.shape[0]
    kind = "checkpointed" if reverse_mode else "lax"
    snap_floor_h = _snap_floor(time_h)
    error_order = ode_solver.error_order(term)

    def slot_time(k):
        return time_h[jnp.minimum(k, n_slots - 1)]

    def cross(go, k, y, saved, saved_ok):
        """If ``go``: apply every slot from ``k`` on at time ``time_h[k]`` (saves record the
        state on entry, events apply their jump map). Returns the next slot and the state."""
        t = slot_time(k)

        def more(carry):
            k, *_ = carry
            return go & (k < n_slots) & (slot_time(k) <= t)

        def apply(carry):
            k_next, y, saved, saved_ok = carry
            k = jnp.minimum(k_next, n_slots - 1)  # in range where the body runs masked
            # A where per save (no save matches unless k is a save slot) rather than a
            # scatter at a per-run index; the two timed alike here.
            hit = save_slot == k
            saved = jax.tree.map(
                lambda buf, x: jnp.where(hit.reshape((-1,) + (1,) * x.ndim), x, buf), saved, y
            )
            saved_ok = saved_ok | hit
            event = jax.tree.map(lambda e: e[k], events)
            y = jax.lax.switch(operations[k], JUMP_MAPS, y, event, params)
            return k_next + 1, y, saved, saved_ok

        return eqxi.while_loop(
            more,
            apply,
            (k, y, saved, saved_ok),
            max_steps=n_slots,
            kind="bounded" if reverse_mode else "lax",
        )

    def next_time(t, step, k, keep):
        """``t + step``, snapped to the next breakpoint within 100 ULPs of it (as diffrax: a
        rejected step that would be snapped is halved instead)."""
        t_break = slot_time(k)
        t_next = t + step
        snapped = jnp.where(keep, t_break, t + 0.5 * (t_break - t))
        return jnp.where(t_next > snap_floor_h[jnp.minimum(k, n_slots - 1)], snapped, t_next)

    saved = jax.tree.map(lambda x: jnp.zeros((n_saves,) + x.shape, x.dtype), y0)
    k, y, saved, saved_ok = cross(True, 0, y0, saved, jnp.zeros(n_saves, bool))
    t = time_h[0]
    _, controller_state = controller.init(term, t, t + dt0_h, y, dt0_h, params, None, error_order)
    init = dict(
        k=k,
        t=t,
        t_next=next_time(t, dt0_h, k, True),
        step=jnp.asarray(dt0_h, t.dtype),  # the step wanted, before any breakpoint cut it
        y=y,
        solver_state=ode_solver.init(term, t, t + dt0_h, y, params),
        controller_state=controller_state,
        made_jump=jnp.asarray(False),
        saved=saved,
        saved_ok=saved_ok,
        result=results.successful,
        in_segment=jnp.asarray(0),
        attempts=jnp.zeros(n_slots, int),
        accepted=jnp.asarray(0),
    )

    def running(c):
        return (c["k"] < n_slots) & (c["result"] == results.successful)

    def attempt(c):
        k, t, t_next, y = c["k"], c["t"], c["t_next"], c["y"]
        y1, y_error, _, solver_state, solver_result = ode_solver.step(
            term, t, t_next, y, params, c["solver_state"], c["made_jump"]
        )
        y_error = jax.tree.map(lambda e: jnp.where(jnp.isnan(e), jnp.inf, e), y_error)
        keep, t_new, t_proposed, _, controller_state, controller_result = (
            controller.adapt_step_size(
                t, t_next, y, y1, params, y_error, error_order, c["controller_state"]
            )
        )
        step = jax.lax.stop_gradient(t_proposed - t_new)  # step sizes are not differentiated
        arrived = keep & (t_next >= slot_time(k))
        y = _tree_where(keep, y1, y)
        solver_state = _tree_where(keep, solver_state, c["solver_state"])
        in_segment = jnp.where(arrived, 0, c["in_segment"] + 1)
        finite = all_finite(y)
        result = results.where(keep, results.promote(solver_result), results.successful)
        ok = result == results.successful
        result = results.where(ok, results.promote(controller_result), result)
        ok = result == results.successful
        result = results.where(ok & arrived & ~finite, results.nonfinite_state, result)
        ok = result == results.successful
        too_long = ~arrived & (in_segment >= max_steps)
        result = results.where(ok & too_long, results.max_steps_reached, result)
        k_after, y, saved, saved_ok = cross(arrived, k, y, c["saved"], c["saved_ok"])
        # After a breakpoint, at least the step that it cut short (the segment solver starts
        # each segment from the last one's mean step instead).
        step = jnp.where(arrived, jnp.maximum(step, c["step"]), step)
        return dict(
            k=k_after,
            t=t_new,
            t_next=next_time(t_new, step, k_after, keep),
            step=step,
            y=y,
            solver_state=solver_state,
            controller_state=controller_state,
            # A rejected step keeps the flag: the derivative at the start is still stale.
            made_jump=jnp.where(keep, arrived, c["made_jump"]),
            saved=saved,
            saved_ok=saved_ok,
            result=result,
            in_segment=in_segment,
            attempts=c["attempts"] + (jnp.arange(n_slots) == k),
            accepted=c["accepted"] + keep,
        )

    final = eqxi.while_loop(running, attempt, init, max_steps=max_steps * n_slots, kind=kind)
    return (
        final["saved"],
        final["saved_ok"],
        final["y"],
        final["result"],
        final["accepted"],
        final["attempts"],
    )
