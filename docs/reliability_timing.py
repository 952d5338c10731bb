"""Residual and Jacobian cost of the calibration objective on 8 virtual runs (2 donors).

    PYTHONPATH=<source tree> python docs/reliability_timing.py <label>

Run once per source tree (e.g. a `git archive` of the commit before a solver change, then the
working tree), alternating; prints the median and minimum wall and process-CPU time of 15 calls
after a compile. Used for the solver-failure handling in docs/reliability.md.
"""

import os
import sys
import time

os.environ.setdefault("EQX_ON_ERROR", "nan")  # cacheable programs, as in experiments/calibrate.py

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from twin import default_parameters  # noqa: E402
from twin.assays import MEASURED_VARIABLES, AssayNoise  # noqa: E402
from twin.calibrate import CalibrationConfig  # noqa: E402
from twin.calibrate._model import (  # noqa: E402
    ModelSpec,
    ObjectiveData,
    ParameterLayout,
    make_prior,
    residuals_and_jacobian,
    residuals_and_success,
)
from twin.calibrate._problem import build_problem  # noqa: E402
from twin.kinetics import ModelStructure  # noqa: E402
from twin.process import Recipe  # noqa: E402
from twin.simulate import SolverSettings  # noqa: E402
from twin.virtual import generate_dataset  # noqa: E402


def main(label: str) -> None:
    config = CalibrationConfig()
    virtual = generate_dataset(
        3,
        default_parameters(),
        {"max_growth_rate_per_h": 0.2},
        Recipe(),
        n_donors=2,
        runs_per_donor=4,
        uniform={"moi": [3.0, 8.0]},
    )
    problem = build_problem(virtual.run_data, pad_multiple=config.pad_multiple)
    layout = ParameterLayout(
        tuple(config.fitted), tuple(config.donor_level), problem.n_donors_padded
    )
    solver = SolverSettings(adjoint="forward")
    spec = ModelSpec(layout, ModelStructure(), solver, config.failure_residual)
    prior = make_prior(default_parameters(), layout, config.donor_sds())
    noise = jnp.asarray([AssayNoise().sd(v) for v in MEASURED_VARIABLES])
    data = ObjectiveData(problem.arrays, prior, noise)
    n_effects = layout.n_donors * len(layout.donor_level)
    x = jnp.concatenate([prior.mean(layout), jnp.zeros(n_effects)])
    functions = {
        "residuals": jax.jit(lambda x: residuals_and_success(x, data, spec)),
        "jacobian": jax.jit(lambda x: residuals_and_jacobian(x, data, spec)),
    }
    for name, function in functions.items():
        began = time.perf_counter()
        jax.block_until_ready(function(x))
        compile_s = time.perf_counter() - began
        wall, cpu = [], []
        for _ in range(15):
            began, began_cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(function(x))
            wall.append(time.perf_counter() - began)
            cpu.append(time.process_time() - began_cpu)
        print(
            f"{label} {name}: wall median {1e3 * np.median(wall):.1f} ms "
            f"min {1e3 * min(wall):.1f}; CPU median {1e3 * np.median(cpu):.1f} ms "
            f"min {1e3 * min(cpu):.1f}; first call {compile_s:.1f} s"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "run")
