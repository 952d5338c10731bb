"""Validation of a dataset's text tables against the run-data contract (RUN_DATA.md).

Every problem is collected (not just the first) as one line that names the file, the line and
the column, e.g. ``events.csv line 7, column moi: value '-1' must be >= 0``. Batch-record rules
(seed and harvest, event order, which fields an operation takes, ranges) come from
:func:`twin.process._schedule.check_events`; this module maps its findings back to table rows.
"""

from __future__ import annotations

import difflib
import math
import re
from collections import defaultdict

from twin.process._bounds import DEFAULT_BOUNDS, PlausibilityBounds
from twin.process._schedule import EVENT_FIELDS, Event, check_events

from ._contract import COLUMNS, FRACTION_VARIABLES, MEASUREMENT_VARIABLES, TABLES
from ._run_data import RunData
from ._table import Table, decimal_problem, tables_from_run_data


class ProblemReport:
    """Problems found in a dataset, one line each, listed in file, line and column order."""

    def __init__(self) -> None:
        self._entries: list[tuple[tuple[int, int, int], str]] = []
        self._flagged_cells: set[tuple[str, int, str]] = set()

    @property
    def lines(self) -> list[str]:
        return [text for _, text in sorted(self._entries, key=lambda entry: entry[0])]

    def file(self, kind: str, text: str) -> None:
        """A problem with a whole file (missing, empty, unreadable, wrong delimiter...)."""
        self._entries.append(((TABLES.index(kind), -1, -1), text))

    def line(self, kind: str, line: int, text: str) -> None:
        """A problem with a line of a file as a whole (``text`` includes the location)."""
        self._entries.append(((TABLES.index(kind), line, -1), text))

    def row(self, table: Table, row: int, message: str) -> None:
        """A problem with a row as a whole."""
        self.line(table.kind, table.lines[row], f"{table.where(row)}: {message}")

    def cell(self, table: Table, row: int, column: str, message: str) -> None:
        """A problem with one cell; only the first problem found in a cell is reported."""
        if (table.kind, row, column) in self._flagged_cells:
            return
        self._flagged_cells.add((table.kind, row, column))
        value = table.frame[column].iat[row]
        key = (TABLES.index(table.kind), table.lines[row], COLUMNS[table.kind].index(column))
        self._entries.append(
            (key, f"{table.where(row)}, column {column}: value {value!r} {message}")
        )


def check_tables(
    tables: dict[str, Table], report: ProblemReport, bounds: PlausibilityBounds = DEFAULT_BOUNDS
) -> None:
    """Check the tables that could be read; cross-table checks need all three. Values beyond
    the plausibility ``bounds`` (shared with the recipe checks) are problems too."""
    for table in tables.values():
        _check_spaces(table, report)
    harvests = _check_events(tables["events"], report, bounds) if "events" in tables else {}
    if "runs" in tables:
        _check_runs(tables["runs"], report)
    if "measurements" in tables:
        _check_measurements(tables["measurements"], harvests, report, bounds)
    if set(tables) == set(TABLES):
        _check_run_ids_match(tables, report)


def suggestion(name: str, choices: tuple[str, ...]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or ``''``."""
    close = difflib.get_close_matches(name.strip(), choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_spaces(table: Table, report: ProblemReport) -> None:
    for column in table.frame.columns:
        for row, text in enumerate(table.frame[column]):
            if text != text.strip():
                report.cell(table, row, column, "has leading or trailing spaces")


def _number(
    table: Table, row: int, column: str, report: ProblemReport, *, required: bool
) -> float | None:
    """The cell's number; ``None`` (and a reported problem, if any) when there is none."""
    text = table.frame[column].iat[row]
    if not text:
        if required:
            report.cell(table, row, column, "is empty (a number is required)")
        return None
    problem = decimal_problem(text)
    if problem:
        report.cell(table, row, column, problem)
        return None
    return float(text)


# Identifiers end up in file names (``fan_<run_id>.png``) and netCDF coordinates: letters,
# digits, ``.``, ``_`` and ``-`` only, starting with a letter or digit (no path separators,
# no ``..``, no hidden files), at most 64 characters.
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def identifier_problem(text: str) -> str | None:
    """Why ``text`` is not a path-safe identifier, or ``None`` if it is one."""
    if _IDENTIFIER.fullmatch(text) and ".." not in text:
        return None
    return (
        "is not a safe identifier (use 1-64 letters, digits, '.', '_' or '-', starting with a "
        "letter or digit, no '..'; it becomes part of file names)"
    )


def _check_identifier(table: Table, row: int, column: str, report: ProblemReport) -> bool:
    text = table.frame[column].iat[row]
    if not text:
        kind = "run" if column == "run_id" else "donor"
        report.cell(table, row, column, f"is empty (a {kind} identifier is required)")
        return False
    problem = identifier_problem(text) if text == text.strip() else None
    if problem:
        report.cell(table, row, column, problem)
        return False
    return True


def _check_run_id(table: Table, row: int, report: ProblemReport) -> bool:
    return _check_identifier(table, row, "run_id", report)


def _check_runs(table: Table, report: ProblemReport) -> None:
    if table.frame.empty:
        report.file("runs", f"{table.name}: no runs (the table has no rows)")
    first_row: dict[str, int] = {}
    for row, (run_id, _) in enumerate(table.frame.itertuples(index=False)):
        if _check_run_id(table, row, report):
            if run_id in first_row:
                line = table.lines[first_row[run_id]]
                report.cell(table, row, "run_id", f"is listed twice (also on line {line})")
            first_row.setdefault(run_id, row)
        _check_identifier(table, row, "donor_id", report)


def _check_events(
    table: Table, report: ProblemReport, bounds: PlausibilityBounds
) -> dict[str, tuple[float, str]]:
    """Check each run's events; returns each run's harvest time (h) and where it is recorded."""
    rows_of_run: dict[str, list[int]] = defaultdict(list)
    first_row: dict[tuple[str, ...], int] = {}
    for row, cells in enumerate(table.frame.itertuples(index=False, name=None)):
        if cells in first_row:
            report.row(table, row, f"duplicate of line {table.lines[first_row[cells]]}")
        elif _check_run_id(table, row, report):
            rows_of_run[cells[0]].append(row)
        first_row.setdefault(cells, row)

    harvests = {}
    for run_id, rows in rows_of_run.items():
        events = [_event(table, row, report) for row in rows]
        for problem in check_events(events, bounds=bounds):
            report.cell(table, rows[problem.index], problem.field, problem.message)
        for row, event in zip(rows, events, strict=True):
            if event.operation == "harvest" and not math.isnan(event.time_h):
                harvests.setdefault(run_id, (event.time_h, table.where(row)))
    return harvests


def _event(table: Table, row: int, report: ProblemReport) -> Event:
    """The row as an event; a number that does not parse is reported and read as missing."""
    time_h = _number(table, row, "time_h", report, required=True)
    fields = {field: _number(table, row, field, report, required=False) for field in EVENT_FIELDS}
    operation = table.frame["operation"].iat[row]
    return Event(time_h=math.nan if time_h is None else time_h, operation=operation, **fields)


def _check_measurements(
    table: Table,
    harvests: dict[str, tuple[float, str]],
    report: ProblemReport,
    bounds: PlausibilityBounds,
) -> None:
    first_row: dict[tuple[str, float, str], int] = {}
    for row, (run_id, _, variable, _) in enumerate(table.frame.itertuples(index=False)):
        _check_run_id(table, row, report)
        time_h = _number(table, row, "time_h", report, required=True)
        if time_h is not None and time_h < 0:
            report.cell(table, row, "time_h", "must be >= 0 (hours since seed)")
        elif time_h is not None and time_h > bounds.max_time_h:
            report.cell(table, row, "time_h", bounds.limit_message("time_h", bounds.max_time_h))
        if run_id in harvests and time_h is not None and time_h > harvests[run_id][0]:
            harvest_h, harvest_where = harvests[run_id]
            message = f"is after the run's harvest at {harvest_h:g} h ({harvest_where})"
            report.cell(table, row, "time_h", message)
        if variable not in MEASUREMENT_VARIABLES:
            report.cell(
                table,
                row,
                "variable",
                "is not a known variable" + suggestion(variable, MEASUREMENT_VARIABLES),
            )
        elif time_h is not None:
            key = (run_id, time_h, variable)
            if key in first_row:
                line = table.lines[first_row[key]]
                report.cell(table, row, "variable", f"is measured twice at this time (line {line})")
            first_row.setdefault(key, row)
        value = _number(table, row, "value", report, required=True)
        if value is None:
            continue
        if variable in FRACTION_VARIABLES and not 0.0 <= value <= 1.0:
            report.cell(table, row, "value", f"must be a fraction in [0, 1] for {variable}")
        elif value < 0:
            report.cell(table, row, "value", "must be >= 0")
        elif (limit := bounds.measurement_limit(variable)) is not None and value > limit:
            report.cell(
                table, row, "value", f"{bounds.limit_message(variable, limit)} for {variable}"
            )


def _check_run_ids_match(tables: dict[str, Table], report: ProblemReport) -> None:
    runs = tables["runs"]
    listed = set(runs.frame["run_id"])
    with_events = set(tables["events"].frame["run_id"])
    for row, run_id in enumerate(runs.frame["run_id"]):
        if run_id and run_id not in with_events:
            report.cell(
                runs, row, "run_id", f"has no events in {tables['events'].name} (a seed at least)"
            )
    for kind in ("events", "measurements"):
        table = tables[kind]
        rows_of_run: dict[str, list[int]] = defaultdict(list)
        for row, run_id in enumerate(table.frame["run_id"]):
            if run_id and run_id not in listed:
                rows_of_run[run_id].append(row)
        for rows in rows_of_run.values():
            count = f"{len(rows)} row{'s' if len(rows) > 1 else ''}"
            report.cell(table, rows[0], "run_id", f"is not listed in {runs.name} ({count})")


def run_data_problems(
    data: RunData, prefix: str = "", bounds: PlausibilityBounds = DEFAULT_BOUNDS
) -> list[str]:
    """Every contract problem in ``data``, rows located as ``f"{prefix}{table} row {n}"``."""
    report = ProblemReport()
    check_tables(tables_from_run_data(data, prefix), report, bounds)
    return report.lines
