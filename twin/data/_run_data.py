"""`RunData`: the three tables of a dataset (RUN_DATA.md) as pandas DataFrames."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from twin.process._schedule import EVENT_FIELDS, Event

from ._contract import COLUMNS, MEASUREMENT_VARIABLES, TEXT_COLUMNS


@dataclasses.dataclass(frozen=True, eq=False)
class RunData:
    """A dataset: ``runs``, ``events`` and ``measurements`` tables with the contract's columns.

    Text columns (``run_id``, ``donor_id``, ``operation``, ``variable``) hold strings; every other
    column holds float64, with NaN for an empty (not applicable) cell. ``time_h`` is in hours
    since the batch's seed; units of the other columns are in RUN_DATA.md.

    Rows are kept in a canonical order, so equal datasets have equal tables whatever order they
    were written in: runs as given; events grouped by run (in run order), in their recorded order
    within a run; measurements grouped by run, then by time, then by variable in contract order.
    The tables are not validated here: :func:`~twin.data.read_run_data` does that.
    """

    runs: pd.DataFrame
    events: pd.DataFrame
    measurements: pd.DataFrame

    def __post_init__(self) -> None:
        runs = _conform(self.runs, "runs")
        run_rank = {run_id: rank for rank, run_id in enumerate(runs["run_id"])}
        events = _conform(self.events, "events")
        events = _take(events, np.lexsort([_rank(events["run_id"], run_rank)]))
        measurements = _conform(self.measurements, "measurements")
        variable_rank = {name: rank for rank, name in enumerate(MEASUREMENT_VARIABLES)}
        order = np.lexsort(
            [
                _rank(measurements["variable"], variable_rank),
                measurements["time_h"].to_numpy(),
                _rank(measurements["run_id"], run_rank),
            ]
        )
        object.__setattr__(self, "runs", runs)
        object.__setattr__(self, "events", events)
        object.__setattr__(self, "measurements", _take(measurements, order))

    def __repr__(self) -> str:
        return (
            f"RunData({len(self.runs)} runs, {len(self.events)} events, "
            f"{len(self.measurements)} measurements)"
        )

    @property
    def run_ids(self) -> list[str]:
        """Run identifiers, in ``runs`` order."""
        return self.runs["run_id"].tolist()

    def donor_of(self, run_id: str) -> str:
        """The donor of a run's starting material."""
        self._require(run_id)
        return self.runs.loc[self.runs["run_id"] == run_id, "donor_id"].iloc[0]

    def events_for(self, run_id: str) -> list[Event]:
        """A run's batch record as events (empty cells become ``None``), in recorded order."""
        self._require(run_id)
        rows = self.events[self.events["run_id"] == run_id]
        return [
            Event(
                time_h=float(row.time_h),
                operation=row.operation,
                **{field: _optional(getattr(row, field)) for field in EVENT_FIELDS},
            )
            for row in rows.itertuples(index=False)
        ]

    def measurements_for(self, run_id: str) -> pd.DataFrame:
        """A run's measurement rows (all ``measurements`` columns), sorted by time and variable."""
        self._require(run_id)
        rows = self.measurements[self.measurements["run_id"] == run_id]
        return rows.reset_index(drop=True)

    def is_finished(self, run_id: str) -> bool:
        """Whether the run has been harvested (a run without ``harvest`` is still running)."""
        self._require(run_id)
        rows = self.events[self.events["run_id"] == run_id]
        return bool((rows["operation"] == "harvest").any())

    def select(self, run_ids: list[str]) -> RunData:
        """The runs ``run_ids`` with all their events and measurements (in ``runs`` order).

        **Raises:** ``KeyError`` naming a run that is not in the dataset.
        """
        for run_id in run_ids:
            self._require(run_id)
        keep = set(run_ids)
        return RunData(
            runs=self.runs[self.runs["run_id"].isin(keep)],
            events=self.events[self.events["run_id"].isin(keep)],
            measurements=self.measurements[self.measurements["run_id"].isin(keep)],
        )

    def as_of(self, time_h: float) -> RunData:
        """The dataset as it stood ``time_h`` hours after every run's seed: events and
        measurements up to and including ``time_h``. A run harvested later than that has no
        harvest event left, so it reads as still running (RUN_DATA.md), e.g. to forecast it.
        """
        if not math.isfinite(time_h) or time_h < 0:
            raise ValueError(f"time_h={time_h!r}: must be a finite number of hours >= 0")
        return RunData(
            runs=self.runs,
            events=self.events[self.events["time_h"] <= time_h],
            measurements=self.measurements[self.measurements["time_h"] <= time_h],
        )

    def _require(self, run_id: str) -> None:
        if run_id not in set(self.runs["run_id"]):
            raise KeyError(f"unknown run {run_id!r}")


def _conform(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """The frame with exactly the contract's columns, in contract order and dtypes."""
    columns = COLUMNS[table]
    if sorted(frame.columns) != sorted(columns):
        raise ValueError(
            f"the {table} table needs columns {list(columns)}, got {list(frame.columns)}"
        )
    dtypes = {column: str if column in TEXT_COLUMNS else "float64" for column in columns}
    return frame.loc[:, list(columns)].astype(dtypes)


def _rank(values: pd.Series, rank: dict[str, int]) -> np.ndarray:
    """Each value's rank; values without one sort last."""
    return values.map(rank).fillna(len(rank)).to_numpy()


def _take(frame: pd.DataFrame, order: np.ndarray) -> pd.DataFrame:
    return frame.iloc[order].reset_index(drop=True)


def _optional(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
