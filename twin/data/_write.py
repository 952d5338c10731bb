"""Writing a dataset folder of CSV files (RUN_DATA.md) atomically."""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from twin._atomic import respect_umask
from twin._errors import TwinInputError

from ._check import run_data_problems
from ._contract import TABLES, file_name
from ._run_data import RunData
from ._table import tables_from_run_data


def write_run_data(
    data: RunData, path: str | Path, *, extra_files: Mapping[str, str] | None = None
) -> Path:
    """Write ``data`` as a dataset folder (``runs.csv``, ``events.csv``, ``measurements.csv``).

    Columns are written in contract order, numbers with ``repr`` precision (lossless), empty
    cells for NaN. The files are written to a temporary folder next to ``path``, which then
    replaces ``path``: readers never see a half-written dataset. An existing ``path`` is replaced
    only if it holds nothing but those files (and files named in ``extra_files``).

    ``extra_files`` (file name -> text) are written into the folder alongside, in the same
    atomic step: e.g. the true parameters and the config of a generated dataset.

    **Returns:** the folder written. **Raises:** :class:`~twin._errors.TwinInputError` if ``data``
    breaks the contract (nothing is written) or ``path`` holds other files.
    """
    target = Path(path)
    problems = run_data_problems(data)
    if problems:
        raise TwinInputError(f"refusing to write invalid run data to {target}", problems)
    extra_files = dict(extra_files or {})
    _check_replaceable(target, set(extra_files))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        for kind, table in tables_from_run_data(data).items():
            with open(staging / file_name(kind), "w", encoding="utf-8", newline="") as stream:
                writer = csv.writer(stream, lineterminator="\n")
                writer.writerow(table.frame.columns)
                writer.writerows(table.frame.itertuples(index=False, name=None))
        for name, text in extra_files.items():
            (staging / name).write_text(text, encoding="utf-8")
        respect_umask(staging, directory=True)
        _replace_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_replaceable(target: Path, also_own: set[str]) -> None:
    if not target.exists():
        return
    if not target.is_dir():
        raise TwinInputError(f"cannot write run data to {target}: it is a file, not a folder")
    own_files = {file_name(kind) for kind in TABLES} | also_own
    others = sorted(p.name for p in target.iterdir() if p.name not in own_files)
    if others:
        listed = ", ".join(others)
        raise TwinInputError(f"refusing to replace {target}: it holds other files too ({listed})")


def _replace_folder(staging: Path, target: Path) -> None:
    """Move ``staging`` to ``target``, swapping out an existing ``target``."""
    if not target.exists():
        os.rename(staging, target)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    previous = trash / target.name
    try:
        os.rename(target, previous)
        os.rename(staging, target)
    except OSError:
        if previous.exists():
            os.rename(previous, target)
        trash.rmdir()
        raise
    shutil.rmtree(trash)
