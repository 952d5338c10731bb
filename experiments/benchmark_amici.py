"""Benchmark: the twin's calibration fit against pyPESTO + AMICI on the same PEtab problem.

    python experiments/benchmark_amici.py amici_python=/path/to/venv/bin/python
    python experiments/benchmark_amici.py amici_python=... data_dir=DIR 'runs=[A,B,C]'

AMICI and pyPESTO need petab >= 0.4, which cannot share an environment with Hydra, so they run
in their own environment (``amici_python``; docs/benchmarks.md says how to make one) through
``experiments/pypesto_amici.py``. In one run, on one machine:

1. the runs are exported as PEtab (``petab/``, :func:`twin.interop.export_petab`);
2. the twin fits them from the prior mean (``twin.calibrate.fit_one``: Levenberg-Marquardt with
   the structured forward-mode Jacobian, one XLA device, the model config's solver tolerances);
   compile and fit are timed separately, the fit ``repeats`` times (median);
3. pyPESTO compiles the problem with AMICI, evaluates its objective at the twin's optimum
   (tolerances 1e-10 / 1e-12) and fits from the problem's nominal values (the same start: the
   prior mean, donor effects 0) with ``amici_optimizer`` (Fides by default; L-BFGS-B stopped
   where a trial point's simulation failed) and AMICI's forward sensitivities at the twin's
   tolerances;
4. both objectives are compared on the twin's scale (PEtab's negative log-posterior minus
   :func:`twin.interop.objective_constant`), each re-evaluated at tolerances 1e-10 / 1e-12.

Writes ``benchmark_amici.json`` into the run directory and prints a table.
"""

from __future__ import annotations

import os

# As in experiments/calibrate.py: diffrax's checks as NaN, not host callbacks. One XLA device:
# AMICI runs on one core, so the twin does too.
if __name__ == "__main__":
    os.environ.setdefault("EQX_ON_ERROR", "nan")
    os.environ.setdefault("JAX_NUM_CPU_DEVICES", "1")

import json
import platform
import subprocess
import sys
from pathlib import Path

import hydra
import jax
import jax.numpy as jnp
import numpy as np
from benchmark_calibration import Clock, compile_and_time, median_call
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import twin.config as twin_config
from twin import TwinInputError
from twin._atomic import atomic_path
from twin._cli import exit_on_input_error, resolve_user_path
from twin.assays import MEASURED_VARIABLES
from twin.calibrate import (
    LMOptions,
    ModelSpec,
    ObjectiveData,
    ParameterLayout,
    build_problem,
    calibration_from_config,
    fit_one,
    make_prior,
)
from twin.calibrate._model import residuals_and_success
from twin.data import read_run_data
from twin.interop import export_petab, objective_constant, petab_parameter_values
from twin.provenance import write_provenance
from twin.simulate import SolverSettings

jax.config.update("jax_enable_x64", True)

SCRIPT = Path(__file__).resolve().parent / "pypesto_amici.py"
TIGHT = SolverSettings(rtol=1e-10, atol=1e-12, max_steps=100_000)


OPTIMIZERS = ("fides", "L-BFGS-B")  # experiments/pypesto_amici.py --optimizer


def _amici_python(cfg: DictConfig) -> str:
    if cfg.amici_optimizer not in OPTIMIZERS:
        raise TwinInputError(
            f"amici_optimizer={cfg.amici_optimizer!r}: choose from {list(OPTIMIZERS)}"
        )
    if not cfg.amici_python:
        raise TwinInputError(
            "amici_python: not set; give the python of an environment with amici, pypesto and "
            "petab >= 0.4 (docs/benchmarks.md: 'Calibration against pyPESTO+AMICI')"
        )
    path = resolve_user_path(str(cfg.amici_python))
    try:
        probe = subprocess.run(
            [
                str(path),
                "-c",
                "import amici, pypesto, petab"
                + (", fides" if cfg.amici_optimizer == "fides" else ""),
            ],
            capture_output=True,
            text=True,
        )
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
    except OSError as error:
        probe, last = None, str(error)
    if probe is None or probe.returncode != 0:
        raise TwinInputError(f"amici_python={cfg.amici_python!r}: cannot import amici: {last}")
    return str(path)


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Measure both fits, write ``benchmark_amici.json`` into ``out_dir`` and return it."""
    amici_python = _amici_python(cfg)
    params, structure, solver = twin_config.model_from_config(cfg.model)
    noise = twin_config.noise_from_config(cfg.noise)
    config = calibration_from_config(cfg.fit)  # export_petab refuses re-estimated SDs
    data = read_run_data(resolve_user_path(str(cfg.data_dir)))
    missing = sorted(set(cfg.runs) - set(data.run_ids))
    if missing:
        raise TwinInputError(f"runs: {missing} are not in {cfg.data_dir} ({data.run_ids[:5]}...)")
    data = data.select(list(cfg.runs))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir, cfg)
    exported = export_petab(
        data,
        out_dir / "petab",
        config,
        model_parameters=params,
        structure=structure,
        noise=noise,
        bound_sds=cfg.bound_sds,
    )
    constant = objective_constant(exported, noise)

    # --- the twin: one start (the prior mean), one device --------------------------------------
    problem = build_problem(data, pad_multiple=1)
    layout = ParameterLayout(
        tuple(config.fitted), tuple(config.donor_level), problem.n_donors_padded
    )
    spec = ModelSpec(layout, structure, solver, config.failure_residual)
    objective_data = ObjectiveData(
        problem.arrays,
        make_prior(params, layout, config.donor_sds()),
        jnp.asarray([noise.sd(v) for v in MEASURED_VARIABLES]),
    )
    x0 = jnp.concatenate(
        [objective_data.prior.mean(layout), jnp.zeros(layout.size - layout.n_population)]
    )
    options = LMOptions.from_config(config)
    compile_s, _, fit, compiled = compile_and_time(
        lambda x, d, o: fit_one(x, d, spec, o), x0, objective_data, options
    )
    fit_clock, fit = median_call(compiled, x0, objective_data, options, repeats=cfg.repeats)
    tight = ModelSpec(layout, structure, TIGHT, config.failure_residual)

    def tight_objective(x) -> float:
        r, ok = residuals_and_success(jnp.asarray(x), objective_data, tight)
        if not bool(np.all(ok)):
            raise RuntimeError("the twin's solve failed at its own optimum (tolerances 1e-10)")
        return 0.5 * float(np.sum(np.asarray(r) ** 2))

    theta, effects = layout.split(fit.x)
    point = petab_parameter_values(exported, np.asarray(theta), np.asarray(effects), config)
    point_path = out_dir / "twin_optimum.json"
    point_path.write_text(json.dumps(point, indent=2))
    twin = {
        "compile": compile_s,
        "fit": fit_clock.as_dict(),
        "objective": float(fit.objective),
        "objective_tight": tight_objective(fit.x),
        "steps": int(fit.steps),
        "accepted_steps": int(fit.accepted_steps),
        "converged": bool(fit.converged),
    }
    print(f"twin: {json.dumps(twin)}", flush=True)

    # --- pyPESTO + AMICI, in their own environment -------------------------------------------
    amici_json = out_dir / "pypesto_amici.json"
    command = [amici_python, str(SCRIPT), str(exported.yaml_path), "--point", str(point_path)]
    command += ["--out", str(amici_json), "--fit", f"--rtol={solver.rtol}"]
    command += [f"--atol={solver.atol}", f"--optimizer={cfg.amici_optimizer}"]
    with Clock() as amici_clock:
        done = subprocess.run(command, capture_output=True, text=True)
    (out_dir / "pypesto_amici.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"pyPESTO+AMICI failed (pypesto_amici.log): {last}")
    amici = json.loads(amici_json.read_text())

    amici_at_twin = amici["objective_at_point"] - constant
    amici_optimum = amici["fit_objective_tight"] - constant
    result = {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
        },
        "device": str(jax.devices()[0]),
        "runs": list(cfg.runs),
        "donors": len(problem.donor_ids),
        "measurements": int(len(exported.measurements)),
        "unknowns": int(layout.size),
        "objective_constant": constant,
        "twin": twin,
        "pypesto_amici": {**amici, "process_wall_s": amici_clock.wall},
        "objective_at_twin_optimum_relative_difference": abs(
            amici_at_twin - twin["objective_tight"]
        )
        / twin["objective_tight"],
        "optimum_difference": amici_optimum - twin["objective_tight"],
        "speedup_fit": amici["fit_s"] / twin["fit"]["wall_s"],
        "speedup_fit_cpu": amici["fit_cpu_s"] / twin["fit"]["cpu_s"],
        "speedup_including_compile": (amici["fit_s"] + amici["import_and_compile_s"])
        / (twin["fit"]["wall_s"] + twin["compile"]["wall_s"]),
    }
    with atomic_path(out_dir / "benchmark_amici.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    return result


def report(result: dict) -> str:
    """A markdown table of the measurements."""
    twin, amici = result["twin"], result["pypesto_amici"]
    rows = [
        (
            "objective at the optimum (twin scale, tol 1e-10)",
            f"{twin['objective_tight']:.6g}",
            f"{amici['fit_objective_tight'] - result['objective_constant']:.6g}",
        ),
        (
            "fit wall s (CPU s)",
            f"{twin['fit']['wall_s']:.2f} ({twin['fit']['cpu_s']:.2f})",
            f"{amici['fit_s']:.2f} ({amici['fit_cpu_s']:.2f})",
        ),
        ("compile s", f"{twin['compile']['wall_s']:.1f}", f"{amici['import_and_compile_s']:.1f}"),
        ("steps / objective evaluations", f"{twin['steps']}", f"{amici['fit_evaluations']}"),
    ]
    lines = [
        f"{len(result['runs'])} runs, {result['donors']} donors, {result['measurements']} "
        f"measurements, {result['unknowns']} unknowns; {result['machine']}",
        "",
        "| | twin | pyPESTO + AMICI |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        f"pyPESTO's objective at the twin's optimum: relative difference "
        f"{result['objective_at_twin_optimum_relative_difference']:.1e} from the twin's",
        f"fit speedup: x{result['speedup_fit']:.1f} wall, x{result['speedup_fit_cpu']:.1f} CPU; "
        f"including compile x{result['speedup_including_compile']:.2f}; pyPESTO's optimum minus "
        f"the twin's: {result['optimum_difference']:+.3g}",
    ]
    return "\n".join(lines)


@hydra.main(config_path="../configs", config_name="benchmark_amici", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_input_error(cfg):
        result = run(cfg, Path(HydraConfig.get().runtime.output_dir))
        print(report(result))


if __name__ == "__main__":
    sys.exit(main())
