"""Event schedules: the one representation of "what the platform did" (or will do).

A recipe (Hydra config) and a batch record (events.csv, see RUN_DATA.md) both become a list of
:class:`Event` objects, which are checked once by :func:`check_events` and then packed into a
fixed-length, padded :class:`Schedule` of arrays that the simulator scans over. Padding slots are
``noop`` events placed at the last event's time (zero-length segments), so schedules of different
recipes stack and ``vmap`` together.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ._bounds import DEFAULT_BOUNDS, PlausibilityBounds

# The operation tables are views of the registry of unit operations (one class each).
from ._operations import (
    EVENT_FIELDS as EVENT_FIELDS,
    OPERATION_CODE as OPERATION_CODE,
    OPERATIONS as OPERATIONS,
    OPTIONAL_FIELDS as OPTIONAL_FIELDS,
    RECORDED_OPERATIONS as RECORDED_OPERATIONS,
    REQUIRED_FIELDS as REQUIRED_FIELDS,
    UNIT_OPERATION,
)

# Fields that are fractions in [0, 1]; every other numeric field must be >= 0.
FRACTION_FIELDS: frozenset[str] = frozenset({"viability", "fraction"})


@dataclasses.dataclass(frozen=True)
class Event:
    """One unit operation at a time (hours since seeding). Unused fields are ``None``."""

    time_h: float
    operation: str
    cells: float | None = None
    viability: float | None = None
    volume_ml: float | None = None
    moi: float | None = None
    fraction: float | None = None
    glucose_mM: float | None = None
    il2_IU_per_mL: float | None = None

    def value(self, field: str) -> float | None:
        return getattr(self, field)


@dataclasses.dataclass(frozen=True)
class EventProblem:
    """A problem found in an event list: ``index`` is the event's position (0-based)."""

    index: int
    field: str
    value: object
    message: str

    def __str__(self) -> str:
        return f"event {self.index} ({self.field}={self.value!r}): {self.message}"


def check_events(
    events: Sequence[Event],
    *,
    capacity_ml: float | None = None,
    require_harvest: bool = False,
    bounds: PlausibilityBounds = DEFAULT_BOUNDS,
) -> list[EventProblem]:
    """Check a batch's event list against the run-data contract.

    Returns every problem found (an empty list means the events are valid): unknown operations,
    missing or out-of-range values, fields an operation does not take, no seed or a second seed,
    seed not first at time 0, events out of time order, events after harvest, values beyond
    the plausibility ``bounds`` and a culture volume that would exceed the cartridge
    (``capacity_ml``, else ``bounds.cartridge_capacity_ml``).
    """
    if capacity_ml is None:
        capacity_ml = bounds.cartridge_capacity_ml
    problems: list[EventProblem] = []

    def add(i: int, field: str, value: object, message: str) -> None:
        problems.append(EventProblem(i, field, value, message))

    if not events:
        add(0, "operation", None, "a batch needs at least a seed event")
        return problems
    seeds = [i for i, e in enumerate(events) if e.operation == "seed"]
    if not seeds:
        add(0, "operation", events[0].operation, "no seed event: every run needs exactly one")
    for i in seeds[1:]:
        add(i, "operation", "seed", "a second seed event: every run needs exactly one")
    if seeds and seeds[0] != 0:
        add(seeds[0], "operation", "seed", "the seed must be the first event")
    harvests = [i for i, e in enumerate(events) if e.operation == "harvest"]
    for i in harvests[1:]:
        add(i, "operation", "harvest", "a second harvest event: at most one is allowed")
    if require_harvest and not harvests:
        add(len(events) - 1, "operation", events[-1].operation, "no harvest event")
    if harvests and harvests[0] != len(events) - 1:
        for i in range(harvests[0] + 1, len(events)):
            if events[i].operation != "harvest":
                add(i, "operation", events[i].operation, "event after harvest")

    previous_time = -math.inf
    for i, event in enumerate(events):
        op = event.operation
        t = event.time_h
        if not _is_finite_number(t):
            add(i, "time_h", t, "must be a finite number")
        else:
            if t < 0:
                add(i, "time_h", t, "must be >= 0")
            elif t > bounds.max_time_h:
                add(i, "time_h", t, bounds.limit_message("time_h", bounds.max_time_h))
            elif op == "seed" and t != 0:
                add(i, "time_h", t, "the seed event must be at time 0")
            elif t < previous_time:
                add(i, "time_h", t, f"events out of order (previous event at {previous_time} h)")
            previous_time = max(previous_time, t)
        if op not in REQUIRED_FIELDS:
            add(i, "operation", op, f"unknown operation (expected one of {list(REQUIRED_FIELDS)})")
            continue
        allowed = REQUIRED_FIELDS[op] + OPTIONAL_FIELDS[op]
        for field in EVENT_FIELDS:
            value = event.value(field)
            if value is None:
                if field in REQUIRED_FIELDS[op]:
                    add(i, field, None, f"required for {op} events")
                continue
            if field not in allowed:
                add(i, field, value, f"not applicable to {op} events (leave it empty)")
                continue
            if not _is_finite_number(value):
                add(i, field, value, "must be a finite number")
            elif field in FRACTION_FIELDS and not 0.0 <= value <= 1.0:
                add(i, field, value, "must be a fraction in [0, 1]")
            elif value < 0:
                add(i, field, value, "must be >= 0")
            elif field in UNIT_OPERATION[op].positive_fields and value == 0:
                add(i, field, value, f"a {op} needs {field} > 0")
            elif (limit := bounds.event_limit(field)) is not None and value > limit:
                add(i, field, value, bounds.limit_message(field, limit))
    if not problems:
        problems.extend(_check_volumes(events, capacity_ml))
    return problems


def _check_volumes(events: Sequence[Event], capacity_ml: float | None) -> list[EventProblem]:
    problems = []
    volume = 0.0
    for i, event in enumerate(events):
        if event.operation == "seed":
            volume = event.volume_ml
        elif event.operation == "feed":
            volume += event.volume_ml
        elif event.operation == "sample":
            if event.volume_ml >= volume:
                problems.append(
                    EventProblem(
                        i,
                        "volume_ml",
                        event.volume_ml,
                        f"sample volume is not less than the culture volume ({volume:g} mL)",
                    )
                )
                return problems
            volume -= event.volume_ml
        if capacity_ml is not None and volume > capacity_ml:
            problems.append(
                EventProblem(
                    i,
                    "volume_ml",
                    event.value("volume_ml"),
                    f"culture volume would reach {volume:g} mL, beyond the cartridge's "
                    f"{capacity_ml:g} mL",
                )
            )
            return problems
    return problems


def _is_finite_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


class Schedule(eqx.Module):
    """A padded, fixed-length event schedule (arrays of shape ``(events,)``; batched: leading axes).

    **Fields:** ``time_h`` (hours since seed), ``operation`` (codes of :data:`OPERATIONS`), and one
    array per numeric event field (``cells`` in cells, ``viability`` fraction, ``volume_ml``,
    ``moi`` TU per viable cell, ``fraction`` of medium exchanged, ``glucose_mM`` and
    ``il2_IU_per_mL`` of the fresh medium). Fields an event does not use hold 0, except the
    medium composition, which always holds the concentration actually used.
    """

    time_h: Float[Array, "*batch events"]
    operation: Int[Array, "*batch events"]
    cells: Float[Array, "*batch events"]
    viability: Float[Array, "*batch events"]
    volume_ml: Float[Array, "*batch events"]
    moi: Float[Array, "*batch events"]
    fraction: Float[Array, "*batch events"]
    glucose_mM: Float[Array, "*batch events"]
    il2_IU_per_mL: Float[Array, "*batch events"]

    @property
    def n_events(self) -> int:
        return self.time_h.shape[-1]

    @property
    def end_time_h(self) -> Float[Array, "*batch"]:
        """Time of the last event (the harvest, or the last recorded event of a running batch)."""
        return self.time_h[..., -1]


def build_schedule(
    events: Sequence[Event],
    *,
    medium_glucose_mM: float,
    medium_il2_IU_per_mL: float,
    n_events: int | None = None,
) -> Schedule:
    """Pack checked events into a :class:`Schedule`, padded with no-ops to ``n_events`` slots.

    Events that take a fresh-medium composition (seed, exchange, feed) and leave it empty use
    the given default medium.

    **Raises:** ``ValueError`` if the events are invalid or do not fit in ``n_events``.
    """
    problems = check_events(events)
    if problems:
        raise ValueError("invalid events: " + "; ".join(str(p) for p in problems))
    n = len(events) if n_events is None else n_events
    if n < len(events):
        raise ValueError(f"n_events={n} is smaller than the number of events ({len(events)})")
    columns = {field: np.zeros(n) for field in EVENT_FIELDS}
    medium = {"glucose_mM": medium_glucose_mM, "il2_IU_per_mL": medium_il2_IU_per_mL}
    operation = np.zeros(n, dtype=np.int32)
    time_h = np.full(n, float(events[-1].time_h))
    for i, event in enumerate(events):
        time_h[i] = event.time_h
        operation[i] = OPERATION_CODE[event.operation]
        for field in EVENT_FIELDS:
            value = event.value(field)
            if value is not None:
                columns[field][i] = value
        for field, default in medium.items():
            if event.value(field) is None and field in OPTIONAL_FIELDS[event.operation]:
                columns[field][i] = default
    return Schedule(
        time_h=jnp.asarray(time_h),
        operation=jnp.asarray(operation),
        **{field: jnp.asarray(values) for field, values in columns.items()},
    )


def pad_schedule(schedule: Schedule, n_events: int) -> Schedule:
    """Append no-op slots (at the schedule's end time) up to ``n_events``."""
    extra = n_events - schedule.n_events
    if extra < 0:
        raise ValueError(f"cannot pad a schedule of {schedule.n_events} events to {n_events}")
    if extra == 0:
        return schedule

    def pad(x, fill):
        widths = [(0, 0)] * (x.ndim - 1) + [(0, extra)]
        return jnp.pad(x, widths, constant_values=fill)

    end = schedule.end_time_h
    time_h = jnp.concatenate(
        [schedule.time_h, jnp.broadcast_to(end[..., None], end.shape + (extra,))], axis=-1
    )
    fields = {f: pad(getattr(schedule, f), 0) for f in EVENT_FIELDS}
    return Schedule(time_h=time_h, operation=pad(schedule.operation, 0), **fields)


def stack_schedules(schedules: Sequence[Schedule]) -> Schedule:
    """Stack single-batch schedules into one batched schedule (padding to the longest)."""
    if not schedules:
        raise ValueError("stack_schedules needs at least one schedule")
    n = max(s.n_events for s in schedules)
    padded = [pad_schedule(s, n) for s in schedules]
    return Schedule(
        time_h=jnp.stack([s.time_h for s in padded]),
        operation=jnp.stack([s.operation for s in padded]),
        **{f: jnp.stack([getattr(s, f) for s in padded]) for f in EVENT_FIELDS},
    )


def schedule_to_events(schedule: Schedule) -> list[Event]:
    """Unpack one (unbatched) schedule into events, dropping no-op padding."""
    if schedule.time_h.ndim != 1:
        raise ValueError("schedule_to_events takes one unbatched schedule")
    events = []
    arrays = {f: np.asarray(getattr(schedule, f)) for f in EVENT_FIELDS}
    for i, code in enumerate(np.asarray(schedule.operation)):
        op = OPERATIONS[int(code)]
        if op == "noop":
            continue
        used = REQUIRED_FIELDS[op] + OPTIONAL_FIELDS[op]
        values = {f: float(arrays[f][i]) for f in used}
        events.append(Event(time_h=float(schedule.time_h[i]), operation=op, **values))
    return events
