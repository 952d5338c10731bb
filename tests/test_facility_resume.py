"""A killed factory run resumes (``resume=true``) from its biology checkpoints, one per chunk,
to the same outputs as an uninterrupted run.

The fast test stands in for the solve (it counts the chunks solved); the slow one interrupts
the real entry point after two chunks of real solves and resumes it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from twin.facility import _biology
from twin.kinetics import ModelStructure
from twin.process import Downstream
from twin.simulate import SolverSettings


class _Killed(Exception):
    """Stands for the process being killed mid-run."""


def _fake_solve(calls: list):
    def solve(params, schedules, start, size, n, *rest):
        calls.append(start)
        rows = np.minimum(np.arange(start, start + size), n - 1)
        value = params["x"][rows] * 2.0 + schedules["time_h"][rows, -1]
        return {name: value + i for i, name in enumerate(_biology.OUTCOMES)}

    return solve


def _kill_after(chunks: int):
    class Progress:
        done = 0

        def update(self, m):
            self.done += 1
            if self.done == chunks:
                raise _Killed

    return Progress()


def test_biology_resumes_from_its_chunk_checkpoints(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    params = {"x": rng.uniform(size=11)}
    schedules = {"time_h": rng.uniform(size=(11, 3))}
    args = (params, schedules, Downstream())
    options = {"structure": ModelStructure(), "solver": SolverSettings(), "chunk": 3}
    calls = []
    monkeypatch.setattr(_biology, "_solve_chunk", _fake_solve(calls))
    expected = _biology.simulate_outcomes(*args, **options)
    assert calls == [0, 3, 6, 9]

    calls.clear()
    folder = tmp_path / "checkpoints"
    with pytest.raises(_Killed):
        _biology.simulate_outcomes(*args, **options, checkpoint_dir=folder, progress=_kill_after(2))
    assert calls == [0, 3] and len(list(folder.glob("biology_*.npz"))) == 2
    calls.clear()
    resumed = _biology.simulate_outcomes(*args, **options, checkpoint_dir=folder)
    assert calls == [6, 9]  # only the chunks the killed run had not finished
    for name in _biology.OUTCOMES:
        np.testing.assert_array_equal(resumed[name], expected[name])
    # a checkpoint is never reused for other inputs
    calls.clear()
    other = {"x": params["x"] + 1.0}
    _biology.simulate_outcomes(other, schedules, Downstream(), **options, checkpoint_dir=folder)
    assert calls == [0, 3, 6, 9]


@pytest.mark.slow
def test_a_killed_factory_run_resumes_to_the_same_outputs(tmp_path, repo_root, monkeypatch):
    import sys

    sys.path.insert(0, str(repo_root / "experiments"))
    try:
        import facility as experiment
    finally:
        sys.path.pop(0)
    overrides = [
        "facility=single_shuttle",
        "facility.horizon_days=60",
        "facility.biology_chunk=4",
        "progress=false",
        "figures=false",
    ]
    with initialize_config_dir(config_dir=str(repo_root / "configs"), version_base="1.3"):
        cfg = compose("facility", overrides=overrides)
        resume = compose("facility", overrides=[*overrides, "resume=true"])
    whole = experiment.run(cfg, tmp_path / "whole")

    real, solved = _biology._solve_chunk, []

    def killed_after_two(*args):
        if len(solved) == 2:
            raise _Killed
        solved.append(args[2])
        return real(*args)

    monkeypatch.setattr(_biology, "_solve_chunk", killed_after_two)
    with pytest.raises(_Killed):
        experiment.run(cfg, tmp_path / "killed")
    assert len(list((tmp_path / "killed" / "checkpoints").glob("*.npz"))) == 2
    assert not (tmp_path / "killed" / "batches.csv").exists()

    def counted(*args):
        solved.append(args[2])
        return real(*args)

    solved.clear()
    monkeypatch.setattr(_biology, "_solve_chunk", counted)
    resumed = experiment.run(resume, tmp_path / "killed")
    harvested = int(pd.read_csv(tmp_path / "whole" / "batches.csv")["harvest_h"].notna().sum())
    rows = 2 * harvested  # each batch solved on its realized and its planned schedule
    assert rows > 8  # more chunks than the killed run finished
    assert solved == list(range(8, rows, 4))  # chunks 0 and 4 were read back, not solved
    for name in ("batches.csv", "module_log.csv", "cost_breakdown.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(tmp_path / "killed" / name), pd.read_csv(tmp_path / "whole" / name)
        )
    strip = {k: v for k, v in resumed.items() if k != "timings_s"}
    assert strip == {k: v for k, v in whole.items() if k != "timings_s"}
    written = json.loads((tmp_path / "killed" / "facility_summary.json").read_text())
    assert written["failed_solves"] == whole["failed_solves"]
    assert not (tmp_path / "killed" / "checkpoints").exists()  # removed once all is written


def _facility(run_dir, *extra: str) -> list[str]:
    from twin._cli import REPO_ROOT

    return [
        sys.executable,
        str(REPO_ROOT / "experiments" / "facility.py"),
        "facility=single_shuttle",
        "facility.biology_chunk=2",
        "progress=false",
        "figures=false",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


@pytest.mark.slow
def test_a_factory_run_killed_with_sigkill_resumes_to_the_same_outputs(tmp_path):
    """Real processes: one uninterrupted, one killed (SIGKILL) once a biology chunk is
    checkpointed, then resumed with resume=true in its folder."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = subprocess.run(_facility(whole), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    process = subprocess.Popen(
        _facility(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 1800  # a loaded machine compiles slowly
    while not list((killed / "checkpoints").glob("biology_*.npz")):
        assert process.poll() is None, "finished before a checkpoint was seen"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "batches.csv").exists()
    finished = len(list((killed / "checkpoints").glob("biology_*.npz")))
    assert finished >= 1

    refused = subprocess.run(_facility(killed), env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "resume=true" in refused.stderr
    resumed = subprocess.run(
        _facility(killed, "resume=true"), env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    for name in ("batches.csv", "module_log.csv", "cost_breakdown.csv"):
        assert (killed / name).read_bytes() == (whole / name).read_bytes(), name
    a, b = (json.loads((d / "facility_summary.json").read_text()) for d in (whole, killed))
    a.pop("timings_s"), b.pop("timings_s")
    assert a == b
    assert not (killed / "checkpoints").exists()
