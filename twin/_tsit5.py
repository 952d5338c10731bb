"""Tsitouras' 5(4) Runge-Kutta method with the stage derivatives on the last axis.

The same method, tableau and error estimate as ``diffrax.Tsit5`` (the same accepted steps and
answers to rounding: ``tests/test_tsit5.py``); only the data layout differs. diffrax keeps the
stage derivatives stacked on a *leading* axis and forms each stage's input with a ``dot``
against the tableau row; under ``vmap`` over runs and ``jacfwd`` tangents that axis ends up in
the middle, and XLA on CPU transposes every leaf's whole stage buffer before every ``dot``. Here
the stages sit on the *last* axis and each stage input is a weighted sum that fuses into the
surrounding elementwise loops. Measured on the 40 padded runs of the calibration benchmark (CPU,
one device, interleaved, best of 15): residuals 23 -> 13 ms, forward-mode Jacobians (ten
tangents) 222 -> 86 ms.

Tried and measured slower: unrolling the stages in Python (Jacobians 4x slower, a 54 s compile:
XLA fuses the cheap stage combinations of later stages into each other and recomputes earlier
stages many times over; the stage loop keeps one materialized buffer per stage; partial
unrolling, ``fori_loop(..., unroll=2)``, already took Jacobians from 94 to 163 ms), and one flat
state vector instead of the state's pytree (Jacobians 30 % slower).

Dense output is linear between a step's ends: use this solver where only step ends are saved,
as :func:`twin.simulate.simulate` does (``SaveAt(t1=True)``).
"""

from __future__ import annotations

from typing import ClassVar

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

_TABLEAU = diffrax.Tsit5.tableau
_STAGES = len(_TABLEAU.c) + 1
# Row i: the weights of the stage derivatives 0..i-1 in stage i's input (row 0 is the FSAL
# derivative at the step's start). The last row is the solution weights (first same as last).
_A = np.zeros((_STAGES, _STAGES))
for _i, _row in enumerate(_TABLEAU.a_lower):
    _A[_i + 1, : len(_row)] = _row
_C = np.concatenate([[0.0], _TABLEAU.c])
_B_ERROR = np.asarray(_TABLEAU.b_error)
assert _TABLEAU.fsal and np.allclose(_A[-1, :-1], _TABLEAU.b_sol[:-1]) and _C[-1] == 1.0


def _weighted_sum(stages, weights):
    """``sum_j weights[j] * stages[..., j]`` (stages on the last axis)."""
    # Unrolled over the (few) stages rather than a reduce: XLA on CPU hands multiply-reduce
    # patterns to a library kernel that is far slower than a fused loop at these sizes
    # (measured: Jacobians 106 -> 85 ms on the benchmark above).
    return sum(stages[..., j] * weights[j] for j in range(stages.shape[-1]))


class StackedTsit5(diffrax.AbstractAdaptiveSolver):
    """``diffrax.Tsit5`` with a stage-last layout (module docstring). ODE terms only; its dense
    output is linear between step ends, so save at step ends only (``SaveAt(t1=True)``)."""

    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = diffrax.LocalLinearInterpolation

    def order(self, terms):
        return 5

    def error_order(self, terms):
        return 5

    def init(self, terms, t0, t1, y0, args):
        return terms.vf(t0, y0, args)  # first same as last: the derivative at the step's start

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        f0 = solver_state
        if made_jump is not False:  # diffrax resolves it statically unless jumps can occur
            fresh = terms.vf(t0, y0, args)
            f0 = jax.tree.map(lambda a, b: jnp.where(made_jump, a, b), fresh, f0)
        dt = t1 - t0
        dtype = jnp.result_type(float)  # float64 under x64
        a, c = jnp.asarray(_A, dtype), jnp.asarray(_C, dtype)
        stages = jax.tree.map(
            lambda f: jnp.zeros(f.shape + (_STAGES,), f.dtype).at[..., 0].set(f), f0
        )

        def stage(i, carry):
            stages, _ = carry
            y = jax.tree.map(lambda y, k: y + dt * _weighted_sum(k, a[i]), y0, stages)
            k = terms.vf(t0 + c[i] * dt, y, args)
            stages = jax.tree.map(
                lambda buffer, new: jax.lax.dynamic_update_index_in_dim(
                    buffer, new[..., None], i, axis=buffer.ndim - 1
                ),
                stages,
                k,
            )
            return stages, y

        stages, y1 = jax.lax.fori_loop(1, _STAGES, stage, (stages, y0))
        b_error = jnp.asarray(_B_ERROR, dtype)
        y_error = jax.tree.map(lambda k: dt * _weighted_sum(k, b_error), stages)
        f1 = jax.tree.map(lambda k: k[..., -1], stages)
        return y1, y_error, dict(y0=y0, y1=y1), f1, diffrax.RESULTS.successful
