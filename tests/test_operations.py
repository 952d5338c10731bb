"""The registry of unit operations: its invariants, and that a new operation is one final class."""

import dataclasses
from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import twin
from twin.facility._config import DEFAULT_OPERATION_MODULES
from twin.process import (
    EVENT_FIELDS,
    JUMP_MAPS,
    OPERATION_CODE,
    OPERATIONS,
    OPTIONAL_FIELDS,
    RECORDED_OPERATIONS,
    REQUIRED_FIELDS,
    UNIT_OPERATIONS,
    EventValues,
    Recipe,
    Schedule,
    UnitOperation,
    operation_tables,
    recipe_values,
)
from twin.process._operations import SAME_TIME_ORDER, Exchange, Noop, Seed


@final
class Dilute(UnitOperation):
    """A toy operation: add ``volume_ml`` of plain buffer (every concentration falls by volume)."""

    name = "dilute"
    code = 8
    same_time_order = 2.5  # after an exchange, before a feed
    required_fields = ("volume_ml",)

    def jump(self, state, event, p):
        keep = state.volume_ml / (state.volume_ml + event.volume_ml)
        return eqx.tree_at(
            lambda s: (s.volume_ml, s.glucose_mM, s.lactate_mM, s.il2_IU_per_mL),
            state,
            (
                state.volume_ml + event.volume_ml,
                keep * state.glucose_mM,
                keep * state.lactate_mM,
                keep * state.il2_IU_per_mL,
            ),
        )

    def design_block(self, recipe, values):
        return None


def _event(**values) -> EventValues:
    return EventValues(**{f: jnp.asarray(values.get(f, 0.0)) for f in ("time_h", *EVENT_FIELDS)})


PARAMS = twin.default_parameters()
SEEDED = Seed().jump(
    twin.kinetics.empty_state(twin.ModelStructure()),
    _event(cells=1e8, viability=0.9, volume_ml=100.0, glucose_mM=11.0, il2_IU_per_mL=100.0),
    PARAMS,
)


def test_codes_are_the_stored_ones():
    # Saved schedules and the simulator's switch table hold these codes: they never change.
    assert OPERATIONS == (
        "noop",
        "seed",
        "activate",
        "transduce",
        "exchange",
        "feed",
        "sample",
        "harvest",
    )
    assert {name: code for code, name in enumerate(OPERATIONS)} == OPERATION_CODE
    assert OPERATIONS[1:] == RECORDED_OPERATIONS
    assert [m.__func__ for m in JUMP_MAPS] == [type(op).jump for op in UNIT_OPERATIONS]


def test_registry_invariants():
    assert [op.code for op in UNIT_OPERATIONS] == list(range(len(UNIT_OPERATIONS)))
    assert len(set(OPERATIONS)) == len(OPERATIONS)
    for name in RECORDED_OPERATIONS:
        assert set(REQUIRED_FIELDS[name]) <= set(EVENT_FIELDS), name
        assert set(OPTIONAL_FIELDS[name]) <= set(EVENT_FIELDS), name
    # Recipes sort with this: measure first, then the medium, then reagents; harvest last.
    assert sorted(SAME_TIME_ORDER, key=SAME_TIME_ORDER.get) == [
        "seed",
        "sample",
        "exchange",
        "feed",
        "activate",
        "transduce",
        "harvest",
    ]
    # The schedule and the jump maps' event carry exactly the event fields.
    assert [f.name for f in dataclasses.fields(Schedule)] == ["time_h", "operation", *EVENT_FIELDS]
    assert [f.name for f in dataclasses.fields(EventValues)] == ["time_h", *EVENT_FIELDS]
    # Every recorded operation has a module in the facility model.
    assert set(DEFAULT_OPERATION_MODULES) == set(RECORDED_OPERATIONS)
    with pytest.raises(TypeError):
        UnitOperation()  # abstract


def test_identity_operations_leave_the_state_alone_and_the_others_change_it():
    event = _event(time_h=1.0, **{f: 0.5 for f in EVENT_FIELDS})
    for op in UNIT_OPERATIONS:
        after = op.jump(SEEDED, event, PARAMS)
        pairs = zip(jax.tree.leaves(after), jax.tree.leaves(SEEDED), strict=True)
        same = all(np.array_equal(a, b) for a, b in pairs)
        assert same == (not op.changes_state), op.name


def test_design_blocks_set_exactly_the_operations_fields():
    recipe = Recipe()
    values = recipe_values(recipe)
    for op in UNIT_OPERATIONS:
        block = op.design_block(recipe, values)
        if block is None:
            assert op.name == "noop"
            continue
        times, given = block
        assert set(op.required_fields) <= set(given) <= set(op.required_fields + op.optional_fields)
        assert all(v.shape == times.shape for v in given.values()), op.name


def test_a_new_operation_is_one_class():
    tables = operation_tables((*UNIT_OPERATIONS, Dilute()))
    assert tables.operations == (*OPERATIONS, "dilute")
    assert tables.operation_code == {**OPERATION_CODE, "dilute": 8}
    assert tables.recorded_operations[-1] == "dilute"
    assert tables.required_fields == {**REQUIRED_FIELDS, "dilute": ("volume_ml",)}
    assert tables.optional_fields["dilute"] == ()
    assert tables.same_time_order["dilute"] == 2.5
    assert "dilute" not in tables.identity_operations

    # The switch table picks it up at its code; the other codes still select their own maps.
    @jax.jit
    def jump(code, state, event):
        return jax.lax.switch(code, tables.jump_maps, state, event, PARAMS)

    event = _event(time_h=5.0, volume_ml=300.0, glucose_mM=20.0, il2_IU_per_mL=50.0)
    diluted = jump(tables.operation_code["dilute"], SEEDED, event)
    assert float(diluted.volume_ml) == 400.0
    np.testing.assert_allclose(diluted.glucose_mM, SEEDED.glucose_mM / 4, rtol=1e-15)
    np.testing.assert_allclose(diluted.il2_IU_per_mL, SEEDED.il2_IU_per_mL / 4, rtol=1e-15)
    fed = jump(OPERATION_CODE["feed"], SEEDED, event)
    np.testing.assert_allclose(fed.glucose_mM, (11.0 * 100 + 20.0 * 300) / 400, rtol=1e-15)


@final
class _Twin(UnitOperation):
    """A second operation whose class variables the cases below replace."""

    name = "twin"
    code = 8
    same_time_order = 2.5

    def jump(self, state, event, p):
        return state

    def design_block(self, recipe, values):
        return None


_METHODS = {"jump": _Twin.jump, "design_block": _Twin.design_block}


def _variant(**class_vars) -> UnitOperation:
    return type("Variant", (_Twin,), class_vars)()


BAD_REGISTRIES = {
    "a gap in the codes": ((*UNIT_OPERATIONS, _variant(code=9)), "code=9, expected 8"),
    "reordered": (
        (Noop(), Exchange(), Seed(), *UNIT_OPERATIONS[2:4], *UNIT_OPERATIONS[5:]),
        "code=4, expected 1",
    ),
    "a repeated name": ((*UNIT_OPERATIONS, _variant(name="feed")), "more than one"),
    "an unknown field": (
        (*UNIT_OPERATIONS, _variant(required_fields=("volume_L",))),
        "'volume_L' is not an event field",
    ),
    "required and optional": (
        (*UNIT_OPERATIONS, _variant(required_fields=("moi",), optional_fields=("moi",))),
        "both required and optional",
    ),
    "positive but not required": (
        (*UNIT_OPERATIONS, _variant(positive_fields=("moi",))),
        "not all required",
    ),
    "no same-time order": (
        (*UNIT_OPERATIONS, type("Bare", (UnitOperation,), {**_METHODS, "name": "x", "code": 8})()),
        "does not set the class variable 'same_time_order'",
    ),
    "a repeated order": ((*UNIT_OPERATIONS, _variant(same_time_order=3)), "repeats"),
    "ranked after the harvest": (
        (*UNIT_OPERATIONS, _variant(same_time_order=6.5)),
        "harvest must rank after every operation",
    ),
    "no noop first": ((*UNIT_OPERATIONS[1:],), "code=1, expected 0"),
    "no harvest": (UNIT_OPERATIONS[:-1] + (_variant(code=7),), "needs a 'harvest'"),
}


@pytest.mark.parametrize("case", BAD_REGISTRIES)
def test_a_bad_registry_is_refused(case):
    registry, message = BAD_REGISTRIES[case]
    with pytest.raises(ValueError, match=message):
        operation_tables(registry)
