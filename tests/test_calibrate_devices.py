"""Calibration split over several devices: the device choice, and the same residuals and
Jacobian as on one device (in a subprocess with two CPU devices, which JAX only creates at
start-up)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from twin import TwinInputError
from twin.calibrate import CalibrationConfig, check_calibration_config, run_devices

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("requested", "n_runs", "available", "expected"),
    [(0, 40, 1, 1), (0, 40, 2, 2), (0, 40, 16, 10), (0, 8, 16, 8), (0, 9, 2, 1), (3, 9, 4, 3)],
)
def test_run_devices_takes_the_most_that_divide_the_runs(requested, n_runs, available, expected):
    assert run_devices(requested, n_runs, available) == expected


def test_more_devices_than_there_are_is_a_clear_error():
    with pytest.raises(TwinInputError, match=r"fit\.devices=4: only 2 .*JAX_NUM_CPU_DEVICES=4"):
        run_devices(4, 8, 2)
    with pytest.raises(TwinInputError, match=r"fit\.devices=-1"):
        check_calibration_config(CalibrationConfig(devices=-1))


SCRIPT = textwrap.dedent(
    """
    import dataclasses
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from twin import default_parameters
    from twin.assays import MEASURED_VARIABLES, AssayNoise
    from twin.calibrate import (CalibrationConfig, ModelSpec, ObjectiveData, ParameterLayout,
        build_problem, make_prior, residuals_and_jacobian)
    from twin.calibrate import run_devices
    from twin.calibrate._model import residuals_and_success
    from twin.data import read_run_data
    from twin.kinetics import ModelStructure
    from twin.simulate import SolverSettings

    assert jax.local_device_count() == 2
    config = CalibrationConfig()
    example = read_run_data("twin/data/example")
    data = example.select(example.run_ids[:4])  # two donors
    problem = build_problem(data, pad_multiple=4)
    layout = ParameterLayout(tuple(config.fitted), tuple(config.donor_level),
        problem.n_donors_padded)
    noise = AssayNoise()
    data = ObjectiveData(problem.arrays, make_prior(default_parameters(), layout,
        config.donor_sds()), jnp.asarray([noise.sd(v) for v in MEASURED_VARIABLES]))
    spec = ModelSpec(layout, ModelStructure(), SolverSettings())
    split = dataclasses.replace(spec, devices=run_devices(0, problem.arrays.n_runs))
    assert split.devices == 2
    x = jnp.concatenate([data.prior.mean(layout) + 0.1,
        0.2 * jnp.ones(layout.size - layout.n_population)])
    evaluate = jax.jit({FUNCTION}, static_argnums=2)
    one, two = evaluate(x, data, spec), evaluate(x, data, split)
    assert bool(jnp.all(one[-1])) and bool(jnp.all(two[-1]))
    for a, b in zip(one[:-1], two[:-1]):
        scale = float(jnp.max(jnp.abs(a)))
        error = float(jnp.max(jnp.abs(a - b)))
        assert scale > 0 and error <= 1e-9 * scale, (error, scale)  # rounding only
    print("ok")
    """
)


@pytest.mark.parametrize(
    "function",
    [
        "residuals_and_success",
        pytest.param("residuals_and_jacobian", marks=pytest.mark.slow),  # two more compiles
    ],
)
def test_runs_split_over_two_devices_give_the_same_result(function):
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "2", "JAX_PLATFORMS": "cpu"}
    script = SCRIPT.replace("{FUNCTION}", function)
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


PADDED = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from twin.calibrate._model import map_runs_on_all_devices

    assert jax.local_device_count() == 2
    def fn(x, y, s):
        return x * s + y.sum(), jnp.sin(x) + y
    x, y = jnp.arange(3.0), jnp.arange(12.0).reshape(3, 4)  # 3 runs: one padded
    split = jax.jit(lambda x, y, s: map_runs_on_all_devices(fn, (x, y), (s,)))(x, y, 2.0)
    whole = jax.vmap(fn, in_axes=(0, 0, None))(x, y, 2.0)
    for a, b in zip(split, whole):
        assert a.shape == b.shape and np.array_equal(a, b), (a, b)
    print("ok")
    """
)


def test_any_number_of_runs_splits_over_all_devices_with_padding():
    """Conditioning and forecast draws use every device whatever the number of runs."""
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "2", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", PADDED], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
