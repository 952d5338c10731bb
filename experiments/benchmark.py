"""The benchmark suite: the twin's speed against the tools modellers use, all in one run.

    python experiments/benchmark.py               # the full suite (tens of minutes on 2 cores)
    python experiments/benchmark.py quick=true    # a smoke test of every part (a few minutes)

Measured in the same process and run, machine stated (``machine`` in the JSON):

- ``simulation``: the default recipe, a batch with the growth rate varied across simulations
  (log-normal, seeded), all at the model's tolerances: ``jax.vmap(simulate)`` on one XLA CPU
  device and split over one device per core; libroadrunner (LLVM + CVODE) running the SBML that
  ``twin.interop.export_sbml`` writes, one process per core; SciPy ``solve_ivp`` one by one on
  the twin's compiled vector field (``twin.reference``). Per-core figures divide by the cores
  (processes) used; CPU seconds per simulation are reported beside wall time.
- ``solver_efficiency``: the share of a batched solve spent in bare vector-field evaluations
  (evaluations per simulation, counted, times the cost of one evaluation in a batch of the same
  size, over the solve's time).
- ``gradient``: the cost of a gradient of a scalar of the trajectory over the cost of the
  trajectory, reverse mode (``RecursiveCheckpointAdjoint``) and forward mode (``jacfwd`` through
  ``ForwardMode``), with respect to all kinetic parameters and to the ten calibrated ones.
- ``compile``: the batched simulator's compile time in a fresh process, cold and then again
  from the on-disk compilation cache.
- ``scaling``: time per simulation and peak resident memory from 1 simulation up to
  ``scaling_sizes`` (each size in its own process; batches above ``scaling_chunk`` are run in
  chunks of that size).
- ``calibration``: ``experiments/benchmark_calibration.py`` (the twin's fit against SciPy
  ``least_squares`` on the same objective), on a smaller virtual dataset.

Writes ``benchmark.json`` and ``benchmark.md`` (the table that ``docs/benchmarks.md`` keeps) into
the run directory, with ``resolved_config.yaml`` and ``provenance.json``. Machines are shared and
noisy: read the ratios, measured side by side, not the absolute numbers.
"""

from __future__ import annotations

import os

# Before JAX starts (as experiments/calibrate.py, which says why): diffrax's checks as NaN so that
# compiled programs can be cached on disk; one XLA CPU device per core.
if __name__ == "__main__":
    os.environ.setdefault("EQX_ON_ERROR", "nan")
    os.environ.setdefault("JAX_NUM_CPU_DEVICES", str(os.cpu_count() or 1))

import contextlib
import dataclasses
import json
import multiprocessing
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hydra
import jax
import jax.numpy as jnp
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import twin.config as twin_config
from twin import TwinInputError, simulate
from twin._atomic import atomic_path
from twin._cli import exit_on_input_error
from twin.calibrate import CalibrationConfig
from twin.calibrate._model import map_runs
from twin.interop import export_sbml, roadrunner_batch
from twin.interop._sbml import vector_field
from twin.kinetics import (
    PARAMETER_NAMES,
    culture_vector_field,
    from_unconstrained,
    to_unconstrained,
)
from twin.observe import observables
from twin.provenance import write_provenance
from twin.reference import ReferenceSolver

jax.config.update("jax_enable_x64", True)

EXPERIMENTS = Path(__file__).resolve().parent
_CALIBRATED = tuple(CalibrationConfig().fitted)  # the default fit's parameters


class Clock:
    """Wall and CPU seconds of a block (CPU time counts every thread of this process)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def median_clock(fn, repeats: int) -> Clock:
    """The median (by wall time) of ``repeats`` timed calls of ``fn`` (results awaited)."""
    clocks = []
    for _ in range(repeats):
        with Clock() as clock:
            jax.block_until_ready(fn())
        clocks.append(clock)
    return sorted(clocks, key=lambda c: c.wall)[len(clocks) // 2]


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "jax_devices": [str(d) for d in jax.devices()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "note": "shared machine: other processes ran at the same time",
    }


@dataclasses.dataclass
class Setup:
    params: object
    structure: object
    solver: object
    schedule: object
    save_times_h: jnp.ndarray
    batch_params: object
    growth: np.ndarray


def setup(cfg: DictConfig, batch_size: int) -> Setup:
    # typed again (a config passed to a worker process as YAML has lost its schemas)
    model = OmegaConf.merge(twin_config._writable(twin_config.ModelConfig), cfg.model)
    recipe = OmegaConf.merge(twin_config._writable(twin_config.Recipe), cfg.recipe)
    params, structure, solver = twin_config.model_from_config(model)
    schedule = twin_config.recipe_from_config(recipe).schedule()
    # Half an hour before the harvest: the same state for every simulator (at an event's time
    # SBML simulators report the state after it, the twin the state before it).
    save_times_h = jnp.asarray([float(schedule.end_time_h) - 0.5])
    rng = np.random.default_rng(cfg.seed)
    growth = float(params.max_growth_rate_per_h) * np.exp(
        cfg.donor_log_sd * rng.standard_normal(batch_size)
    )
    batch_params = jax.tree.map(lambda x: jnp.broadcast_to(x, (batch_size,)), params)
    batch_params = batch_params.replace(max_growth_rate_per_h=growth)
    return Setup(params, structure, solver, schedule, save_times_h, batch_params, growth)


def batched_simulator(s: Setup, devices: int):
    def one(p):
        trajectory = simulate(p, s.schedule, s.save_times_h, s.structure, s.solver)
        return observables(trajectory.states)["viable_cells"][-1], trajectory.success

    return jax.jit(lambda batch: map_runs(one, devices, (batch,), ()))


# --- simulation throughput --------------------------------------------------------------------


def bench_simulation(cfg: DictConfig, s: Setup, sbml: str) -> dict:
    cores = os.cpu_count() or 1
    n = len(s.growth)
    out: dict = {"batch_size": n, "rtol": s.solver.rtol, "atol": s.solver.atol}
    finals = None
    for name, devices in (("jax_one_device", 1), ("jax_all_devices", jax.local_device_count())):
        if n % devices:
            continue
        fn = batched_simulator(s, devices)
        with Clock() as compile_clock:
            compiled = fn.lower(s.batch_params).compile()
        clock = median_clock(lambda compiled=compiled: compiled(s.batch_params), cfg.repeats)
        final, success = compiled(s.batch_params)
        finals = np.asarray(final)
        out[name] = {
            "devices": devices,
            "compile_s": compile_clock.wall,
            "wall_s": clock.wall,
            "cpu_s": clock.cpu,
            "sims_per_s": n / clock.wall,
            "sims_per_s_per_core": n / clock.wall / devices,
            "cpu_s_per_sim": clock.cpu / n,
            "failures": int(n - np.sum(np.asarray(success))),
        }
        print(f"{name}: {out[name]['sims_per_s']:.0f} sims/s", flush=True)

    # libroadrunner: one process per core, each solving its share one by one.
    processes = min(cores, cfg.roadrunner_runs)
    shares = np.array_split(s.growth[: cfg.roadrunner_runs], processes)
    args = [
        (
            sbml,
            "max_growth_rate_per_h",
            list(share),
            float(s.save_times_h[-1]),
            s.solver.rtol,
            s.solver.atol,
        )
        for share in shares
    ]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        workers = pool.starmap(roadrunner_batch, args)
    wall = max(w["wall_s"] for w in workers)
    rr_final = np.concatenate([w["final"] for w in workers])
    out["roadrunner"] = {
        "processes": processes,
        "runs": int(cfg.roadrunner_runs),
        "load_s": max(w["load_s"] for w in workers),
        "wall_s": wall,
        "cpu_s": sum(w["cpu_s"] for w in workers),
        "sims_per_s": cfg.roadrunner_runs / wall,
        "sims_per_s_per_core": cfg.roadrunner_runs / wall / processes,
        "cpu_s_per_sim": sum(w["cpu_s"] for w in workers) / cfg.roadrunner_runs,
        # agreement with the twin on the same simulations (viable cells before harvest)
        "max_relative_difference": float(
            np.max(np.abs(rr_final - finals[: len(rr_final)]) / np.abs(finals[: len(rr_final)]))
        ),
    }
    print(f"roadrunner: {out['roadrunner']['sims_per_s']:.1f} sims/s", flush=True)

    reference = ReferenceSolver(s.structure)
    save = np.asarray(s.save_times_h)
    one = jax.tree.map(lambda x: x[0], s.batch_params)
    reference.solve(one, s.schedule, save, method=cfg.scipy_method)  # warm-up (compiles)
    with Clock() as clock:
        for i in range(cfg.scipy_runs):
            p_i = jax.tree.map(lambda x, i=i: x[i], s.batch_params)
            reference.solve(
                p_i,
                s.schedule,
                save,
                rtol=s.solver.rtol,
                atol=s.solver.atol,
                method=cfg.scipy_method,
            )
    out["scipy"] = {
        "method": cfg.scipy_method,
        "runs": int(cfg.scipy_runs),
        "wall_s": clock.wall,
        "cpu_s": clock.cpu,
        "sims_per_s": cfg.scipy_runs / clock.wall,
        "sims_per_s_per_core": cfg.scipy_runs / clock.wall,
        "cpu_s_per_sim": clock.cpu / cfg.scipy_runs,
    }
    best = out.get("jax_all_devices", out["jax_one_device"])
    out["speedup_per_core_vs_roadrunner"] = (
        best["sims_per_s_per_core"] / out["roadrunner"]["sims_per_s_per_core"]
    )
    out["speedup_cpu_time_vs_roadrunner"] = (
        out["roadrunner"]["cpu_s_per_sim"] / best["cpu_s_per_sim"]
    )
    out["speedup_per_core_vs_scipy"] = (
        best["sims_per_s_per_core"] / out["scipy"]["sims_per_s_per_core"]
    )
    return out


# --- solver efficiency --------------------------------------------------------------------------


@contextlib.contextmanager
def counting_vector_field(counter: list):
    """Count every evaluation of the vector field inside ``simulate`` (a host callback per
    call: for counting only, never timed)."""

    def counted(t, state, p, **kwargs):
        jax.debug.callback(lambda: counter.append(1))
        return culture_vector_field(t, state, p, **kwargs)

    module = sys.modules["twin.simulate"]  # (``twin.simulate`` is also the function's name)
    original = module.culture_vector_field
    module.culture_vector_field = counted
    try:
        yield
    finally:
        module.culture_vector_field = original


def bench_solver_efficiency(cfg: DictConfig, s: Setup) -> dict:
    counter: list = []
    with counting_vector_field(counter):
        # a distinct static setting, so that this trace is new and uses the counting field
        solver = dataclasses.replace(s.solver, max_steps=s.solver.max_steps + 1)
        jax.block_until_ready(simulate(s.params, s.schedule, s.save_times_h, s.structure, solver))
    evaluations = len(counter)

    n = len(s.growth)
    solve = jax.jit(
        jax.vmap(lambda p: simulate(p, s.schedule, s.save_times_h, s.structure, s.solver).end_state)
    )
    states = jax.block_until_ready(solve(s.batch_params))  # realistic states: the batch's ends
    loops = 200

    @jax.jit
    def bare(states, params):
        field = jax.vmap(lambda y, p: vector_field(s.structure)(0.0, y, p))

        def body(_, y):  # each evaluation feeds the next, so none can be hoisted or skipped
            return jax.tree.map(lambda a, b: a + 1e-9 * b, y, field(y, params))

        return jax.lax.fori_loop(0, loops, body, states)

    jax.block_until_ready(bare(states, s.batch_params))
    bare_clock = median_clock(lambda: bare(states, s.batch_params), cfg.repeats)
    solve_clock = median_clock(lambda: solve(s.batch_params), cfg.repeats)
    per_evaluation = bare_clock.wall / loops  # one evaluation for the whole batch
    return {
        "evaluations_per_simulation": evaluations,
        "batch_size": n,
        "evaluation_s_per_batch": per_evaluation,
        "solve_s_per_batch": solve_clock.wall,
        "vector_field_share": evaluations * per_evaluation / solve_clock.wall,
    }


# --- gradient cost ------------------------------------------------------------------------------


def bench_gradient(cfg: DictConfig, s: Setup) -> dict:
    times = jnp.linspace(24.0, float(s.schedule.end_time_h) - 0.5, 8)
    base = to_unconstrained(s.params)

    def loss(theta, names, solver):
        values = {n: getattr(base, n) for n in PARAMETER_NAMES}
        values.update(dict(zip(names, theta, strict=True)))
        params = from_unconstrained(type(s.params)(**values))
        trajectory = simulate(params, s.schedule, times, s.structure, solver)
        obs = observables(trajectory.states)
        return sum(jnp.sum(jnp.log(obs[k] + 1.0)) for k in ("viable_cells", "glucose_mM"))

    out = {}
    reverse = dataclasses.replace(s.solver, adjoint="recursive")
    forward = dataclasses.replace(s.solver, adjoint="forward")
    sets = {"all_parameters": PARAMETER_NAMES, "calibrated": _CALIBRATED}
    for label in cfg.gradient_sets:
        names = sets[label]
        theta = jnp.stack([jnp.asarray(getattr(base, n), float) for n in names])
        fns = {
            "forward": jax.jit(lambda th, names=names: loss(th, names, reverse)),
            "reverse_mode": jax.jit(jax.grad(lambda th, names=names: loss(th, names, reverse))),
            "forward_mode": jax.jit(jax.jacfwd(lambda th, names=names: loss(th, names, forward))),
        }
        timing = {}
        for name, fn in fns.items():
            with Clock() as compile_clock:
                jax.block_until_ready(fn(theta))
            clock = median_clock(lambda fn=fn, theta=theta: fn(theta), max(cfg.repeats, 3))
            timing[name] = {"wall_s": clock.wall, "first_call_s": compile_clock.wall}
        grad_r, grad_f = (
            np.asarray(fns["reverse_mode"](theta)),
            np.asarray(fns["forward_mode"](theta)),
        )
        out[label] = {
            "parameters": len(names),
            **timing,
            "reverse_over_forward": timing["reverse_mode"]["wall_s"] / timing["forward"]["wall_s"],
            "forward_mode_over_forward": timing["forward_mode"]["wall_s"]
            / timing["forward"]["wall_s"],
            "modes_agree_rel": float(
                np.max(np.abs(grad_r - grad_f)) / max(np.max(np.abs(grad_f)), 1e-300)
            ),
        }
        print(f"gradient ({label}): {out[label]}", flush=True)
    return out


# --- compile cold / from the cache, and scaling: fresh processes ------------------------------

_WORKER = """
import json, os, resource, sys, time
sys.path.insert(0, {experiments!r})
import benchmark
print("RESULT " + json.dumps(benchmark.{function}(**{kwargs!r})), flush=True)
"""


def in_subprocess(function: str, timeout_s: float, env: dict | None = None, **kwargs) -> dict:
    code = _WORKER.format(experiments=str(EXPERIMENTS), function=function, kwargs=kwargs)
    environment = {**os.environ, "EQX_ON_ERROR": "nan", **(env or {})}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=environment,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {"failed": True, "returncode": done.returncode, "stderr": done.stderr[-2000:]}


def _worker_setup(config_yaml: str, batch: int) -> tuple[Setup, object]:
    cfg = OmegaConf.create(config_yaml)
    s = setup(cfg, batch)
    return s, batched_simulator(s, 1)


def compile_worker(config_yaml: str, batch: int, cache_dir: str) -> dict:
    """Trace, lower and compile the batched simulator in this (fresh) process."""
    from twin.calibrate._cache import enable_compilation_cache

    enable_compilation_cache(cache_dir)
    s, fn = _worker_setup(config_yaml, batch)
    with Clock() as clock:
        fn.lower(s.batch_params).compile()
    return {"compile_s": clock.wall, "compile_cpu_s": clock.cpu}


def scaling_worker(config_yaml: str, n: int, chunk: int, cache_dir: str) -> dict:
    """Simulate ``n`` batches (in chunks) in this fresh process: time and peak memory."""
    import resource

    from twin.calibrate._cache import enable_compilation_cache

    enable_compilation_cache(cache_dir)
    size = min(n, chunk)
    s, fn = _worker_setup(config_yaml, size)
    with Clock() as compile_clock:
        compiled = fn.lower(s.batch_params).compile()
    failures = 0
    with Clock() as clock:
        for start in range(0, n, size):
            _, success = jax.block_until_ready(compiled(s.batch_params))
            failures += int(np.sum(~np.asarray(success)[: n - start]))
    return {
        "simulations": n,
        "chunk": size,
        "compile_s": compile_clock.wall,
        "wall_s": clock.wall,
        "cpu_s": clock.cpu,
        "s_per_sim": clock.wall / n,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "failures": failures,
    }


def bench_compile(cfg: DictConfig, batch: int) -> dict:
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    with tempfile.TemporaryDirectory(prefix="cartwin_cache_") as cache:
        env = {"JAX_NUM_CPU_DEVICES": "1"}
        cold = in_subprocess(
            "compile_worker", 1200, env, config_yaml=config_yaml, batch=batch, cache_dir=cache
        )
        warm = in_subprocess(
            "compile_worker", 1200, env, config_yaml=config_yaml, batch=batch, cache_dir=cache
        )
    out = {"batch_size": batch, "cold": cold, "from_cache": warm}
    if "compile_s" in cold and "compile_s" in warm:
        out["cold_over_cached"] = cold["compile_s"] / warm["compile_s"]
    return out


def bench_scaling(cfg: DictConfig) -> list[dict]:
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cartwin_cache_") as cache:
        for n in cfg.scaling_sizes:
            row = in_subprocess(
                "scaling_worker",
                cfg.scaling_timeout_s,
                {"JAX_NUM_CPU_DEVICES": "1"},
                config_yaml=config_yaml,
                n=int(n),
                chunk=int(cfg.scaling_chunk),
                cache_dir=cache,
            )
            row.setdefault("simulations", int(n))
            rows.append(row)
            print(f"scaling {n}: {row}", flush=True)
    return rows


# --- calibration --------------------------------------------------------------------------------


def bench_calibration(cfg: DictConfig, out_dir: Path) -> dict:
    sys.path.insert(0, str(EXPERIMENTS))
    import benchmark_calibration

    return benchmark_calibration.run(cfg.calibration, out_dir / "calibration")


# --- the suite ----------------------------------------------------------------------------------


def effective(cfg: DictConfig) -> DictConfig:
    """The config with ``quick`` applied (smaller everything, for a smoke test)."""
    return OmegaConf.merge(cfg, cfg.quick_overrides) if cfg.quick else cfg


def run(cfg: DictConfig, out_dir: Path) -> dict:
    cfg = effective(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir, cfg, seed=cfg.seed)
    s = setup(cfg, cfg.batch_size)
    sbml = export_sbml(s.params, s.schedule, s.structure).to_string()
    result: dict = {"machine": machine(), "quick": bool(cfg.quick)}
    parts = [p for p in cfg.parts]
    measure = {
        "simulation": lambda: bench_simulation(cfg, s, sbml),
        "solver_efficiency": lambda: bench_solver_efficiency(cfg, s),
        "gradient": lambda: bench_gradient(cfg, s),
        "compile": lambda: bench_compile(cfg, cfg.batch_size),
        "scaling": lambda: bench_scaling(cfg),
        "calibration": lambda: bench_calibration(cfg, out_dir),
    }
    unknown = sorted(set(parts) - set(measure))
    if unknown:
        raise TwinInputError(f"parts={parts}: unknown part(s) {unknown} (known: {list(measure)})")
    for part in parts:
        result[part] = measure[part]()
        # written after every part, so a long run that is stopped keeps what it measured
        with atomic_path(out_dir / "benchmark.json") as tmp:
            tmp.write_text(json.dumps(result, indent=2, default=float))
        with atomic_path(out_dir / "benchmark.md") as tmp:
            tmp.write_text(markdown_table(result))
    return result


def _fmt(x, spec: str = ".3g") -> str:
    return "n/a" if x is None else format(x, spec)


def markdown_table(result: dict) -> str:
    """The suite's results as markdown tables (what docs/benchmarks.md keeps)."""
    m = result["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']} ({m['note']})."
        + (" Quick mode (smoke test sizes)." if result.get("quick") else ""),
        "",
    ]
    sim = result.get("simulation")
    if sim:
        lines += [
            f"Simulation of the default recipe, {sim['batch_size']} simulations, "
            f"rtol={sim['rtol']:g}, atol={sim['atol']:g} for all:",
            "",
            "| simulator | processes/devices | sims/s | sims/s per core | CPU s per sim |",
            "|---|---|---|---|---|",
        ]
        for key, label in (
            ("jax_one_device", "twin: `vmap(simulate)`, one XLA device"),
            ("jax_all_devices", "twin: `vmap(simulate)`, one XLA device per core"),
            ("roadrunner", "libroadrunner (exported SBML), one process per core"),
            ("scipy", f"SciPy `solve_ivp` ({sim['scipy']['method']}), one by one"),
        ):
            if key in sim:
                e = sim[key]
                count = e.get("devices", e.get("processes", 1))
                lines.append(
                    f"| {label} | {count} | {_fmt(e['sims_per_s'])} | "
                    f"{_fmt(e['sims_per_s_per_core'])} | {_fmt(e['cpu_s_per_sim'])} |"
                )
        lines += [
            "",
            f"Twin over libroadrunner: **{sim['speedup_per_core_vs_roadrunner']:.1f}x per core** "
            f"(wall), {sim['speedup_cpu_time_vs_roadrunner']:.1f}x in CPU time per simulation "
            f"(target >= 5x); over SciPy {sim['speedup_per_core_vs_scipy']:.0f}x per core. "
            f"libroadrunner and the twin agree to "
            f"{sim['roadrunner']['max_relative_difference']:.1e} (relative, viable cells).",
            "",
        ]
    eff = result.get("solver_efficiency")
    if eff:
        lines += [
            f"Solver efficiency: {eff['evaluations_per_simulation']} vector-field evaluations per "
            f"simulation; bare evaluations are **{100 * eff['vector_field_share']:.0f} %** of the "
            f"batched solve's time (batch {eff['batch_size']}).",
            "",
        ]
    grad = result.get("gradient")
    if grad:
        lines += [
            "| gradient of a trajectory loss | parameters | reverse mode / forward solve | "
            "forward mode (jacfwd) / forward solve |",
            "|---|---|---|---|",
        ]
        for label, e in grad.items():
            lines.append(
                f"| {label.replace('_', ' ')} | {e['parameters']} | "
                f"{e['reverse_over_forward']:.1f}x | {e['forward_mode_over_forward']:.1f}x |"
            )
        lines += ["", "(target: gradient <= 5x forward)", ""]
    comp = result.get("compile")
    if comp:
        cold, warm = comp["cold"], comp["from_cache"]
        lines += [
            f"Compile of the batched simulator (batch {comp['batch_size']}, fresh process): "
            f"cold {_fmt(cold.get('compile_s'))} s, from the on-disk cache "
            f"{_fmt(warm.get('compile_s'))} s.",
            "",
        ]
    scaling = result.get("scaling")
    if scaling:
        lines += [
            "| simulations | chunk | wall s | s per simulation | peak RSS MB |",
            "|---|---|---|---|---|",
        ]
        for row in scaling:
            if row.get("failed"):
                lines.append(f"| {row['simulations']} | failed ({row.get('returncode')}) | | | |")
                continue
            lines.append(
                f"| {row['simulations']:,} | {row['chunk']} | {_fmt(row['wall_s'])} | "
                f"{_fmt(row['s_per_sim'])} | {_fmt(row['peak_rss_mb'], '.0f')} |"
            )
        lines.append("")
    cal = result.get("calibration")
    if cal:
        best = cal["ours"]["all_devices"]
        lines += [
            f"Calibration ({cal['runs']} virtual runs, {cal['donors']} donors, "
            f"{cal['unknowns']} unknowns): the twin's fit {best['fit']['wall_s']:.1f} s against "
            f"SciPy least_squares {cal['scipy']['fit']['wall_s']:.1f} s: "
            f"**{cal['speedup_fit']:.1f}x** (objectives differ by "
            f"{cal['objective_relative_difference']:.1e}). pyPESTO+AMICI: not measured "
            "(see docs/benchmarks.md).",
            "",
        ]
    return "\n".join(lines)


@hydra.main(config_path="../configs", config_name="benchmark", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_input_error(cfg):
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        result = run(cfg, out_dir)
        print(markdown_table(result))
        print(f"outputs: {out_dir}")


if __name__ == "__main__":
    main()
