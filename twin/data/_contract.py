"""The run-data contract (RUN_DATA.md) as constants: tables, columns, variables and units.

A dataset has three tables, ``runs``, ``events`` and ``measurements``, stored as ``<table>.csv``
files in one folder. Columns are listed in the order they are written.
"""

from __future__ import annotations

from twin.process._schedule import EVENT_FIELDS

TABLES: tuple[str, ...] = ("runs", "events", "measurements")

COLUMNS: dict[str, tuple[str, ...]] = {
    "runs": ("run_id", "donor_id"),
    "events": ("run_id", "time_h", "operation", *EVENT_FIELDS),
    "measurements": ("run_id", "time_h", "variable", "value"),
}

# Columns holding names; every other column holds numbers (an empty cell = not applicable).
TEXT_COLUMNS: frozenset[str] = frozenset({"run_id", "donor_id", "operation", "variable"})

TIME_UNITS = "h"  # time_h: hours since the batch's seed event

# Measured variables (measurements.csv ``variable``) and their units; "1" = fraction in [0, 1].
MEASUREMENT_UNITS: dict[str, str] = {
    "viable_cells": "cells",
    "viability": "1",
    "glucose_mM": "mM",
    "lactate_mM": "mM",
    "il2_IU_per_mL": "IU/mL",
    "car_pos_fraction": "1",
    "vcn_per_cell": "copies/cell",
}
MEASUREMENT_VARIABLES: tuple[str, ...] = tuple(MEASUREMENT_UNITS)
FRACTION_VARIABLES: frozenset[str] = frozenset({"viability", "car_pos_fraction"})

# Numeric fields of events.csv and their units (moi: transducing units per viable cell).
EVENT_FIELD_UNITS: dict[str, str] = {
    "cells": "cells",
    "viability": "1",
    "volume_ml": "mL",
    "moi": "TU/cell",
    "fraction": "1",
    "glucose_mM": "mM",
    "il2_IU_per_mL": "IU/mL",
}


def file_name(table: str) -> str:
    """The CSV file holding ``table`` inside a dataset folder."""
    return f"{table}.csv"
