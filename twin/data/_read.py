"""Reading a dataset folder of CSV files (RUN_DATA.md), reporting every problem at once."""

from __future__ import annotations

import codecs
import csv
import io
import math
from pathlib import Path

import pandas as pd

from twin._errors import TwinInputError
from twin.process._bounds import DEFAULT_BOUNDS, PlausibilityBounds

from ._check import ProblemReport, check_tables, suggestion
from ._contract import COLUMNS, TABLES, TEXT_COLUMNS, file_name
from ._run_data import RunData
from ._table import Table, run_data_from_tables

_OTHER_DELIMITERS = {";": "';' (semicolons)", "\t": "tabs", "|": "'|'"}


def read_run_data(path: str | Path, bounds: PlausibilityBounds = DEFAULT_BOUNDS) -> RunData:
    """Read and validate a dataset folder holding ``runs.csv``, ``events.csv`` and
    ``measurements.csv`` (UTF-8, a byte-order mark is accepted; comma-separated).

    **Raises:** :class:`~twin._errors.TwinInputError` listing every problem found, one line each,
    e.g. ``events.csv line 7, column moi: value '-1' must be >= 0`` (line 1 = the header).
    Values beyond the plausibility ``bounds`` are problems too.
    """
    folder = Path(path)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "not found"
        raise TwinInputError(f"data folder {what}: {folder}")
    report = ProblemReport()
    tables = {}
    for kind in TABLES:
        table = _read_table(folder, kind, report)
        if table is not None:
            tables[kind] = table
    check_tables(tables, report, bounds)
    problems = report.lines
    if problems:
        raise TwinInputError(f"{len(problems)} problems in run data {folder}", problems)
    return run_data_from_tables(tables)


def read_events_file(path: str | Path) -> tuple[pd.DataFrame, tuple[int, ...]]:
    """Read and validate one events table (``events.csv`` format, any file name), e.g. a single
    batch record to start an optimization from.

    **Returns:** ``(events, lines)``: the events (contract columns, numbers parsed, empty cells
    NaN, rows as recorded) and the file line of each row (header = line 1).

    **Raises:** :class:`~twin._errors.TwinInputError` listing every problem, one line each,
    named by the file, line and column, as :func:`read_run_data`.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise TwinInputError(f"events file {what}: {path}")
    report = ProblemReport()
    table = _read_table(path.parent, "events", report, name=path.name)
    if table is not None:
        check_tables({"events": table}, report)
    if report.lines:
        raise TwinInputError(f"{len(report.lines)} problems in events file {path}", report.lines)
    frame = table.frame.copy()
    for column in COLUMNS["events"]:
        if column not in TEXT_COLUMNS:
            frame[column] = [float(text) if text else math.nan for text in frame[column]]
    return frame, table.lines


def _read_table(
    folder: Path, kind: str, report: ProblemReport, name: str | None = None
) -> Table | None:
    """The file's cells as text, or ``None`` (with reported problems) if it cannot be used."""
    name = file_name(kind) if name is None else name
    path = folder / name
    if not path.is_file():
        report.file(kind, f"{name}: file not found in {folder}")
        return None
    raw = path.read_bytes()
    text = _decode(raw, name, kind, report)
    if text is None:
        return None
    columns = COLUMNS[kind]
    if not text.strip():
        report.file(kind, f"{name}: file is empty (expected a header line: {','.join(columns)})")
        return None
    try:
        records = _records(text)
    except csv.Error as error:
        report.file(kind, f"{name}: not a readable CSV file ({error})")
        return None
    header_line, header = records[0]
    if not _check_header(name, kind, header_line, header, report):
        return None
    rows, lines = [], []
    for line, cells in records[1:]:
        if len(cells) != len(header):
            message = f"expected {len(header)} comma-separated values, found {len(cells)}"
            report.line(kind, line, f"{name} line {line}: {message}")
        else:
            rows.append(cells)
            lines.append(line)
    frame = pd.DataFrame(rows, columns=header, dtype=str).loc[:, list(columns)]
    return Table(kind, name, frame, tuple(lines))


def _decode(raw: bytes, name: str, kind: str, report: ProblemReport) -> str | None:
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        report.file(kind, f"{name}: file is UTF-16 encoded; save it as UTF-8 (e.g. 'CSV UTF-8')")
        return None
    if b"\x00" in raw:
        line = raw.count(b"\n", 0, raw.index(b"\x00")) + 1
        message = "contains NUL bytes (UTF-16 or not a text file?); save it as UTF-8 CSV"
        report.line(kind, line, f"{name} line {line}: {message}")
        return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        byte = raw[error.start]
        report.line(
            kind,
            line,
            f"{name} line {line}: not UTF-8 encoded (byte 0x{byte:02x}); save the file as UTF-8",
        )
        return None


def _records(text: str) -> list[tuple[int, list[str]]]:
    """Non-blank CSV records with the line (1-based) each starts on."""
    reader = csv.reader(io.StringIO(text, newline=""))
    records = []
    end_of_previous = 0
    for cells in reader:
        if cells:
            records.append((end_of_previous + 1, cells))
        end_of_previous = reader.line_num
    return records


def _check_header(
    name: str, kind: str, line: int, header: list[str], report: ProblemReport
) -> bool:
    """Whether the header names exactly the contract's columns (in any order)."""
    columns = COLUMNS[kind]
    where = f"{name} line {line}"
    if len(header) == 1:
        for delimiter, described in _OTHER_DELIMITERS.items():
            if delimiter in header[0]:
                message = f"columns are separated by {described}; expected commas (',')"
                report.line(kind, line, f"{where}: {message}")
                return False
    ok = True
    for position, column in enumerate(header):
        label = column if column and column == column.strip() else repr(column)
        if column in columns and column in header[:position]:
            report.line(kind, line, f"{where}, column {label}: column appears twice")
            ok = False
        elif column not in columns:
            hint = suggestion(column, columns)
            message = f"unknown column{hint}; only {', '.join(columns)} are allowed"
            report.line(kind, line, f"{where}, column {label}: {message}")
            ok = False
    for column in columns:
        if column not in header:
            report.line(kind, line, f"{where}, column {column}: required column is missing")
            ok = False
    return ok
