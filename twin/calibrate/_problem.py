"""Run data as padded arrays: the calibration's input, one compile per padded shape.

Every run becomes one row of fixed-size arrays: its padded event schedule, its observation times
(the union of its measurement times, padded by repeating the last) and its observations on those
times with a mask. The run count, the number of times and the number of donors are rounded up to
a multiple of ``pad_multiple`` so that datasets of similar size share compiled code. Padding runs
copy the first run's schedule and observe nothing; padding donors have no runs.
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .._errors import TwinInputError
from ..assays import MEASURED_VARIABLES
from ..data import RunData
from ..process import Recipe, Schedule, build_schedule, stack_schedules


class CalibrationArrays(eqx.Module):
    """The data of a calibration as arrays (leading axis: runs, padded).

    **Fields:**

    - ``schedules``: each run's event schedule (padded to a common number of events).
    - ``time_h``: observation times (h since seed), ``[runs, times]``, increasing per run.
    - ``observed``: measured values in natural units (RUN_DATA.md), ``[runs, times, variables]``
      in :data:`~twin.assays.MEASURED_VARIABLES` order; 1.0 where nothing was measured.
    - ``mask``: whether each entry of ``observed`` was measured.
    - ``donor_index``: each run's donor (index into the problem's ``donor_ids``, padded).
    """

    schedules: Schedule
    time_h: Float[Array, "runs times"]
    observed: Float[Array, "runs times variables"]
    mask: Bool[Array, "runs times variables"]
    donor_index: Int[Array, " runs"]

    @property
    def n_runs(self) -> int:
        return self.time_h.shape[0]


@dataclasses.dataclass(frozen=True, eq=False)
class CalibrationProblem:
    """Padded arrays plus the names that the padding hides.

    ``run_ids`` and ``donor_ids`` list the real runs and donors: runs ``[0, len(run_ids))`` of
    ``arrays`` are real, the rest padding; likewise donors up to ``n_donors_padded``.
    """

    arrays: CalibrationArrays
    run_ids: tuple[str, ...]
    donor_ids: tuple[str, ...]
    n_donors_padded: int

    @property
    def n_observations(self) -> int:
        return int(np.asarray(self.arrays.mask).sum())

    def observation_counts(self) -> dict[str, int]:
        """Number of measurements of each assay."""
        counts = np.asarray(self.arrays.mask).sum(axis=(0, 1))
        return {v: int(c) for v, c in zip(MEASURED_VARIABLES, counts, strict=True)}


def padded_size(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (at least ``multiple``)."""
    return max(multiple, multiple * math.ceil(n / multiple))


def build_problem(
    data: RunData,
    *,
    pad_multiple: int = 8,
    medium_glucose_mM: float = Recipe.medium_glucose_mM,
    medium_il2_IU_per_mL: float = Recipe.medium_il2_IU_per_mL,
) -> CalibrationProblem:
    """Padded calibration arrays from a validated dataset.

    Seed, exchange and feed events without a medium composition use ``medium_glucose_mM`` (mM)
    and ``medium_il2_IU_per_mL`` (IU/mL), the default recipe's medium unless given. A running
    batch (no harvest) whose last measurement is later than its last event is simulated up to
    that measurement.

    **Raises:** :class:`~twin.TwinInputError` if the dataset has no measurements at all.
    """
    if pad_multiple < 1:
        raise TwinInputError(f"calibration.pad_multiple={pad_multiple!r}: must be >= 1")
    if data.measurements.empty:
        raise TwinInputError("the run data has no measurements: nothing to calibrate against")
    run_ids = tuple(data.run_ids)
    donor_ids = tuple(dict.fromkeys(data.runs["donor_id"]))
    donor_position = {donor: i for i, donor in enumerate(donor_ids)}
    n_runs = padded_size(len(run_ids), pad_multiple)
    variable_position = {v: j for j, v in enumerate(MEASURED_VARIABLES)}

    run_times = []
    for run_id in run_ids:
        times = np.unique(data.measurements_for(run_id)["time_h"].to_numpy(float))
        run_times.append(times if times.size else np.zeros(1))
    n_times = padded_size(max(t.size for t in run_times), pad_multiple)
    n_events = padded_size(max(len(data.events_for(r)) for r in run_ids) + 1, pad_multiple)

    time_h = np.zeros((n_runs, n_times))
    observed = np.ones((n_runs, n_times, len(MEASURED_VARIABLES)))
    mask = np.zeros(observed.shape, bool)
    donor_index = np.zeros(n_runs, np.int32)
    schedules = []
    for i, run_id in enumerate(run_ids):
        times = run_times[i]
        time_h[i] = np.concatenate([times, np.full(n_times - times.size, times[-1])])
        rows = data.measurements_for(run_id)
        columns = rows["variable"].map(variable_position).to_numpy()
        positions = np.searchsorted(times, rows["time_h"].to_numpy(float))
        observed[i, positions, columns] = rows["value"].to_numpy(float)
        mask[i, positions, columns] = True
        donor_index[i] = donor_position[data.donor_of(run_id)]
        schedule = build_schedule(
            data.events_for(run_id),
            medium_glucose_mM=medium_glucose_mM,
            medium_il2_IU_per_mL=medium_il2_IU_per_mL,
            n_events=n_events,
        )
        schedules.append(_extend_to(schedule, float(times[-1])))
    time_h[len(run_ids) :] = time_h[0]
    schedules += [schedules[0]] * (n_runs - len(run_ids))
    arrays = CalibrationArrays(
        schedules=stack_schedules(schedules),
        time_h=jnp.asarray(time_h),
        observed=jnp.asarray(observed),
        mask=jnp.asarray(mask),
        donor_index=jnp.asarray(donor_index),
    )
    return CalibrationProblem(
        arrays=arrays,
        run_ids=run_ids,
        donor_ids=donor_ids,
        n_donors_padded=padded_size(len(donor_ids), pad_multiple),
    )


def _extend_to(schedule: Schedule, end_time_h: float) -> Schedule:
    """Move the trailing no-op slots to ``end_time_h`` if that is later than the last event, so
    the simulation reaches a running batch's latest measurement."""
    times = np.asarray(schedule.time_h)
    operations = np.asarray(schedule.operation)
    last_event = int(np.flatnonzero(operations)[-1])
    if end_time_h <= times[last_event]:
        return schedule
    times = times.copy()
    times[last_event + 1 :] = end_time_h
    return eqx.tree_at(lambda s: s.time_h, schedule, jnp.asarray(times))
