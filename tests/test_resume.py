"""A calibration killed with SIGKILL resumes from its checkpoints to the same result.

Three real runs of experiments/calibrate.py on four runs of the example data (minutes): one
uninterrupted, one killed as soon as its first optimizer start is checkpointed, and that one
resumed (``resume=true``, same folder). The resumed result must equal the uninterrupted one
bit for bit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from twin.data import read_run_data, write_run_data

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL_FIT = ["fit.n_starts=3", "fit.max_steps=6", "progress=false"]


def _command(run_dir: Path, data: Path, cache: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(REPO_ROOT / "experiments" / "calibrate.py"),
        f"data_dir={data}",
        f"hydra.run.dir={run_dir}",
        f"compilation_cache_dir={cache}",
        *SMALL_FIT,
        *extra,
    ]


@pytest.mark.slow
def test_killed_calibration_resumes_to_the_same_result(tmp_path):
    example = read_run_data(REPO_ROOT / "twin" / "data" / "example")
    data = write_run_data(example.select(example.run_ids[:4]), tmp_path / "data")
    cache = tmp_path / "jax_cache"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}

    whole = tmp_path / "whole"
    done = subprocess.run(_command(whole, data, cache), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        _command(killed, data, cache), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 3600  # a loaded machine compiles slowly
    while not list((killed / "checkpoints").glob("start_*.npz")):
        assert process.poll() is None, "finished before a checkpoint was seen"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "calibration.nc").exists()
    finished = len(list((killed / "checkpoints").glob("start_*.npz")))
    assert 1 <= finished < 3

    refused = subprocess.run(_command(killed, data, cache), env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "resume=true" in refused.stderr

    resumed = subprocess.run(
        _command(killed, data, cache, "resume=true"), env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    with (
        xr.open_dataset(whole / "calibration.nc") as a,
        xr.open_dataset(killed / "calibration.nc") as b,
    ):
        for name in ("estimate_unconstrained", "covariance", "donor_effect", "objective"):
            assert np.array_equal(a[name].values, b[name].values), name
        assert np.array_equal(a["fit_objective"].values, b["fit_objective"].values)
    assert not (killed / "checkpoints").exists()  # removed once the result is written
