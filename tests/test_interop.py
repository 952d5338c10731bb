"""SBML export: generated from the simulator's own functions, checked by libsbml and roadrunner."""

import dataclasses

import jax
import jax.numpy as jnp
import libsbml
import numpy as np
import pytest
import sympy as sp

from twin import Recipe, default_parameters, simulate
from twin.interop import (
    UnsupportedPrimitive,
    export_sbml,
    load_roadrunner,
    roadrunner_observables,
    state_ids,
    symbolic_call,
)
from twin.interop._sbml import vector_field
from twin.interop._symbolic import symbols
from twin.kinetics import CultureState, ModelStructure
from twin.observe import OBSERVABLES, observables
from twin.simulate import SolverSettings

STRUCTURE = ModelStructure()


@pytest.fixture(scope="module")
def exported():
    schedule = Recipe().schedule(capacity_ml=1000.0)
    return export_sbml(default_parameters(), schedule, STRUCTURE)


def test_symbolic_evaluation_matches_jax():
    """The jaxpr interpreter agrees with JAX on a function using the primitives the model uses."""

    def fn(x, y):
        z = jnp.concatenate([jnp.zeros(1), x[:-1]]) * jnp.exp(-y) + jnp.log1p(x) ** 2
        ratio = jnp.where(x.sum() == 0, 0.0, x / jnp.where(x.sum() == 0, 1.0, x.sum()))
        return jnp.maximum(z, 0.3) - jnp.minimum(ratio, 0.25) + x @ jnp.arange(3.0), jnp.clip(
            y, 0, 1
        )

    x, y = np.array([0.2, 1.5, 3.0]), np.array(0.7)
    xs, ys = symbols(np.array(["x0", "x1", "x2"])), symbols(np.array("y"))
    out, clipped = symbolic_call(fn, xs, ys)
    subs = {sp.Symbol("x0"): x[0], sp.Symbol("x1"): x[1], sp.Symbol("x2"): x[2], sp.Symbol("y"): y}
    got = np.array([float(e.subs(subs)) for e in out])
    want, want_clipped = jax.jit(fn)(jnp.asarray(x), jnp.asarray(y))
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-14)
    assert float(clipped[()].subs(subs)) == pytest.approx(float(want_clipped))


def test_symbolic_cond_is_piecewise():
    def fn(x, y):
        return jax.lax.cond(y > 0, lambda a: 2.0 * a, lambda a: a + 1.0, x)

    expr = symbolic_call(fn, symbols(np.array("x")), symbols(np.array("y")))[()]
    assert float(expr.subs({"x": 3.0, "y": 1.0})) == 6.0
    assert float(expr.subs({"x": 3.0, "y": -1.0})) == 4.0


def test_unknown_primitive_is_named():
    with pytest.raises(UnsupportedPrimitive, match="sort"):
        symbolic_call(jnp.sort, symbols(np.array(["a", "b"])))


def test_sbml_is_valid_and_names_the_twins_quantities(exported):
    assert exported.errors() == []
    model = exported.document.getModel()
    for name in OBSERVABLES:  # every observable under the twin's own name
        assert model.getElementBySId(name) is not None, name
    assert model.getParameter("viable_cells").getUnits() == "cells"
    assert model.getParameter("max_growth_rate_per_h").getUnits() == "per_hour"
    assert exported.event_times_h == (24.0, 48.0, 72.0, 96.0, 120.0, 144.0, 168.0, 192.0)
    trigger = model.getEvent(0).getTrigger()
    assert trigger.getPersistent()
    assert libsbml.formulaToL3String(trigger.getMath()) == "time >= 24"


def test_rules_hold_numbers_and_conditions_hold_no_piecewise(exported):
    """What AMICI's SBML import needs (it rejects both): no assignment rule whose value is a
    condition (``vf_3 = x > 0`` used as a piecewise condition), no piecewise inside a
    condition (a min of a max: the fraction assays' clamp is one flat piecewise)."""
    model = exported.document.getModel()

    def nested(node, in_condition=False) -> int:
        count = int(in_condition and node.getType() == libsbml.AST_FUNCTION_PIECEWISE)
        for i in range(node.getNumChildren()):
            is_condition = node.getType() == libsbml.AST_FUNCTION_PIECEWISE and i % 2 == 1
            count += nested(node.getChild(i), in_condition or is_condition)
        return count

    for rule in model.getListOfRules():
        math = rule.getMath()
        assert not (math.isRelational() or math.isLogical()), rule.getVariable()
        assert nested(math) == 0, rule.getVariable()
    assert any(
        "piecewise" in libsbml.formulaToL3String(r.getMath()) for r in model.getListOfRules()
    )


def test_no_switch_sits_at_zero(exported):
    """AMICI turns every comparison into a switching function; one that compares with 0
    sits on a value the state holds exactly (lactate in fresh medium, transduced cells
    before the transduction), which CVODES never sees flip: AMICI then stayed on the floored
    branch (no lactate effects at all) or stopped. The guards switch just below 0 instead."""
    model = exported.document.getModel()

    def zero_comparisons(node) -> list[str]:
        found = []
        if node.isRelational() and any(
            node.getChild(i).isNumber() and node.getChild(i).getValue() == 0
            for i in range(node.getNumChildren())
        ):
            found.append(libsbml.formulaToL3String(node))
        for i in range(node.getNumChildren()):
            found += zero_comparisons(node.getChild(i))
        return found

    switches = [hit for rule in model.getListOfRules() for hit in zero_comparisons(rule.getMath())]
    assert switches == []
    formulas = " ".join(libsbml.formulaToL3String(r.getMath()) for r in model.getListOfRules())
    assert ">= lactate_mM" in formulas  # the lactate guard is there, switching below 0


def test_rates_in_roadrunner_equal_the_vector_field(exported):
    """At random states, roadrunner's rate rules equal ``culture_vector_field`` to rounding."""
    rr = load_roadrunner(exported.to_string(), rtol=1e-8, atol=1e-10)
    ids = state_ids(STRUCTURE)
    rng = np.random.default_rng(0)
    field = jax.jit(vector_field(STRUCTURE))
    for _ in range(3):
        values = {
            f.name: rng.uniform(0.1, 5.0, np.shape(getattr(ids, f.name)))
            for f in dataclasses.fields(CultureState)
        }
        values["volume_ml"] = np.asarray(rng.uniform(50, 500))
        values["glucose_mM"] = np.asarray(rng.uniform(-0.1, 12))  # the clamp at 0 too
        state = CultureState(**{k: jnp.asarray(v) for k, v in values.items()})
        for sid, value in zip(
            np.concatenate([np.ravel(x) for x in jax.tree.leaves(ids)]),
            np.concatenate([np.ravel(x) for x in jax.tree.leaves(state)]),
            strict=True,
        ):
            rr[str(sid)] = float(value)
        rates = rr.getRatesOfChangeNamedArray()
        got = {n.rstrip("'"): r for n, r in zip(rates.colnames, np.ravel(rates), strict=True)}
        want = field(0.0, state, default_parameters())
        for sid, rate in zip(
            np.concatenate([np.ravel(x) for x in jax.tree.leaves(ids)]),
            np.concatenate([np.ravel(x) for x in jax.tree.leaves(want)]),
            strict=True,
        ):
            if str(sid) in got:
                assert got[str(sid)] == pytest.approx(float(rate), rel=1e-10, abs=1e-14), sid
            else:  # no rate rule: constant between events
                assert float(rate) == 0.0, sid


@pytest.mark.slow
@pytest.mark.parametrize(
    "structure",
    [ModelStructure(), ModelStructure(lag_stages=5, max_copies=5, density="hill_fitted")],
)
def test_roadrunner_matches_simulate_through_all_events(structure):
    """Every observable, half-way between events and at hourly points, within 1e-4 relative
    (the fitted density exponent off its hill-form value, so that its form is exercised)."""
    schedule = Recipe().schedule(capacity_ml=1000.0)
    params = default_parameters(density_limit_exponent=1.5)
    xml = export_sbml(params, schedule, structure).to_string()
    times = np.concatenate([[0.0], np.arange(0.5, float(schedule.end_time_h), 1.0)])
    solver = SolverSettings(rtol=1e-10, atol=1e-12, max_steps=100_000)
    trajectory = simulate(params, schedule, times, structure, solver)
    assert bool(trajectory.success)
    twin = {k: np.asarray(v) for k, v in observables(trajectory.states).items()}
    rr = load_roadrunner(xml, rtol=1e-10, atol=1e-12)
    theirs = roadrunner_observables(rr, times, list(twin))
    for name, ours in twin.items():
        # relative to the value, with a floor at 1e-6 of the observable's range (zeros early on)
        scale = np.maximum(np.abs(ours), 1e-6 * np.max(np.abs(ours)))
        scale = np.where(scale == 0, 1.0, scale)
        rel = np.abs(theirs[name] - ours) / scale
        assert rel.max() <= 1e-4, (name, rel.max(), times[rel.argmax()])
