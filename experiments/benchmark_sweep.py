"""Sweep benchmark: points per second against a Python loop of single solves, and memory.

    python experiments/benchmark_sweep.py                       # all parts, this machine
    python experiments/benchmark_sweep.py --part speed --points 4096 --loop-points 64
    python experiments/benchmark_sweep.py --part memory --memory-points 1000 10000 100000
    python experiments/benchmark_sweep.py --part loops --points 4096

Parts (each timed in the same run, machine named in the output):

- ``speed``: ``twin.sweep`` chunks (``jit(vmap)`` split over every local device, one XLA CPU
  device per core) against a plain Python loop calling one jitted single-point solve per
  point, on the same design; compile times reported apart.
- ``loops``: the two solver loops of :class:`twin.simulate.SolverSettings` (``segments``:
  lockstep segment by segment; ``events``: each run crosses its own events) on one design with
  MOI, seed cells, harvest time and two donor parameters varied per point: points per second
  (interleaved repeats, best and median), the lockstep efficiency of a chunk (mean accepted
  steps per run / step iterations the batch executes) and the largest relative difference of
  the harvest outcomes between the loops.
- ``memory``: peak resident memory (``ru_maxrss``) of whole ``experiments/sweep.py`` runs in
  fresh processes at growing ``sweep.n_points`` with one fixed chunk size, and of the sweep
  machinery alone (design, store, chunk loop, commit markers) with a closed-form stand-in for
  the simulation at up to 1e7 points, so the part that could grow with the point count is
  measured at the full count while the simulation's share is measured per chunk.

Writes ``benchmark_sweep.json`` into ``--out`` (default ``outputs/benchmark_sweep``).
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    os.environ.setdefault("JAX_NUM_CPU_DEVICES", str(os.cpu_count() or 1))

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]


def speed(n_points: int, n_loop: int, chunk_size: int) -> dict:
    from twin.kinetics import default_parameters
    from twin.process import Downstream, Recipe
    from twin.sweep import SweepModel, chunk_function, design_blocks, point_outcomes, sweep_space

    space = sweep_space({"moi": [1, 10], "seed_cells": [5e7, 2e8], "harvest_time_h": [192, 264]})
    model = SweepModel(space, Recipe(), Downstream())
    (_, _, x), *_ = design_blocks(space, "sobol", n_points, 0, 0, n_points, n_points)
    params = default_parameters()
    devices = jax.local_device_count()
    evaluate = chunk_function(model, devices, False, chunk_size)
    t0 = time.perf_counter()
    evaluate(x[:chunk_size], params)
    compile_chunk = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = [evaluate(x[a : a + chunk_size], params) for a in range(0, n_points, chunk_size)]
    chunked = time.perf_counter() - t0
    single = jax.jit(lambda xi, p: point_outcomes(xi, p, model))
    t0 = time.perf_counter()
    jax.block_until_ready(single(x[0], params))
    compile_single = time.perf_counter() - t0
    t0 = time.perf_counter()
    loop = [jax.block_until_ready(single(x[i], params)) for i in range(n_loop)]
    looped = time.perf_counter() - t0
    first = results[0]["viable_car_pos_cells"][:n_loop]
    agree = float(
        np.max(np.abs(first - np.array([r["viable_car_pos_cells"] for r in loop])) / first)
    )
    return {
        "devices": devices,
        "chunk_size": chunk_size,
        "sweep_points": n_points,
        "sweep_s": round(chunked, 3),
        "sweep_points_per_s": round(n_points / chunked, 1),
        "sweep_compile_s": round(compile_chunk, 1),
        "loop_points": n_loop,
        "loop_s": round(looped, 3),
        "loop_points_per_s": round(n_loop / looped, 1),
        "loop_compile_s": round(compile_single, 1),
        "speedup": round((n_points / chunked) / (n_loop / looped), 2),
        "max_relative_difference_sweep_vs_loop": agree,
    }


STAND_IN = """
import sys, resource, time
import numpy as np
sys.path.insert(0, {tests!r})
from test_sweep import plan_for, synthetic
from twin.sweep import SweepPlan, run_sweep, sweep_space, design_size
from test_sweep import SPACE
n, chunk = int(sys.argv[2]), int(sys.argv[3])
plan = SweepPlan(sweep_space(SPACE), "sobol", n, 0, chunk, 0, 0, n, {{}})
t0 = time.perf_counter()
run_sweep(sys.argv[1], plan, synthetic, None, progress=False)
print(time.perf_counter() - t0)
"""


LOOPS_SPACE = {
    "moi": [1, 10],
    "seed_cells": [5e7, 2e8],
    "harvest_time_h": [192, 264],
    "max_growth_rate_per_h": [0.02, 0.05],
    "base_death_rate_per_h": [0.002, 0.02],
}


def loops(n_points: int, chunk_size: int, repeats: int) -> dict:
    from twin.kinetics import default_parameters
    from twin.process import Downstream, Recipe
    from twin.simulate import SolverSettings, lockstep_efficiency
    from twin.sweep import SweepModel, chunk_function, design_blocks, sweep_space
    from twin.sweep._evaluate import point_trajectory

    space = sweep_space(LOOPS_SPACE)
    (_, _, x), *_ = design_blocks(space, "sobol", n_points, 0, 0, n_points, n_points)
    params = default_parameters()
    devices = jax.local_device_count()
    out: dict = {"devices": devices, "chunk_size": chunk_size, "points": n_points}
    evaluate, results = {}, {}
    for loop in ("segments", "events"):
        model = SweepModel(space, Recipe(), Downstream(), solver=SolverSettings(loop=loop))
        evaluate[loop] = chunk_function(model, devices, False, chunk_size)
        t0 = time.perf_counter()
        evaluate[loop](x[:chunk_size], params)
        out[f"{loop}_compile_s"] = round(time.perf_counter() - t0, 1)
        steps = jax.jit(jax.vmap(lambda xi, m=model: point_trajectory(xi, params, m)[0]))
        trajectories = steps(x[:chunk_size])
        out[f"{loop}_lockstep_efficiency"] = round(lockstep_efficiency(trajectories, loop), 3)
        out[f"{loop}_mean_accepted_steps"] = round(float(np.mean(trajectories.accepted_steps)), 1)
    times: dict = {loop: [] for loop in evaluate}
    for _ in range(repeats):  # interleaved, so both see the same machine load
        for loop, f in evaluate.items():
            t0 = time.perf_counter()
            results[loop] = [
                f(x[a : a + chunk_size], params) for a in range(0, n_points, chunk_size)
            ]
            times[loop].append(time.perf_counter() - t0)
    for loop, ts in times.items():
        out[f"{loop}_points_per_s_best"] = round(n_points / min(ts), 1)
        out[f"{loop}_points_per_s_median"] = round(n_points / float(np.median(ts)), 1)
    out["events_over_segments_speed"] = round(min(times["segments"]) / min(times["events"]), 3)
    worst = 0.0
    for name in ("viable_car_pos_cells", "viability", "car_pos_fraction"):
        a = np.concatenate([r[name] for r in results["segments"]])
        b = np.concatenate([r[name] for r in results["events"]])
        worst = max(worst, float(np.nanmax(np.abs(a - b) / np.abs(a))))
    out["max_relative_difference_events_vs_segments"] = worst
    return out


def _child_peak_mb(command: list[str], env: dict) -> tuple[float, float, str]:
    """Peak RSS (MiB) and wall time of one child process (``ru_maxrss`` of a fresh
    ``wait4``, so earlier children do not count)."""
    t0 = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    out = process.stdout.read().decode() if process.stdout else ""
    err = process.stderr.read().decode() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command} failed: {err[-2000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0, out


def memory(
    points: list[int], stand_in_points: list[int], chunk_size: int, stand_in_chunk: int, work: Path
) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    runs = []
    for n in points:
        out = work / f"sweep_{n}"
        command = [
            sys.executable,
            str(REPO_ROOT / "experiments" / "sweep.py"),
            f"hydra.run.dir={out}",
            f"sweep.n_points={n}",
            f"sweep.chunk_size={chunk_size}",
            "sweep.progress=false",
            "sweep.figures=false",
        ]
        peak, wall, _ = _child_peak_mb(command, env)
        runs.append({"points": n, "peak_rss_MiB": round(peak, 1), "wall_s": round(wall, 1)})
        print(f"simulated sweep, {n} points: peak RSS {peak:.0f} MiB, {wall:.0f} s", flush=True)
    stand_in = []
    script = work / "stand_in.py"
    script.write_text(STAND_IN.format(tests=str(REPO_ROOT / "tests")))
    for n in stand_in_points:
        out = work / f"stand_in_{n}.zarr"
        peak, wall, _ = _child_peak_mb(
            [sys.executable, str(script), str(out), str(n), str(stand_in_chunk)], env
        )
        stand_in.append({"points": n, "peak_rss_MiB": round(peak, 1), "wall_s": round(wall, 1)})
        print(f"stand-in sweep, {n} points: peak RSS {peak:.0f} MiB, {wall:.0f} s", flush=True)
    return {
        "chunk_size": chunk_size,
        "simulated": runs,
        "stand_in_chunk_size": stand_in_chunk,
        "machinery_stand_in": stand_in,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["speed", "loops", "memory", "all"], default="all")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--points", type=int, default=4096)
    parser.add_argument("--loop-points", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--memory-points", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument(
        "--stand-in-points", type=int, nargs="*", default=[1000, 100000, 1000000, 10000000]
    )
    parser.add_argument("--memory-chunk-size", type=int, default=4096)
    parser.add_argument("--stand-in-chunk-size", type=int, default=65536)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "benchmark_sweep")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    result: dict = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "device": str(jax.devices()[0]),
            "local_devices": jax.local_device_count(),
            "load_average_at_start": os.getloadavg(),
        }
    }
    if args.part in ("speed", "all"):
        result["speed"] = speed(args.points, args.loop_points, args.chunk_size)
        print(json.dumps(result["speed"], indent=2), flush=True)
    if args.part in ("loops", "all"):
        result["loops"] = loops(args.points, args.chunk_size, args.repeats)
        print(json.dumps(result["loops"], indent=2), flush=True)
    if args.part in ("memory", "all"):
        with tempfile.TemporaryDirectory() as work:
            result["memory"] = memory(
                args.memory_points,
                args.stand_in_points,
                args.memory_chunk_size,
                args.stand_in_chunk_size,
                Path(work),
            )
    result["machine"]["load_average_at_end"] = os.getloadavg()
    result["peak_rss_this_process_MiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmark_sweep.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
