"""Validate a run-data folder (RUN_DATA.md) and print a short summary of it.

    python experiments/validate.py data_dir=path/to/folder

A relative ``data_dir`` is taken from the working directory (the shipped ``twin/data/...``
folders are also found from elsewhere). Bad data prints one
``error: ...`` line per problem (file, line, column, value) on stderr and exits with code 2.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

import twin.config as twin_config
from twin._cli import exit_on_input_error, resolve_user_path
from twin.data import MEASUREMENT_VARIABLES, RunData, read_run_data


@twin_config.with_configured_bounds
def run(cfg: DictConfig) -> str:
    """Read and validate ``cfg.data_dir``; return a summary of the dataset.

    **Raises:** :class:`~twin._errors.TwinInputError` listing every problem in the data.
    """
    data_dir = resolve_user_path(str(cfg.data_dir))
    return summarize(read_run_data(data_dir), data_dir)


def summarize(data: RunData, data_dir: Path) -> str:
    """A few lines describing a valid dataset: runs, donors, times and measurement counts."""
    run_ids = data.run_ids
    finished = sum(data.is_finished(run_id) for run_id in run_ids)
    donors = data.runs["donor_id"].nunique()
    times = [*data.events["time_h"], *data.measurements["time_h"]]
    counts = data.measurements["variable"].value_counts()
    width = max(map(len, MEASUREMENT_VARIABLES))
    lines = [
        f"run data: {data_dir}",
        f"runs: {len(run_ids)} ({finished} finished, {len(run_ids) - finished} running)",
        f"donors: {donors}",
        f"events: {len(data.events)}",
        f"time span: {min(times):g} to {max(times):g} h since seed",
        f"measurements: {len(data.measurements)}",
        *(f"  {name:<{width}}  {counts.get(name, 0)}" for name in MEASUREMENT_VARIABLES),
    ]
    return "\n".join(lines)


@hydra.main(config_path="../configs", config_name="validate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_input_error(cfg):
        print(run(cfg))


if __name__ == "__main__":
    main()
