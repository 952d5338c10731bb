"""Benchmark: the calibration fit vs. SciPy least squares with finite differences, same run.

    python experiments/benchmark_calibration.py                    # 12 donors x 3 runs
    python experiments/benchmark_calibration.py donors=4 runs_per_donor=2 optimistix=true

Both minimize the same objective (``twin.calibrate.residuals``) on the same virtual dataset from
the same start (the prior mean): ours with the structured forward-mode Jacobian and the
Levenberg-Marquardt loop of ``twin.calibrate``, timed with the runs split over all local devices
(one per core: ``JAX_NUM_CPU_DEVICES``) and on one device; SciPy with
``least_squares(method="trf")`` and a 2-point finite-difference Jacobian of the same compiled
residual function, on one device or split, whichever takes less CPU time per call at the start
(over the real unknowns only: padding donors are left out). Our fits are timed ``--repeats`` times,
once before SciPy's and the rest after, and the median is reported. Also measured: one structured
Jacobian against the naive ``jax.jacfwd`` of the residuals (``len(x)`` tangents through every run)
and, with ``optimistix=true``, ``optimistix.LevenbergMarquardt`` on the structured residuals. What
bounds the one-device ratio is reported too (``jacobian_cost``): a Jacobian's cost in residual
evaluations at the start and at the optimum, and our fit's cost in those units. Compile
times are reported separately from run times; with the on-disk compilation cache (default: a fresh
one), the fit's compile is timed twice: cold, and again from the cache (what a second run of
``experiments/calibrate.py`` pays). Writes ``benchmark_calibration.json`` into the run directory
(config: ``configs/benchmark_calibration.yaml``). ``experiments/benchmark.py`` calls :func:`run`
as one part of the benchmark suite. Machines
are shared and noisy: read the ratios, and compare CPU time with wall time.
"""

from __future__ import annotations

import os

# As in experiments/calibrate.py (which says why): diffrax's checks as NaN, not host
# callbacks, so the compiled fit can be kept in the on-disk cache. Before equinox is imported.
# One XLA CPU device per core, so that the fit can split its runs over all of them.
if __name__ == "__main__":
    os.environ.setdefault("EQX_ON_ERROR", "nan")
    os.environ.setdefault("JAX_NUM_CPU_DEVICES", str(os.cpu_count() or 1))

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import hydra
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from scipy.optimize import least_squares

from twin import Recipe, default_parameters
from twin._atomic import atomic_path
from twin._cli import exit_on_input_error
from twin.assays import MEASURED_VARIABLES, AssayNoise
from twin.calibrate import (
    CalibrationConfig,
    LMOptions,
    ModelSpec,
    ObjectiveData,
    ParameterLayout,
    build_problem,
    fit_one,
    make_prior,
    residuals,
    residuals_and_jacobian,
    run_devices,
)
from twin.calibrate._cache import enable_compilation_cache
from twin.kinetics import ModelStructure
from twin.provenance import write_provenance
from twin.simulate import SolverSettings
from twin.virtual import generate_dataset

jax.config.update("jax_enable_x64", True)


class Clock:
    """Wall and CPU seconds of a block (CPU time counts every thread of this process)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    def as_dict(self) -> dict[str, float]:
        return {"wall_s": round(self.wall, 3), "cpu_s": round(self.cpu, 3)}


def median_call(compiled: Callable, *args, repeats: int) -> tuple[Clock, object]:
    """``(median clock by wall time, output)`` of ``repeats`` calls of a compiled function."""
    runs = []
    for _ in range(repeats):
        with Clock() as clock:
            out = jax.block_until_ready(compiled(*args))
        runs.append(clock)
    return sorted(runs, key=lambda c: c.wall)[len(runs) // 2], out


def compile_and_time(fn: Callable, *args, repeats: int = 1) -> tuple[dict, dict, object, Callable]:
    """``(compile timing, median run timing, output, compiled)`` of ``jax.jit(fn)(*args)``."""
    with Clock() as compile_clock:
        compiled = jax.jit(fn).lower(*args).compile()
    median, out = median_call(compiled, *args, repeats=repeats)
    return compile_clock.as_dict(), median.as_dict(), out, compiled


def jacobian_cost(jacobian, residuals_fn, points: dict, data, fit: dict) -> dict:
    """A structured Jacobian's cost in residual evaluations (one device) at each of ``points``,
    and what our fit then costs in residual evaluations: one Jacobian at the start and at every
    accepted step, residuals at the start and at every trial point. SciPy's count, set against
    this, bounds the one-device speedup (ODE solves get dearer as the fit reaches stiffer
    parameters, for both methods alike)."""
    out = {}
    for name, x in points.items():
        ratio = (
            median_call(jacobian, x, data, repeats=3)[0].wall
            / median_call(residuals_fn, x, data, repeats=3)[0].wall
        )
        out[name] = {
            "jacobian_over_residuals": ratio,
            "fit_in_residual_evaluations": (fit["accepted_steps"] + 1) * ratio + fit["steps"] + 1,
        }
    return out


def virtual_data(n_donors: int, runs_per_donor: int, seed: int):
    config = CalibrationConfig()
    return generate_dataset(
        seed,
        default_parameters(),
        {name: config.donor_sd for name in config.donor_level},
        Recipe(),
        n_donors=n_donors,
        runs_per_donor=runs_per_donor,
        grid={"harvest_time_h": [168.0, 192.0]},
        uniform={
            "moi": [2.0, 10.0],
            "transduction_time_h": [18.0, 36.0],
            "seed_cells": [6.0e7, 1.5e8],
        },
    )


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Measure, write ``benchmark_calibration.json`` into ``out_dir`` and return the results."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.compilation_cache:
        cache_dir = out_dir / "jax_cache" if cfg.compilation_cache == "fresh" else None
        cache_dir = Path(cfg.compilation_cache) if cache_dir is None else cache_dir
        enable_compilation_cache(cache_dir)
    write_provenance(out_dir, cfg, seed=cfg.seed)
    with Clock() as generate_clock:
        virtual = virtual_data(cfg.donors, cfg.runs_per_donor, cfg.seed)
    config = CalibrationConfig()
    problem = build_problem(virtual.run_data, pad_multiple=config.pad_multiple)
    layout = ParameterLayout(
        tuple(config.fitted), tuple(config.donor_level), problem.n_donors_padded
    )
    spec = ModelSpec(layout, ModelStructure(), SolverSettings(), config.failure_residual)
    noise = AssayNoise()
    data = ObjectiveData(
        problem.arrays,
        make_prior(default_parameters(), layout, config.donor_sds()),
        jnp.asarray([noise.sd(v) for v in MEASURED_VARIABLES]),
    )
    n_real = layout.n_population + len(problem.donor_ids) * len(layout.donor_level)
    x0 = jnp.concatenate([data.prior.mean(layout), jnp.zeros(layout.size - layout.n_population)])
    result = {
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "runs": len(problem.run_ids),
        "donors": len(problem.donor_ids),
        "padded_runs": problem.arrays.n_runs,
        "measurements": problem.n_observations,
        "unknowns": n_real,
        "generate": generate_clock.as_dict(),
    }

    # --- ours: Levenberg-Marquardt with the structured Jacobian, runs over all devices -----
    options = LMOptions.from_config(config)
    devices = run_devices(0, problem.arrays.n_runs)
    specs = {"all_devices": dataclasses.replace(spec, devices=devices), "one_device": spec}
    fits, ours = {}, {}
    for name, variant in specs.items():
        compile_s, _, fit, fits[name] = compile_and_time(
            lambda x, d, o, s=variant: fit_one(x, d, s, o), x0, data, options
        )
        ours[name] = {
            "devices": variant.devices,
            "compile": compile_s,
            "objective": float(fit.objective),
            "steps": int(fit.steps),
            "accepted_steps": int(fit.accepted_steps),
            "converged": bool(fit.converged),
        }
    if cfg.compilation_cache:
        # A second process on the same shapes: tracing and lowering again, XLA's compile read
        # back from the on-disk cache that the first compile filled.
        jax.clear_caches()
        variant = specs["all_devices"]
        with Clock() as warm_clock:
            jax.jit(lambda x, d, o: fit_one(x, d, variant, o)).lower(x0, data, options).compile()
        ours["all_devices"]["compile_warm_cache"] = warm_clock.as_dict()

    optimum = fit.x  # every variant reaches the same optimum

    # --- one Jacobian: structured vs naive jax.jacfwd (one device) ---------------------------
    compile_s, run_s, _, structured_jacobian = compile_and_time(
        lambda x, d: residuals_and_jacobian(x, d, spec), x0, data, repeats=3
    )
    result["jacobian_structured"] = {"compile": compile_s, "call": run_s}
    compile_s, run_s, _, _ = compile_and_time(
        jax.jacfwd(lambda x, d: residuals(x, d, spec, structured=False)), x0, data, repeats=3
    )
    result["jacobian_naive"] = {"compile": compile_s, "call": run_s}
    result["jacobian_speedup"] = (
        result["jacobian_naive"]["call"]["wall_s"] / result["jacobian_structured"]["call"]["wall_s"]
    )
    print(f"jacobian structured vs naive: x{result['jacobian_speedup']:.1f}", flush=True)

    # --- SciPy: trust-region reflective with a finite-difference Jacobian ----------------------
    # Its residual function: the same compiled objective, on one device or split like ours,
    # whichever takes less CPU time per call at the start.
    residual_variants = {}
    for name, variant in specs.items():
        compile_s, run_s, _, compiled = compile_and_time(
            lambda x, d, s=variant: residuals(x, d, s, structured=True), x0, data, repeats=3
        )
        residual_variants[name] = (compile_s, run_s, compiled)
    scipy_variant = min(residual_variants, key=lambda n: residual_variants[n][1]["cpu_s"])
    result["jacobian_cost"] = jacobian_cost(
        structured_jacobian,
        residual_variants["one_device"][2],
        {"start": x0, "optimum": optimum},
        data,
        ours["one_device"],
    )
    compile_s, run_s, primal = residual_variants[scipy_variant]
    padding = jnp.zeros(layout.size - n_real)
    evaluations = {"count": 0}

    def scipy_residuals(x_real: np.ndarray) -> np.ndarray:
        evaluations["count"] += 1
        return np.asarray(primal(jnp.concatenate([jnp.asarray(x_real), padding]), data))

    def time_ours(name: str) -> Clock:
        with Clock() as clock:
            jax.block_until_ready(fits[name](x0, data, options))
        return clock

    # The machine is shared: time our fits before and after SciPy's, and take the medians.
    ours_clocks = {name: [time_ours(name)] for name in fits}
    with Clock() as scipy_clock:
        reference = least_squares(
            scipy_residuals, np.asarray(x0[:n_real]), method="trf", jac="2-point"
        )
    for _ in range(cfg.repeats - 1):
        for name in fits:
            ours_clocks[name].append(time_ours(name))
    for name, clocks in ours_clocks.items():
        ours[name]["fit"] = {
            key: float(np.median([c.as_dict()[key] for c in clocks])) for key in ("wall_s", "cpu_s")
        }
        ours[name]["fit_repeats"] = [c.as_dict() for c in clocks]
    result["ours"] = ours
    result["scipy"] = {
        "residuals_on": scipy_variant,
        "residual_calls": {name: v[1] for name, v in residual_variants.items()},
        "compile_residuals": compile_s,
        "residuals_call": run_s,
        "fit": scipy_clock.as_dict(),
        "objective": float(reference.cost),
        "residual_evaluations": evaluations["count"],
        "jacobian_evaluations": int(reference.njev),
        "status": int(reference.status),
        "message": str(reference.message),
    }
    print(f"ours: {json.dumps(ours, indent=1)}", flush=True)
    print(f"scipy: {result['scipy']}", flush=True)

    if cfg.optimistix:
        solver = optx.LevenbergMarquardt(rtol=1e-6, atol=1e-6)

        def optimistix_fit(x, d):
            solution = optx.least_squares(
                lambda y, dd: residuals(y, dd, spec, structured=True),
                solver,
                x,
                args=d,
                max_steps=config.max_steps * 4,
                throw=False,
            )
            r = residuals(solution.value, d, spec, structured=True)
            return 0.5 * jnp.sum(r**2), solution.stats["num_steps"]

        compile_s, run_s, (objective, steps), _ = compile_and_time(optimistix_fit, x0, data)
        result["optimistix"] = {
            "compile": compile_s,
            "fit": run_s,
            "objective": float(objective),
            "steps": int(steps),
            "per_step_wall_s": run_s["wall_s"] / max(int(steps), 1),
        }
        print(f"optimistix: {result['optimistix']}", flush=True)

    best = ours["all_devices"]
    difference = abs(best["objective"] - reference.cost) / reference.cost
    result["objective_relative_difference"] = difference
    for entry in ours.values():
        entry["speedup_wall"] = scipy_clock.wall / entry["fit"]["wall_s"]
        entry["speedup_cpu"] = scipy_clock.cpu / entry["fit"]["cpu_s"]
    result["speedup_fit"] = best["speedup_wall"]
    scipy_compile_s = result["scipy"]["compile_residuals"]["wall_s"]
    result["speedup_including_compile"] = (scipy_clock.wall + scipy_compile_s) / (
        best["compile"]["wall_s"] + best["fit"]["wall_s"]
    )
    with atomic_path(out_dir / "benchmark_calibration.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    return result


def report(result: dict) -> str:
    """The measurements in a few lines, for the terminal."""
    scipy = result["scipy"]
    lines = [
        f"objectives: ours {result['ours']['all_devices']['objective']:.6g}, scipy "
        f"{scipy['objective']:.6g} (relative difference "
        f"{result['objective_relative_difference']:.2e})"
    ]
    for name, entry in result["ours"].items():
        lines.append(
            f"ours on {entry['devices']} device(s) ({name}): fit {entry['fit']['wall_s']:.1f} s "
            f"wall, {entry['fit']['cpu_s']:.1f} s CPU (+{entry['compile']['wall_s']:.1f} s "
            f"compile); scipy {scipy['fit']['wall_s']:.1f} s wall, {scipy['fit']['cpu_s']:.1f} s "
            f"CPU (residuals on {scipy['residuals_on']}); speedup x{entry['speedup_wall']:.1f} "
            f"wall, x{entry['speedup_cpu']:.1f} CPU"
        )
    lines.append(f"speedup including compile: x{result['speedup_including_compile']:.1f}")
    for name, entry in result["jacobian_cost"].items():
        lines.append(
            f"at the {name}: a Jacobian costs {entry['jacobian_over_residuals']:.1f} residual "
            f"evaluations, our fit {entry['fit_in_residual_evaluations']:.0f} against SciPy's "
            f"{scipy['residual_evaluations']}"
        )
    warm = result["ours"]["all_devices"].get("compile_warm_cache")
    if warm:
        lines.append(f"compile from the on-disk cache: {warm['wall_s']} s")
    return "\n".join(lines)


@hydra.main(config_path="../configs", config_name="benchmark_calibration", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_input_error(cfg):
        result = run(cfg, Path(HydraConfig.get().runtime.output_dir))
        print(report(result))


if __name__ == "__main__":
    main()
