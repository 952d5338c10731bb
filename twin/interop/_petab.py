"""The calibration problem as PEtab v1: the twin's model, data, noise models and priors.

What :func:`twin.calibrate.calibrate` maximizes, restated in PEtab's terms (no new modelling):

- **model**: :func:`export_sbml` of all runs' schedules in one SBML model; a constant parameter
  ``batch_index`` (set per condition) selects a run's unit operations;
- **conditions**: one per run: its ``batch_index`` and its donor's effects;
- **parameters**: every fitted kinetic parameter ``p`` with the twin's prior (Gaussian on its
  estimation scale, sd from the parameter table, mean from the model config). Log-scale
  parameters are estimated as ``p__pop`` on PEtab's ``log`` scale; logit-scale ones (PEtab v1
  has no logit scale) as ``p__logit`` on ``lin``. Donor-level parameters add one effect
  ``p__effect__<donor>`` per donor (Gaussian, mean 0, sd omega), on the same scale; the model's
  ``p`` is an assignment rule combining them exactly as ``twin.calibrate`` does;
- **observables**: ``obs_<variable>`` = the model's ``assay_<variable>`` (the variable on its
  assay's Gaussian scale, generated from :func:`twin.assays.to_assay_scale`) with normal noise
  of the assay's SD on ``lin`` scale; **measurements** are therefore on that assay scale too
  (``to_assay_scale`` of the recorded value; the recorded value itself is kept in an extra
  column ``measured_value`` for reference);
- a measurement at the time of one of its run's unit operations describes the culture just
  before the operation (RUN_DATA.md); simulators report the state after an event at its time,
  so such a measurement is written :data:`BEFORE_EVENT_H` earlier.

So the PEtab negative log-likelihood plus negative log-prior equals the twin's objective
``0.5 |r|^2`` plus constants (``log sd + log(2 pi)/2`` per datum and per prior term):
:func:`objective_constant`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import sympy as sp
import yaml

from .._atomic import atomic_path
from .._errors import TwinInputError
from ..assays import ASSAY_SCALES, MEASURED_VARIABLES, AssayNoise, to_assay_scale
from ..calibrate import CalibrationConfig
from ..data import RunData
from ..kinetics import PARAMETER_TABLE, KineticParameters, ModelStructure, to_unconstrained
from ..process import Recipe, build_schedule
from ._sbml import ExtraParameter, _event_groups as event_groups, export_sbml

log = logging.getLogger(__name__)

BEFORE_EVENT_H = 1.0e-6
_SPECS = {spec.name: spec for spec in PARAMETER_TABLE}
_BATCH = "batch_index"


def _sid(text: str) -> str:
    clean = re.sub(r"\W", "_", str(text))
    return clean if re.match(r"[A-Za-z_]", clean) else f"_{clean}"


def population_id(name: str) -> str:
    return f"{name}__pop" if _SPECS[name].transform == "log" else f"{name}__logit"


def effect_id(name: str, donor: str) -> str:
    return f"{name}__effect__{_sid(donor)}"


@dataclasses.dataclass(frozen=True)
class PetabExport:
    """Paths of the written files, and the tables."""

    yaml_path: Path
    parameters: pd.DataFrame
    conditions: pd.DataFrame
    observables: pd.DataFrame
    measurements: pd.DataFrame
    run_ids: tuple[str, ...]
    donor_ids: tuple[str, ...]


def export_petab(
    data: RunData,
    out_dir: Path,
    config: CalibrationConfig,
    *,
    model_parameters: KineticParameters,
    structure: ModelStructure = ModelStructure(),
    noise: AssayNoise = AssayNoise(),
    medium_glucose_mM: float = Recipe.medium_glucose_mM,
    medium_il2_IU_per_mL: float = Recipe.medium_il2_IU_per_mL,
    bound_sds: float = 10.0,
) -> PetabExport:
    """Write ``model.xml``, the four PEtab tables and ``problem.yaml`` into ``out_dir``.

    ``bound_sds``: estimation bounds, this many prior SDs either side of the prior mean (PEtab
    requires bounds; the twin's fit has none).
    """
    for key in ("fit_noise", "fit_donor_sd"):
        if getattr(config, key):  # PEtab v1 has no place for SDs re-estimated between fits
            raise TwinInputError(
                f"fit.{key}=true: the PEtab problem holds the noise and donor SDs fixed "
                "(noise.*, fit.donor_sd); export without it"
            )
    estimated = [
        name
        for name, is_estimated in zip(config.donor_level, config.omega_estimated(), strict=True)
        if is_estimated
    ]
    if estimated:
        log.warning(
            "fit.donor_sd_estimated=%s: the PEtab problem holds each omega at its given value "
            "(fit.donor_sd, fit.donor_sd_by_parameter), the problem of the calibration's first "
            "fit, before its omega rounds",
            estimated,
        )
    run_ids = tuple(data.run_ids)
    if data.measurements.empty:
        raise TwinInputError("the run data has no measurements: nothing to calibrate against")
    donors = tuple(dict.fromkeys(data.donor_of(r) for r in run_ids))
    schedules = [
        build_schedule(
            data.events_for(r),
            medium_glucose_mM=medium_glucose_mM,
            medium_il2_IU_per_mL=medium_il2_IU_per_mL,
        )
        for r in run_ids
    ]
    base = to_unconstrained(model_parameters)
    fitted, donor_level = list(config.fitted), list(config.donor_level)
    omega = dict(zip(donor_level, config.donor_sds(), strict=True))

    # --- model: fitted parameters as rules over population values and donor effects -----------
    rules, extra = {}, []
    for name in fitted:
        spec = _SPECS[name]
        effect = sp.Symbol(f"{name}__donor_effect") if name in donor_level else sp.Integer(0)
        pop = sp.Symbol(population_id(name))
        if spec.transform == "log":
            rules[name] = pop * sp.exp(effect)
            extra.append(
                ExtraParameter(
                    pop.name,
                    float(getattr(model_parameters, name)),
                    spec.unit,
                    f"population value of {name}",
                )
            )
        else:
            rules[name] = 1 / (1 + sp.exp(-(pop + effect)))
            extra.append(
                ExtraParameter(
                    pop.name,
                    float(getattr(base, name)),
                    "",
                    f"population value of {name} on the logit scale",
                )
            )
        if name in donor_level:
            extra.append(
                ExtraParameter(
                    effect.name,
                    0.0,
                    "",
                    f"donor effect on {name} (estimation scale), per condition",
                )
            )
    exported = export_sbml(
        model_parameters,
        schedules,
        structure,
        model_id="cart_twin_calibration",
        batch_parameter=_BATCH,
        parameter_rules=rules,
        extra_parameters=extra,
        assay_rules=True,
    )
    errors = exported.errors()
    if errors:
        raise TwinInputError(
            f"the exported SBML fails libsbml's check: {errors[0]}", problems=errors
        )

    # --- parameters -----------------------------------------------------------------------------
    rows = []
    for name in fitted:
        spec, mean = _SPECS[name], float(getattr(base, name))
        log_scale = spec.transform == "log"
        lower, upper = mean - bound_sds * spec.prior_sd, mean + bound_sds * spec.prior_sd
        rows.append(
            {
                "parameterId": population_id(name),
                "parameterName": name,
                "parameterScale": "log" if log_scale else "lin",
                "lowerBound": math.exp(lower) if log_scale else lower,
                "upperBound": math.exp(upper) if log_scale else upper,
                "nominalValue": math.exp(mean) if log_scale else mean,
                "estimate": 1,
                "objectivePriorType": "parameterScaleNormal",
                "objectivePriorParameters": f"{mean!r};{spec.prior_sd!r}",
            }
        )
    for donor in donors:
        for name in donor_level:
            rows.append(
                {
                    "parameterId": effect_id(name, donor),
                    "parameterName": f"{name}[{donor}]",
                    "parameterScale": "lin",
                    "lowerBound": -bound_sds * omega[name],
                    "upperBound": bound_sds * omega[name],
                    "nominalValue": 0.0,
                    "estimate": 1,
                    "objectivePriorType": "parameterScaleNormal",
                    "objectivePriorParameters": f"0.0;{omega[name]!r}",
                }
            )
    parameters = pd.DataFrame(rows)

    # --- conditions -----------------------------------------------------------------------------
    conditions = pd.DataFrame(
        [
            {
                "conditionId": f"run_{_sid(run_id)}",
                "conditionName": f"{run_id} (donor {data.donor_of(run_id)})",
                _BATCH: k,
                **{f"{n}__donor_effect": effect_id(n, data.donor_of(run_id)) for n in donor_level},
            }
            for k, run_id in enumerate(run_ids)
        ]
    )

    # --- observables and measurements -------------------------------------------------------------
    observables = pd.DataFrame(
        [
            {
                "observableId": f"obs_{v}",
                "observableName": f"{v} on its assay scale ({ASSAY_SCALES[v][0]})",
                "observableFormula": exported.assay_ids[v],
                "observableTransformation": "lin",
                "noiseFormula": repr(float(noise.sd(v))),
                "noiseDistribution": "normal",
            }
            for v in MEASURED_VARIABLES
        ]
    )
    frames = []
    for k, run_id in enumerate(run_ids):
        rows = data.measurements_for(run_id)
        event_times = np.array([t for t, _ in event_groups(schedules[k])[1:]])
        times = rows["time_h"].to_numpy(float)
        at_event = np.isin(times, event_times) & (times > 0)
        frames.append(
            pd.DataFrame(
                {
                    "observableId": "obs_" + rows["variable"].astype(str),
                    "simulationConditionId": f"run_{_sid(run_id)}",
                    "time": np.where(at_event, times - BEFORE_EVENT_H, times),
                    "measurement": [
                        float(to_assay_scale(v, np.float64(x)))
                        for v, x in zip(rows["variable"], rows["value"], strict=True)
                    ],
                    "measured_value": rows["value"].to_numpy(float),
                }
            )
        )
    measurements = pd.concat(frames, ignore_index=True)

    # --- files ----------------------------------------------------------------------------------
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {
        "parameters.tsv": parameters,
        "conditions.tsv": conditions,
        "observables.tsv": observables,
        "measurements.tsv": measurements,
    }
    with atomic_path(out_dir / "model.xml") as tmp:
        tmp.write_text(exported.to_string())
    for filename, table in tables.items():
        with atomic_path(out_dir / filename) as tmp:
            table.to_csv(tmp, sep="\t", index=False)
    problem = {
        "format_version": 1,
        "parameter_file": "parameters.tsv",
        "problems": [
            {
                "sbml_files": ["model.xml"],
                "condition_files": ["conditions.tsv"],
                "measurement_files": ["measurements.tsv"],
                "observable_files": ["observables.tsv"],
            }
        ],
    }
    with atomic_path(out_dir / "problem.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(problem, sort_keys=False))
    return PetabExport(
        yaml_path=out_dir / "problem.yaml",
        parameters=parameters,
        conditions=conditions,
        observables=observables,
        measurements=measurements,
        run_ids=run_ids,
        donor_ids=donors,
    )


def objective_constant(export: PetabExport, noise: AssayNoise) -> float:
    """PEtab's negative log-posterior minus the twin's objective (the same at every point):
    ``log sd + log(2 pi)/2`` per measurement and per prior term."""
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    variables = export.measurements["observableId"].str.removeprefix("obs_")
    data = sum(math.log(noise.sd(v)) + half_log_2pi for v in variables)
    prior_sds = [float(p.split(";")[1]) for p in export.parameters["objectivePriorParameters"]]
    return data + sum(math.log(sd) + half_log_2pi for sd in prior_sds)


def petab_parameter_values(
    export: PetabExport, theta_pop: Sequence[float], effects: np.ndarray, config: CalibrationConfig
) -> dict[str, float]:
    """The PEtab parameters (linear scale) at a twin estimate: ``theta_pop`` (estimation scale,
    ``config.fitted`` order) and ``effects`` ``[donors, donor_level]`` (real donors, in
    ``export.donor_ids`` order)."""
    values = {}
    for name, theta in zip(config.fitted, theta_pop, strict=True):
        log_scale = _SPECS[name].transform == "log"
        values[population_id(name)] = math.exp(theta) if log_scale else float(theta)
    for d, donor in enumerate(export.donor_ids):
        for q, name in enumerate(config.donor_level):
            values[effect_id(name, donor)] = float(effects[d, q])
    return values


@contextlib.contextmanager
def _petab_pandas():
    """petab < 0.4 (the last release that shares hydra's antlr4 version) predates pandas 3's
    string dtype: read PEtab tables with object strings while it runs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the option is deprecated in pandas 3
        try:
            with pd.option_context("future.infer_string", False):
                yield
        except (KeyError, pd.errors.OptionError):  # pandas < 2.1 or >= 4: no such option
            yield


def lint_petab(yaml_path: Path) -> list[str]:
    """PEtab's own checks (what ``petablint`` runs): each error, one line; empty if none."""
    import petab

    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.ERROR:
                messages.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("petab")
    logger.addHandler(handler)
    try:
        with _petab_pandas():
            problem = petab.Problem.from_yaml(str(yaml_path))
            failed = petab.lint_problem(problem)
    finally:
        logger.removeHandler(handler)
    if failed and not messages:
        messages.append("petab.lint_problem reported a problem (see its log)")
    return messages


def roadrunner_negative_log_posterior(
    export: PetabExport,
    values: dict[str, float],
    *,
    rtol: float = 1e-10,
    atol: float = 1e-12,
) -> float:
    """The PEtab problem's negative log-posterior at ``values`` (linear scale), simulated by
    libroadrunner and scored by PEtab's own likelihood (``petab.calculate_llh``) plus the
    parameter table's priors: an evaluation that shares no code with the twin's objective
    beyond the exported model."""
    import petab

    from ._roadrunner import load_roadrunner

    model_path = export.yaml_path.parent / "model.xml"
    rr = load_roadrunner(model_path.read_text(), rtol=rtol, atol=atol)
    simulated = []
    for _, condition in export.conditions.iterrows():
        rr.resetAll()
        for pid, value in values.items():
            if pid in rr.model.getGlobalParameterIds():
                rr[pid] = value
        for column, value in condition.items():
            if column in ("conditionId", "conditionName"):
                continue
            rr[column] = values[value] if isinstance(value, str) else float(value)
        rr.reset()  # re-evaluate the initial assignments with this condition's parameters
        rows = export.measurements[
            export.measurements["simulationConditionId"] == condition["conditionId"]
        ]
        times = np.unique(rows["time"].to_numpy(float))
        grid = np.concatenate([[0.0], times]) if times[0] > 0 else times
        ids = sorted(set(rows["observableId"]))
        formulas = dict(
            zip(
                export.observables["observableId"],
                export.observables["observableFormula"],
                strict=True,
            )
        )
        result = rr.simulate(times=list(grid), selections=["time"] + [formulas[i] for i in ids])
        at = {t: k for k, t in enumerate(grid)}
        column = {i: 1 + k for k, i in enumerate(ids)}
        sim = rows[["observableId", "simulationConditionId", "time"]].copy()
        sim["simulation"] = [
            result[at[t], column[o]]
            for o, t in zip(rows["observableId"], rows["time"], strict=True)
        ]
        simulated.append(sim)
    measurement_df = export.measurements.drop(columns=["measured_value"])
    llh = petab.calculate_llh(
        measurement_df,
        pd.concat(simulated, ignore_index=True),
        export.observables.set_index("observableId"),
        export.parameters.set_index("parameterId"),
    )
    prior = 0.0
    for _, row in export.parameters.iterrows():
        mean, sd = map(float, row["objectivePriorParameters"].split(";"))
        x = values[row["parameterId"]]
        x = math.log(x) if row["parameterScale"] == "log" else x
        prior += 0.5 * ((x - mean) / sd) ** 2 + math.log(sd) + 0.5 * math.log(2 * math.pi)
    return -llh + prior
