"""Tables as text cells (what a CSV file holds), and conversion to and from `RunData`.

Cells stay strings until they have been validated, so nothing is silently coerced. Numbers are
written with ``repr`` precision (the shortest text that reads back as the same float), so a write
and read round trip is lossless.
"""

from __future__ import annotations

import dataclasses
import math
import re

import pandas as pd

from ._contract import COLUMNS, TABLES, TEXT_COLUMNS
from ._run_data import RunData

_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


@dataclasses.dataclass(frozen=True, eq=False)
class Table:
    """One table of a dataset as text cells, with where each row came from.

    ``frame`` has the contract's columns in contract order, every cell a ``str`` (``''`` = empty).
    A problem in row ``i`` is located as ``f"{name} {unit} {lines[i]}"``, e.g. ``events.csv line
    7`` (a CSV file, header = line 1) or ``events row 3`` (a table held in memory or in NetCDF).
    """

    kind: str
    name: str
    frame: pd.DataFrame
    lines: tuple[int, ...]
    unit: str = "line"

    def where(self, row: int) -> str:
        """Where row ``row`` (0-based) of ``frame`` is, in words."""
        return f"{self.name} {self.unit} {self.lines[row]}"


def decimal_problem(text: str) -> str | None:
    """Why ``text`` is not a finite decimal number such as ``12``, ``-0.5`` or ``2.5e7``."""
    if not _DECIMAL.fullmatch(text):
        if text.strip().lower().lstrip("+-") in ("nan", "inf", "infinity"):
            return "must be a finite number"
        if "," in text:
            return "is not a number (use '.' as the decimal separator)"
        return "is not a number"
    if not math.isfinite(float(text)):
        return "is too large (not a finite number)"
    return None


def format_number(value: float) -> str:
    """``''`` for NaN, else the shortest text that reads back as exactly ``value``."""
    return "" if math.isnan(value) else repr(float(value))


def tables_from_run_data(data: RunData, prefix: str = "") -> dict[str, Table]:
    """The tables as text cells, located as ``f"{prefix}{table} row {n}"`` (1-based)."""
    tables = {}
    for kind in TABLES:
        frame = getattr(data, kind).copy()
        for column in COLUMNS[kind]:
            if column in TEXT_COLUMNS:
                frame[column] = frame[column].fillna("")
            else:
                frame[column] = frame[column].map(format_number)
        frame = frame.astype(str)
        lines = tuple(range(1, len(frame) + 1))
        tables[kind] = Table(kind, f"{prefix}{kind}", frame, lines, unit="row")
    return tables


def run_data_from_tables(tables: dict[str, Table]) -> RunData:
    """Validated text tables as :class:`RunData` (numbers parsed, empty cells -> NaN)."""
    frames = {}
    for kind in TABLES:
        frame = tables[kind].frame.copy()
        for column in COLUMNS[kind]:
            if column not in TEXT_COLUMNS:
                frame[column] = [float(text) if text else math.nan for text in frame[column]]
        frames[kind] = frame
    return RunData(**frames)
