"""PEtab export: passes PEtab's lint, and its objective (simulated by roadrunner, scored by
PEtab) equals the twin's calibration objective."""

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from twin import TwinInputError
from twin.assays import MEASURED_VARIABLES, AssayNoise
from twin.calibrate import (
    CalibrationConfig,
    ModelSpec,
    ObjectiveData,
    ParameterLayout,
    build_problem,
    make_prior,
)
from twin.calibrate._model import residuals_and_success
from twin.data import read_run_data
from twin.interop import export_petab, lint_petab, objective_constant, petab_parameter_values
from twin.interop._petab import BEFORE_EVENT_H, roadrunner_negative_log_posterior
from twin.kinetics import ModelStructure, default_parameters
from twin.simulate import SolverSettings


@pytest.fixture(scope="module")
def example(repo_root):
    return read_run_data(repo_root / "twin" / "data" / "example")


def test_petab_export_passes_lint(example, tmp_path):
    data = example.select(["R001"])
    exported = export_petab(
        data, tmp_path, CalibrationConfig(), model_parameters=default_parameters()
    )
    assert lint_petab(exported.yaml_path) == []
    for name in (
        "model.xml",
        "parameters.tsv",
        "conditions.tsv",
        "observables.tsv",
        "problem.yaml",
    ):
        assert (tmp_path / name).is_file()
    m = exported.measurements
    assert len(m) == len(data.measurements)
    # measurements at a unit operation's time are the culture just before it
    assert np.isclose(m["time"], 24.0 - BEFORE_EVENT_H).any() and not (m["time"] == 24.0).any()
    priors = exported.parameters.set_index("parameterId")["objectivePriorParameters"]
    assert priors["max_growth_rate_per_h__pop"] == f"{math.log(0.05)!r};0.3"
    assert priors["susceptible_fraction__logit"].endswith(";1.0")


@pytest.mark.slow
def test_petab_objective_equals_the_twins(example, tmp_path):
    """At a point off the prior mean, PEtab's negative log-posterior (roadrunner + PEtab's own
    likelihood) minus its constants equals the twin's objective 0.5 |r|^2."""
    data = example.select(["R001", "R004", "R005"])  # two donors
    config, params, noise = CalibrationConfig(), default_parameters(), AssayNoise()
    exported = export_petab(data, tmp_path, config, model_parameters=params, noise=noise)
    problem = build_problem(data, pad_multiple=1)
    layout = ParameterLayout(
        tuple(config.fitted), tuple(config.donor_level), problem.n_donors_padded
    )
    solver = SolverSettings(rtol=1e-10, atol=1e-12, max_steps=100_000)
    spec = ModelSpec(layout, ModelStructure(), solver, config.failure_residual, 1)
    prior = make_prior(params, layout, config.donor_sds())
    noise_sd = np.array([noise.sd(v) for v in MEASURED_VARIABLES])
    objective_data = ObjectiveData(problem.arrays, prior, noise_sd)
    rng = np.random.default_rng(1)
    theta = np.asarray(prior.mean(layout)) + 0.3 * np.asarray(
        prior.population_sd
    ) * rng.standard_normal(layout.n_population)
    effects = 0.2 * rng.standard_normal((layout.n_donors, len(layout.donor_level)))
    r, ok = residuals_and_success(jnp.asarray(layout.join(theta, effects)), objective_data, spec)
    assert bool(np.all(ok))
    twin_objective = 0.5 * float(np.sum(np.asarray(r) ** 2))
    values = petab_parameter_values(exported, theta, effects, config)
    petab_objective = roadrunner_negative_log_posterior(exported, values)
    assert petab_objective - objective_constant(exported, noise) == pytest.approx(
        twin_objective, rel=1e-5
    )


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        (None, "error: amici_python: not set; give the python of an environment with amici"),
        ("/no/such/python", "error: amici_python='/no/such/python': cannot import amici"),
    ],
)
def test_amici_benchmark_without_amici_says_what_is_missing(repo_root, tmp_path, argument, message):
    """The comparison needs AMICI in another environment; without one the command stops with one
    error line (exit 2) before any work."""
    import subprocess
    import sys

    command = [sys.executable, str(repo_root / "experiments" / "benchmark_amici.py")]
    command += [f"hydra.run.dir={tmp_path / 'run'}"]
    if argument:
        command.append(f"amici_python={argument}")
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), lines


@pytest.mark.parametrize("key", ["fit_noise", "fit_donor_sd"])
def test_export_refuses_sds_re_estimated_between_fits(example, tmp_path, key):
    config = CalibrationConfig(**{key: True})
    with pytest.raises(TwinInputError, match=f"fit.{key}=true: the PEtab problem holds"):
        export_petab(example, tmp_path, config, model_parameters=default_parameters())
    assert not any(tmp_path.iterdir())  # nothing written


def test_export_holds_an_estimated_omega_at_its_given_value_and_says_so(example, tmp_path, caplog):
    config = CalibrationConfig(
        donor_level=["max_growth_rate_per_h", "base_death_rate_per_h"],
        donor_sd_estimated=["base_death_rate_per_h"],
        donor_sd_by_parameter={"base_death_rate_per_h": 0.6},
    )
    with caplog.at_level("WARNING", logger="twin.interop._petab"):
        export_petab(example, tmp_path, config, model_parameters=default_parameters())
    assert "fit.donor_sd_estimated=['base_death_rate_per_h']" in caplog.text
    caplog.clear()  # a name that is not donor-level has no omega to hold: no warning
    not_donor_level = dataclasses.replace(config, donor_sd_estimated=["lysis_rate_per_h"])
    with caplog.at_level("WARNING", logger="twin.interop._petab"):
        export_petab(
            example, tmp_path / "again", not_donor_level, model_parameters=default_parameters()
        )
    assert "donor_sd_estimated" not in caplog.text
    parameters = pd.read_csv(tmp_path / "parameters.tsv", sep="\t")
    effects = parameters[parameters["parameterName"].str.startswith("base_death_rate_per_h[")]
    assert len(effects) and (effects["objectivePriorParameters"] == "0.0;0.6").all()


@pytest.mark.slow  # compiles the model with AMICI (6-12 min); only where an AMICI env is named
def test_pypesto_amici_reaches_the_twins_optimum(repo_root, tmp_path):
    """In an AMICI environment (``CARTWIN_AMICI_PYTHON``: its python, with amici, pypesto,
    petab and fides; docs/benchmarks.md): AMICI's objective at the twin's optimum is the twin's,
    and pyPESTO's fit from the same start reaches the same optimum."""
    import json
    import os
    import subprocess
    import sys

    amici_python = os.environ.get("CARTWIN_AMICI_PYTHON")
    if not amici_python:
        pytest.skip("set CARTWIN_AMICI_PYTHON to the python of an AMICI environment")
    command = [sys.executable, str(repo_root / "experiments" / "benchmark_amici.py")]
    command += [f"hydra.run.dir={tmp_path}", f"amici_python={amici_python}"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=repo_root)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "benchmark_amici.json").read_text())
    assert result["objective_at_twin_optimum_relative_difference"] < 1e-6
    assert result["twin"]["converged"]
    # The same optimum (either fit may stop a little short of it; 1e-4 of the objective).
    assert abs(result["optimum_difference"]) < 1e-4 * result["twin"]["objective_tight"]
