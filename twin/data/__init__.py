"""Run data: the twin's public data contract (RUN_DATA.md) — reading, validating, writing.

A dataset is a folder of three CSV files (``runs.csv``, ``events.csv``, ``measurements.csv``),
held in memory as :class:`RunData`, with an equivalent single NetCDF file / xarray Dataset.
"""

from ._contract import (
    COLUMNS,
    EVENT_FIELD_UNITS,
    FRACTION_VARIABLES,
    MEASUREMENT_UNITS,
    MEASUREMENT_VARIABLES,
    TABLES,
    TIME_UNITS,
)
from ._read import read_events_file, read_run_data
from ._run_data import RunData
from ._write import write_run_data
from ._xarray import read_netcdf, run_data_from_xarray, run_data_to_xarray, write_netcdf

__all__ = [
    "COLUMNS",
    "EVENT_FIELD_UNITS",
    "FRACTION_VARIABLES",
    "MEASUREMENT_UNITS",
    "MEASUREMENT_VARIABLES",
    "TABLES",
    "TIME_UNITS",
    "RunData",
    "read_events_file",
    "read_netcdf",
    "read_run_data",
    "run_data_from_xarray",
    "run_data_to_xarray",
    "write_netcdf",
    "write_run_data",
]
