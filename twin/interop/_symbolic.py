"""Evaluate the twin's own JAX functions on symbols: a jaxpr interpreter over sympy.

The model is defined once, as JAX code (vector field, jump maps, observables, assay scales).
To write it in another language (SBML) we trace a function with :func:`jax.make_jaxpr` and
evaluate the traced program with each array replaced by a NumPy object array of sympy
expressions. Nothing about the model is restated here: only the meaning of JAX's primitives,
so any change to the kinetics (new terms, selectable forms) is exported as it is simulated.
A primitive this interpreter does not know raises :class:`UnsupportedPrimitive` by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import numpy as np
import sympy as sp
from jax.extend import core as jcore


class UnsupportedPrimitive(NotImplementedError):
    """A JAX primitive without a symbolic meaning here (extend ``_PRIMITIVES``)."""


def _obj(x) -> np.ndarray:
    return np.asarray(x, dtype=object)


def _number(x) -> sp.Basic:
    if isinstance(x, (bool, np.bool_)):
        return sp.true if x else sp.false
    if isinstance(x, (int, np.integer)):
        return sp.Integer(int(x))
    value = float(x)
    if value.is_integer() and abs(value) < 2**53:
        return sp.Integer(int(value))  # exact, and sympy folds it cleanly
    return sp.Float(value, 17)


def constant(value) -> np.ndarray:
    """A concrete array (or scalar) as an object array of sympy numbers."""
    arr = np.asarray(value)
    return np.vectorize(_number, otypes=[object])(arr) if arr.shape else _obj(_number(arr[()]))


def _elementwise(fn: Callable) -> Callable:
    ufunc = np.frompyfunc(fn, 1, 1)
    return lambda x, **_: _obj(ufunc(x))


def _binary(fn: Callable) -> Callable:
    ufunc = np.frompyfunc(fn, 2, 1)
    return lambda x, y, **_: _obj(ufunc(x, y))


def _to_bool(x):
    return x if isinstance(x, sp.logic.boolalg.Boolean) else sp.Ne(x, 0)


def _select(pred, *cases):
    if len(cases) != 2:
        raise UnsupportedPrimitive("select_n with more than two cases")
    if pred is sp.true:
        return cases[1]
    if pred is sp.false:
        return cases[0]
    if cases[0] == cases[1]:
        return cases[0]
    return sp.Piecewise((cases[1], _to_bool(pred)), (cases[0], True))


def _convert(x, new_dtype=None, **_):
    if new_dtype is not None and np.dtype(new_dtype).kind in "fiu":

        def to_float(v):
            if isinstance(v, sp.logic.boolalg.Boolean):
                return sp.Piecewise((sp.Integer(1), v), (sp.Integer(0), True))
            return v

        return _obj(np.frompyfunc(to_float, 1, 1)(x))
    return x


def _broadcast_in_dim(x, shape, broadcast_dimensions, **_):
    expanded = np.reshape(
        x,
        [
            x.shape[broadcast_dimensions.index(i)] if i in broadcast_dimensions else 1
            for i in range(len(shape))
        ],
    )
    return _obj(np.broadcast_to(expanded, shape).copy())


def _slice(x, start_indices, limit_indices, strides=None, **_):
    strides = strides or (1,) * x.ndim
    index = tuple(
        slice(a, b, s) for a, b, s in zip(start_indices, limit_indices, strides, strict=True)
    )
    return _obj(x[index])


def _reduce(fn):
    def reduce(x, axes, **_):
        out = x
        for axis in sorted(axes, reverse=True):
            out = _obj(np.apply_along_axis(lambda v: fn(list(v)), axis, out))
        return _obj(out)

    return reduce


def _dot_general(x, y, dimension_numbers, **_):
    (contract_x, contract_y), (batch_x, batch_y) = dimension_numbers
    if batch_x or batch_y:
        raise UnsupportedPrimitive("dot_general with batch dimensions")
    return _obj(np.tensordot(x, y, axes=(list(contract_x), list(contract_y))))


def _iota(dtype, shape, dimension, **_):
    index = np.indices(shape)[dimension]
    return constant(index.astype(dtype))


def _clamp(lo, x, hi, **_):
    # one flat piecewise rather than a min of a max (no piecewise inside a condition)
    def clamp(a, v, b):
        return sp.Piecewise((a, sp.LessThan(v, a)), (b, sp.GreaterThan(v, b)), (v, True))

    return _obj(np.frompyfunc(clamp, 3, 1)(lo, x, hi))


def _integer_pow(x, y, **_):
    return _obj(np.frompyfunc(lambda v: v**y, 1, 1)(x))


_PRIMITIVES: dict[str, Callable] = {
    "add": _binary(lambda a, b: a + b),
    "sub": _binary(lambda a, b: a - b),
    "mul": _binary(lambda a, b: a * b),
    "div": _binary(lambda a, b: a / b),
    "pow": _binary(lambda a, b: a**b),
    "max": _binary(sp.Max),
    "min": _binary(sp.Min),
    "eq": _binary(lambda a, b: sp.Eq(a, b)),
    "ne": _binary(lambda a, b: sp.Ne(a, b)),
    "gt": _binary(lambda a, b: sp.StrictGreaterThan(a, b)),
    "ge": _binary(lambda a, b: sp.GreaterThan(a, b)),
    "lt": _binary(lambda a, b: sp.StrictLessThan(a, b)),
    "le": _binary(lambda a, b: sp.LessThan(a, b)),
    "and": _binary(lambda a, b: sp.And(_to_bool(a), _to_bool(b))),
    "or": _binary(lambda a, b: sp.Or(_to_bool(a), _to_bool(b))),
    "not": _elementwise(lambda a: sp.Not(_to_bool(a))),
    "neg": _elementwise(lambda a: -a),
    "exp": _elementwise(sp.exp),
    "exp2": _elementwise(lambda a: 2**a),
    "log": _elementwise(sp.log),
    "log1p": _elementwise(lambda a: sp.log(1 + a)),
    "expm1": _elementwise(lambda a: sp.exp(a) - 1),
    "sqrt": _elementwise(sp.sqrt),
    "rsqrt": _elementwise(lambda a: 1 / sp.sqrt(a)),
    "cbrt": _elementwise(sp.cbrt),
    "tanh": _elementwise(sp.tanh),
    "logistic": _elementwise(lambda a: 1 / (1 + sp.exp(-a))),
    "abs": _elementwise(sp.Abs),
    "sign": _elementwise(sp.sign),
    "square": _elementwise(lambda a: a**2),
    "integer_pow": _integer_pow,
    "select_n": lambda pred, *cases, **_: _obj(
        np.frompyfunc(_select, 1 + len(cases), 1)(pred, *cases)
    ),
    "clamp": _clamp,
    "convert_element_type": _convert,
    "copy": lambda x, **_: x,
    "copy_p": lambda x, **_: x,
    "stop_gradient": lambda x, **_: x,
    "reduce_precision": lambda x, **_: x,
    "broadcast_in_dim": _broadcast_in_dim,
    "reshape": lambda x, new_sizes, **_: _obj(np.reshape(x, new_sizes)),
    "squeeze": lambda x, dimensions, **_: _obj(np.squeeze(x, axis=tuple(dimensions))),
    "expand_dims": lambda x, dimensions, **_: _obj(np.expand_dims(x, tuple(dimensions))),
    "transpose": lambda x, permutation, **_: _obj(np.transpose(x, permutation)),
    "rev": lambda x, dimensions, **_: _obj(np.flip(x, axis=tuple(dimensions))),
    "concatenate": lambda *xs, dimension, **_: _obj(np.concatenate(xs, axis=dimension)),
    "slice": _slice,
    "reduce_sum": _reduce(lambda v: sp.Add(*v)),
    "reduce_prod": _reduce(lambda v: sp.Mul(*v)),
    "reduce_max": _reduce(lambda v: sp.Max(*v)),
    "reduce_min": _reduce(lambda v: sp.Min(*v)),
    "dot_general": _dot_general,
    "iota": _iota,
}
# Primitives that wrap a sub-program (jit, custom derivatives): evaluate the inner program.
_CALLS = {
    "pjit": "jaxpr",
    "jit": "jaxpr",
    "closed_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "remat": "jaxpr",
    "checkpoint": "jaxpr",
}


def _cond(branches, index: np.ndarray, operands: list) -> list[np.ndarray]:
    def run(branch):
        return _eval_jaxpr(branch.jaxpr, [constant(c) for c in branch.consts], operands)

    k = index[()]
    if k.is_Number:
        return run(branches[int(k)])
    results = [run(branch) for branch in branches]
    outputs = []
    for per_branch in zip(*results, strict=True):

        def choose(*values):
            pieces = [(v, sp.Eq(k, i)) for i, v in enumerate(values[:-1])]
            return sp.Piecewise(*pieces, (values[-1], True))

        outputs.append(_obj(np.frompyfunc(choose, len(per_branch), 1)(*per_branch)))
    return outputs


def _eval_jaxpr(jaxpr: jcore.Jaxpr, consts: Sequence, args: Sequence) -> list[np.ndarray]:
    env: dict = {}

    def read(var):
        if isinstance(var, jcore.Literal):
            return constant(var.val)
        return env[var]

    for var, value in zip(jaxpr.constvars, consts, strict=True):
        env[var] = value
    for var, value in zip(jaxpr.invars, args, strict=True):
        env[var] = value
    for eqn in jaxpr.eqns:
        inputs = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name == "cond":  # lax.cond / lax.switch: the branch, or a piecewise over branches
            outputs = _cond(eqn.params["branches"], inputs[0], inputs[1:])
        elif name in _CALLS:
            inner = eqn.params[_CALLS[name]]
            closed = inner if hasattr(inner, "consts") else None
            inner_jaxpr = closed.jaxpr if closed is not None else inner
            inner_consts = [constant(c) for c in closed.consts] if closed is not None else []
            outputs = _eval_jaxpr(inner_jaxpr, inner_consts, inputs)
        elif name in _PRIMITIVES:
            outputs = _PRIMITIVES[name](*inputs, **eqn.params)
            outputs = [outputs] if not eqn.primitive.multiple_results else outputs
        else:
            raise UnsupportedPrimitive(
                f"JAX primitive {name!r} has no symbolic translation (twin/interop/_symbolic.py)"
            )
        for var, value in zip(eqn.outvars, outputs, strict=True):
            env[var] = _obj(value)
    return [read(v) for v in jaxpr.outvars]


def symbolic_call(fn: Callable, *args):
    """``fn(*args)`` where ``args`` are pytrees whose leaves are object arrays of sympy
    expressions (or numbers): returns ``fn``'s output pytree with object-array leaves.

    ``fn`` is traced with float64 placeholders of the leaves' shapes, so it must be a JAX
    function of arrays (as the simulator calls it)."""
    leaves, treedef = jax.tree.flatten(args)
    leaves = [_obj(leaf) for leaf in leaves]
    shapes = [jax.ShapeDtypeStruct(np.shape(leaf), np.float64) for leaf in leaves]

    def flat(*xs):
        return fn(*jax.tree.unflatten(treedef, xs))

    closed, out_shape = jax.make_jaxpr(flat, return_shape=True)(*shapes)
    outputs = _eval_jaxpr(closed.jaxpr, [constant(c) for c in closed.consts], leaves)
    return jax.tree.unflatten(jax.tree.structure(out_shape), outputs)


def symbols(names: np.ndarray) -> np.ndarray:
    """An object array of sympy symbols named by an array of strings."""
    return _obj(np.vectorize(sp.Symbol, otypes=[object])(np.asarray(names)))


def is_finite_number(expr: sp.Basic) -> bool:
    return expr.is_Number and math.isfinite(float(expr))
