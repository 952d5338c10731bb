"""SBML Level 3 export, generated from the simulator's own functions.

The rate rules are :func:`~twin.kinetics.culture_vector_field`, the events the unit operations'
jump maps (:meth:`twin.process.UnitOperation.jump`, composed per time point), the initial
values the seed's jump map, and the assignment rules :func:`twin.observe.observables` (and, for
calibration, :func:`twin.assays.to_assay_scale`), each evaluated on symbols by
:mod:`._symbolic`. Nothing here restates a rate law.

Mapping (every state leaf keeps its field name; array fields get ``_<index>``):

- cell compartments and vector: species (amounts in millions, ``hasOnlySubstanceUnits``) in a
  dimensionless compartment ``cartridge``; volume, concentrations and clocks: parameters; all
  with rate rules (the twin's model is a vector field, not a reaction network);
- kinetic parameters: constant parameters with units and their table row in notes/annotation;
- the events at one time: one SBML event ``time >= t`` (persistent, values from trigger time)
  whose assignments are the composed jump maps; the events at the seed's time give the
  initial values (initial assignments where they depend on parameters);
- observables: assignment rules named as :data:`twin.observe.OBSERVABLES`; an observable that is
  a state variable itself (``glucose_mM``, ``volume_ml``, ...) is that variable.

Several schedules can share one model (for PEtab): a constant parameter ``batch_index`` selects
one; the other schedules' events are pushed past any horizon (trigger ``time >= t + 1e9 h x
(batch_index - k)^2``; an equality in a trigger defeats root-finding simulators such as AMICI).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from xml.sax.saxutils import escape

import jax
import jax.numpy as jnp
import libsbml
import numpy as np
import sympy as sp

from ..assays import ASSAY_SCALES, to_assay_scale
from ..kinetics import (
    PARAMETER_NAMES,
    PARAMETER_TABLE,
    CultureState,
    KineticParameters,
    ModelStructure,
    culture_vector_field,
    empty_state,
)
from ..observe import OBSERVABLES, observables
from ..process._operations import IDENTITY_OPERATIONS, JUMP_MAPS, EventValues
from ..process._schedule import EVENT_FIELDS, OPERATIONS, Schedule
from ._formula import to_infix
from ._symbolic import constant, symbolic_call, symbols
from ._units import sbml_unit

try:
    _twin_version = importlib.metadata.version("cart-twin")
except importlib.metadata.PackageNotFoundError:  # a source checkout that is not installed
    _twin_version = "unknown"
ANNOTATION_NS = "https://github.com/cart-twin/cart-twin/sbml"
COMPARTMENT = "cartridge"
TIME = sp.Symbol("time")  # the L3 infix parser reads ``time`` as the simulation time

# State fields that are not cell counts (millions of cells), with their units.
_STATE_UNITS = {
    "volume_ml": "mL",
    "glucose_mM": "mM",
    "lactate_mM": "mM",
    "il2_IU_per_mL": "IU/mL",
    "vector": "MTU",
    "time_since_activation_h": "h",
    "activated": "",
}
_SPECIES_UNITS = ("Mcells", "MTU")


class SBMLExportError(ValueError):
    """The model or schedule cannot be written as SBML (the message says why)."""


def state_unit(field: str) -> str:
    return _STATE_UNITS.get(field, "Mcells")


def state_ids(structure: ModelStructure) -> CultureState:
    """The SBML id of every state entry: a state pytree of string arrays."""
    template = empty_state(structure)
    ids = {}
    for field in dataclasses.fields(CultureState):
        shape = np.shape(getattr(template, field.name))
        if shape == ():
            ids[field.name] = np.asarray(field.name, dtype=object)
        else:
            ids[field.name] = np.asarray(
                [f"{field.name}_{i}" for i in range(int(np.prod(shape)))], dtype=object
            ).reshape(shape)
    return CultureState(**ids)


# Hours a batch's unit operations are pushed out when another batch is selected (> any culture).
OTHER_BATCH_DELAY_H = 1.0e9


def _flat(tree) -> list:
    return [x for leaf in jax.tree.leaves(tree) for x in np.asarray(leaf, dtype=object).ravel()]


def _inline_conditions(
    shared: list[tuple[sp.Symbol, sp.Basic]], reduced: list[sp.Basic]
) -> tuple[list[tuple[sp.Symbol, sp.Expr]], list[sp.Basic]]:
    """Put conditions that ``sp.cse`` shared (``x > 0``) back where they are used: an SBML
    assignment rule holds a number, and tools such as AMICI cannot take a rule's variable as a
    piecewise condition."""
    conditions, kept = {}, []
    for symbol, expr in shared:
        expr = expr.xreplace(conditions)
        if isinstance(expr, sp.logic.boolalg.Boolean) and not isinstance(expr, sp.Symbol):
            conditions[symbol] = expr
        else:
            kept.append((symbol, expr))
    return kept, [expr.xreplace(conditions) for expr in reduced]


def _event_values(schedule: Schedule, i: int) -> EventValues:
    return EventValues(
        time_h=jnp.asarray(schedule.time_h[i], float),
        **{f: jnp.asarray(getattr(schedule, f)[i], float) for f in EVENT_FIELDS},
    )


def vector_field(structure: ModelStructure) -> Callable:
    """``f(t, state, params)`` exactly as the simulator builds it: with the model structure bound
    where the vector field takes one (selectable rate-law forms)."""
    if "structure" in inspect.signature(culture_vector_field).parameters:
        return functools.partial(culture_vector_field, structure=structure)
    return culture_vector_field


def _event_groups(schedule: Schedule) -> list[tuple[float, list[int]]]:
    """Slots of one schedule grouped by time (identity operations dropped), in time order."""
    if np.ndim(schedule.time_h) != 1:
        raise SBMLExportError("export one unbatched schedule at a time (or a list of them)")
    times = np.asarray(schedule.time_h, float)
    codes = np.asarray(schedule.operation)
    groups: dict[float, list[int]] = {}
    for i in np.argsort(times, kind="stable"):
        if OPERATIONS[int(codes[i])] not in IDENTITY_OPERATIONS:
            groups.setdefault(float(times[i]), []).append(int(i))
    if not groups or OPERATIONS[int(codes[groups[min(groups)][0]])] != "seed":
        raise SBMLExportError("the schedule's first event must be the seed")
    if min(groups) != 0.0:
        raise SBMLExportError(f"the seed must be at time 0 h, got {min(groups)} h")
    return sorted(groups.items())


def _composed_jump(schedule: Schedule, slots: Sequence[int]) -> Callable:
    codes = [int(schedule.operation[i]) for i in slots]
    values = [_event_values(schedule, i) for i in slots]

    def jump(state, p):
        for code, event in zip(codes, values, strict=True):
            state = JUMP_MAPS[code](state, event, p)
        return state

    return jump


def _math(formula_or_expr) -> libsbml.ASTNode:
    text = formula_or_expr if isinstance(formula_or_expr, str) else to_infix(formula_or_expr)
    node = libsbml.parseL3Formula(text)
    if node is None:
        raise SBMLExportError(
            f"libsbml could not parse {text[:200]!r}: {libsbml.getLastParseL3Error()}"
        )
    return node


def _check(code: int, what: str) -> None:
    if code != libsbml.LIBSBML_OPERATION_SUCCESS:
        raise SBMLExportError(f"{what}: {libsbml.OperationReturnValue_toString(code)}")


def _notes(element, text: str) -> None:
    _check(
        element.setNotes(
            f'<body xmlns="http://www.w3.org/1999/xhtml"><p>{escape(text)}</p></body>'
        ),
        f"notes of {element.getId()}",
    )


def _annotate(element, tag: str, **attributes: object) -> None:
    attrs = " ".join(f'{k}="{escape(str(v), {chr(34): "&quot;"})}"' for k, v in attributes.items())
    _check(
        element.setAnnotation(
            f'<annotation><twin:{tag} xmlns:twin="{ANNOTATION_NS}" {attrs}/></annotation>'
        ),
        f"annotation of {element.getId()}",
    )


@dataclasses.dataclass(frozen=True)
class ExtraParameter:
    """A constant parameter added to the model (e.g. a population value for PEtab)."""

    id: str
    value: float
    unit: str
    note: str


@dataclasses.dataclass
class SBMLExport:
    """An exported model: the document, and where the twin's quantities are in it."""

    document: libsbml.SBMLDocument
    state_ids: CultureState
    observable_ids: tuple[str, ...]
    assay_ids: dict[str, str]
    event_times_h: tuple[float, ...]

    def to_string(self) -> str:
        return libsbml.writeSBMLToString(self.document)

    def errors(self) -> list[str]:
        """libsbml's consistency check: every message of severity error or fatal."""
        self.document.checkConsistency()
        log = self.document.getErrorLog()
        return [
            f"{e.getSeverityAsString()} {e.getErrorId()}: {e.getMessage().strip()}"
            for e in (log.getError(i) for i in range(log.getNumErrors()))
            if e.getSeverity() >= libsbml.LIBSBML_SEV_ERROR
        ]


def export_sbml(
    params: KineticParameters,
    schedules: Schedule | Sequence[Schedule],
    structure: ModelStructure = ModelStructure(),
    *,
    model_id: str = "cart_twin",
    batch_parameter: str = "batch_index",
    parameter_rules: Mapping[str, sp.Basic] | None = None,
    extra_parameters: Sequence[ExtraParameter] = (),
    assay_rules: bool = False,
) -> SBMLExport:
    """The twin's model with ``schedules``' unit operations as an SBML L3V2 document.

    **Arguments:**

    - ``params``: kinetic parameter values (natural units), written as constant parameters.
    - ``schedules``: one schedule, or several sharing the model (events gated by
      ``batch_parameter``, a constant parameter whose value selects the schedule, 0-based).
    - ``parameter_rules``: kinetic parameters given instead by an expression (sympy) of other
      parameters, written as assignment rules (donor effects in PEtab).
    - ``extra_parameters``: further constant parameters (the symbols those rules use).
    - ``assay_rules``: also write ``assay_<variable>``, each measured variable on its assay's
      Gaussian scale (:func:`twin.assays.to_assay_scale`).
    """
    many = not isinstance(schedules, Schedule)
    schedule_list = list(schedules) if many else [schedules]
    parameter_rules = dict(parameter_rules or {})
    unknown = sorted(set(parameter_rules) - set(PARAMETER_NAMES))
    if unknown:
        raise SBMLExportError(f"parameter_rules name unknown kinetic parameters {unknown}")

    document = libsbml.SBMLDocument(3, 2)
    model = document.createModel()
    model.setId(model_id)
    model.setName(f"cart-twin {_twin_version}: CAR-T culture kinetics and unit operations")
    _notes(
        model,
        f"Generated by cart-twin {_twin_version} (twin.interop.export_sbml) from the simulator's "
        f"own vector field, jump maps and observables; structure {structure}. Time in hours; "
        "cell compartments in millions of cells, vector in millions of transducing units.",
    )
    model.setTimeUnits(sbml_unit(model, "h"))
    model.setExtentUnits(sbml_unit(model, "Mcells"))
    model.setSubstanceUnits(sbml_unit(model, "Mcells"))
    compartment = model.createCompartment()
    compartment.setId(COMPARTMENT)
    compartment.setSpatialDimensions(0)
    compartment.setSize(1.0)
    compartment.setUnits("dimensionless")
    compartment.setConstant(True)

    # --- parameters ---------------------------------------------------------------------------
    specs = {spec.name: spec for spec in PARAMETER_TABLE}
    for name in PARAMETER_NAMES:
        spec = specs[name]
        parameter = model.createParameter()
        parameter.setId(name)
        parameter.setConstant(name not in parameter_rules)
        parameter.setValue(float(getattr(params, name)))
        unit = sbml_unit(model, spec.unit)
        if unit:
            parameter.setUnits(unit)
        _notes(parameter, f"{spec.description} [{spec.unit}]. Source: {spec.source}.")
        _annotate(
            parameter,
            "parameter",
            unit=spec.unit,
            transform=spec.transform,
            prior_sd=spec.prior_sd,
            default=spec.default,
        )
    for extra in extra_parameters:
        parameter = model.createParameter()
        parameter.setId(extra.id)
        parameter.setConstant(True)
        parameter.setValue(float(extra.value))
        unit = sbml_unit(model, extra.unit)
        if unit:
            parameter.setUnits(unit)
        _notes(parameter, extra.note)
    if many:
        parameter = model.createParameter()
        parameter.setId(batch_parameter)
        parameter.setConstant(True)
        parameter.setValue(0.0)
        parameter.setUnits("dimensionless")
        _notes(parameter, "selects which batch's schedule of unit operations runs (0-based)")
    for name, expr in parameter_rules.items():
        rule = model.createAssignmentRule()
        rule.setVariable(name)
        _check(rule.setMath(_math(expr)), f"rule for {name}")

    # --- state --------------------------------------------------------------------------------
    ids = state_ids(structure)
    state_symbols = jax.tree.map(symbols, ids)
    p_symbols = KineticParameters(**{n: symbols(np.asarray(n)) for n in PARAMETER_NAMES})
    flat_ids = [str(x) for x in _flat(ids)]
    field_of = {
        str(x): f.name
        for f in dataclasses.fields(CultureState)
        for x in np.ravel(getattr(ids, f.name))
    }
    # Initial values: the events at time 0 applied to the empty state, per schedule.
    groups = [_event_groups(s) for s in schedule_list]
    empty = jax.tree.map(lambda x: constant(np.zeros(np.shape(x))), empty_state(structure))
    initial_per_batch = [
        _flat(symbolic_call(_composed_jump(s, g[0][1]), empty, p_symbols))
        for s, g in zip(schedule_list, groups, strict=True)
    ]
    batch_symbol = sp.Symbol(batch_parameter)

    def per_batch(values: Sequence[sp.Basic]) -> sp.Basic:
        if len(values) == 1 or all(v == values[0] for v in values):
            return values[0]
        pieces = [(v, sp.Eq(batch_symbol, k)) for k, v in enumerate(values[:-1])]
        return sp.Piecewise(*pieces, (values[-1], True))

    for k, sid in enumerate(flat_ids):
        field = field_of[sid]
        unit = state_unit(field)
        initial = per_batch([values[k] for values in initial_per_batch])
        if unit in _SPECIES_UNITS:
            element = model.createSpecies()
            element.setCompartment(COMPARTMENT)
            element.setHasOnlySubstanceUnits(True)
            element.setBoundaryCondition(False)
            element.setSubstanceUnits(sbml_unit(model, unit))
            set_value = element.setInitialAmount
        else:
            element = model.createParameter()
            unit_id = sbml_unit(model, unit)
            if unit_id:
                element.setUnits(unit_id)
            set_value = element.setValue
        element.setId(sid)
        element.setConstant(False)
        if initial.is_Number:
            set_value(float(initial))
        else:
            set_value(0.0)
            assignment = model.createInitialAssignment()
            assignment.setSymbol(sid)
            _check(assignment.setMath(_math(initial)), f"initial value of {sid}")
        _notes(
            element,
            f"culture state {field} [{unit or 'dimensionless'}] (twin.kinetics.CultureState)",
        )
        _annotate(element, "state", field=field, unit=unit)

    # --- vector field: rate rules, common subexpressions as assignment rules ----------------------
    rates = _flat(
        symbolic_call(
            vector_field(structure), symbols(np.asarray("time")), state_symbols, p_symbols
        )
    )
    names = (sp.Symbol(f"vf_{i}") for i in range(10**6))
    shared, reduced = _inline_conditions(*sp.cse(rates, symbols=names, order="none"))
    for symbol, expr in shared:
        parameter = model.createParameter()
        parameter.setId(str(symbol))
        parameter.setConstant(False)
        _notes(parameter, "intermediate of the vector field (common subexpression)")
        rule = model.createAssignmentRule()
        rule.setVariable(str(symbol))
        _check(rule.setMath(_math(expr)), f"rule for {symbol}")
    for sid, rate in zip(flat_ids, reduced, strict=True):
        if rate == 0:
            continue
        rule = model.createRateRule()
        rule.setVariable(sid)
        _check(rule.setMath(_math(rate)), f"rate of {sid}")

    # --- unit operations: one event per batch and time ------------------------------------------
    event_times = []
    for b, (schedule, batch_groups) in enumerate(zip(schedule_list, groups, strict=True)):
        for time_h, slots in batch_groups[1:]:
            after = _flat(symbolic_call(_composed_jump(schedule, slots), state_symbols, p_symbols))
            changes = [
                (sid, v) for sid, v in zip(flat_ids, after, strict=True) if v != sp.Symbol(sid)
            ]
            if not changes:
                continue
            event_times.append(time_h)
            event = model.createEvent()
            suffix = re.sub(r"\W", "_", f"{time_h:g}")
            event.setId(f"ops_b{b}_t{suffix}" if many else f"ops_t{suffix}")
            operations = ", ".join(OPERATIONS[int(schedule.operation[i])] for i in slots)
            event.setName(f"{time_h:g} h: {operations}")
            event.setUseValuesFromTriggerTime(True)
            trigger = event.createTrigger()
            trigger.setPersistent(True)
            trigger.setInitialValue(True)
            condition = f"time >= {time_h!r}"
            if many:
                # Another batch's operations move (batch - b)^2 x OTHER_BATCH_DELAY_H past any
                # horizon. Not `&& batch == b`: a root-finding simulator (AMICI) turns that
                # equality into a root function that is identically zero and never fires it.
                offset = f"{OTHER_BATCH_DELAY_H!r} * ({batch_parameter} - {b})^2"
                condition = f"time >= {time_h!r} + {offset}"
            _check(trigger.setMath(_math(condition)), f"trigger of {event.getId()}")
            for sid, value in changes:
                assignment = event.createEventAssignment()
                assignment.setVariable(sid)
                _check(assignment.setMath(_math(value)), f"event assignment of {sid}")

    # --- observables ----------------------------------------------------------------------------
    observed = symbolic_call(observables, state_symbols)
    observable_ids = []
    for name, expr in observed.items():
        expr = np.asarray(expr, dtype=object)[()]
        observable_ids.append(name)
        if name in flat_ids:
            if expr != sp.Symbol(name):
                raise SBMLExportError(f"observable {name!r} clashes with a state variable")
            continue
        _add_rule(model, name, expr, OBSERVABLES[name], f"observable {name} (twin.observe)")
    assay_ids = {}
    if assay_rules:
        for variable in ASSAY_SCALES:
            z = symbolic_call(
                lambda v, var=variable: to_assay_scale(var, v), symbols(np.asarray(variable))
            )
            z = np.asarray(z, dtype=object)[()]
            assay_ids[variable] = f"assay_{variable}"
            scale, floor = ASSAY_SCALES[variable]
            _add_rule(
                model,
                assay_ids[variable],
                z,
                "",
                f"{variable} on its assay's Gaussian scale ({scale}, floor {floor}; twin.assays)",
            )
    return SBMLExport(
        document=document,
        state_ids=ids,
        observable_ids=tuple(observable_ids),
        assay_ids=assay_ids,
        event_times_h=tuple(sorted(set(event_times))),
    )


def _add_rule(model: libsbml.Model, name: str, expr: sp.Basic, unit: str, note: str) -> None:
    parameter = model.createParameter()
    parameter.setId(name)
    parameter.setConstant(False)
    unit_id = sbml_unit(model, unit)
    if unit_id:
        parameter.setUnits(unit_id)
    _notes(parameter, f"{note} [{unit or 'dimensionless'}]")
    rule = model.createAssignmentRule()
    rule.setVariable(name)
    _check(rule.setMath(_math(expr)), f"rule for {name}")
