"""``calibration.nc``: a :class:`~._result.Calibration` as one xarray Dataset, and back.

Layout (estimation scale = log or logit, see ``PARAMETER_TABLE``):

- dim ``parameter`` (the fitted names): ``estimate_unconstrained``, ``prior_sd``, and the
  summary columns (``estimate``, ``lower_95``, ``upper_95``, ``prior``, ... in natural units,
  ``identified``);
- dims ``(donor, donor_level_parameter)``: ``donor_effect``; ``donor_sd`` on the latter;
- dims ``(entry_i, entry_j)``: ``covariance`` over ``[population, donor effects]``, both
  coordinates naming each entry (``name`` or ``name[donor]``);
- dim ``kinetic_parameter`` (every parameter): ``model_parameter`` (config values) and
  ``population_parameter`` (the calibrated population), natural units;
- dim ``variable`` (assays): ``noise_sd``, ``initial_noise_sd``, ``residual_rms``;
- dim ``run`` with ``run_donor``; dims ``observation``, ``fit`` and ``profile_point``: the
  observations, optimizer diagnostics and profile tables, one variable per column;
- scalars ``objective`` and ``n_observations``; attrs ``structure`` and ``solver`` (JSON),
  ``config`` (YAML), ``prior_dominated_ratio``, ``high_correlation``, ``format_version``
  (:data:`FORMAT_VERSION`, checked on load) and ``twin_version``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .._atomic import atomic_path
from .._errors import TwinInputError
from ..assays import MEASURED_VARIABLES, AssayNoise, Likelihood
from ..kinetics import PARAMETER_NAMES, KineticParameters, ModelStructure, default_parameters
from ..simulate import SolverSettings
from ._result import Calibration

# Bump when the layout or the meaning of a stored variable changes: files of another version
# are refused on load with a message that says so (never misread).
FORMAT_VERSION = 1

_REQUIRED_VARIABLES = (
    "parameter",
    "donor_level_parameter",
    "donor",
    "run",
    "run_donor",
    "kinetic_parameter",
    "variable",
    "prior_sd",
    "donor_effect",
    "donor_sd",
    "model_parameter",
    "noise_sd",
    "initial_noise_sd",
    "objective",
    "n_observations",
)
_REQUIRED_ATTRS = ("structure", "solver", "prior_dominated_ratio", "high_correlation")

_TABLES = {
    "observation": "observations",
    "fit": "diagnostics",
    "profile_point": "profiles",
    "discrepancy_row": "discrepancy",
    "candidate": "selection",
}
_PROFILE_COLUMNS = ("parameter", "value_unconstrained", "value", "objective", "converged")


def calibration_dataset(calibration: Calibration) -> xr.Dataset:
    """The calibration as a Dataset (layout in the module docstring)."""
    c = calibration
    summary = c.summary().set_index("parameter")
    population = c.population
    variables = {
        "estimate_unconstrained": ("parameter", c.estimate),
        "prior_sd": ("parameter", c.prior_sd),
        "donor_effect": (("donor", "donor_level_parameter"), c.donor_effects),
        "donor_sd": ("donor_level_parameter", c.donor_sd),
        "covariance": (("entry_i", "entry_j"), c.covariance),
        "model_parameter": ("kinetic_parameter", _values(c.model_parameters)),
        "population_parameter": ("kinetic_parameter", _values(population)),
        "noise_sd": ("variable", [c.noise.sd(v) for v in MEASURED_VARIABLES]),
        "initial_noise_sd": ("variable", [c.initial_noise.sd(v) for v in MEASURED_VARIABLES]),
        "residual_rms": ("variable", _residual_rms(c.observations)),
        "objective": ((), c.objective),
        "n_observations": ((), c.n_observations),
    }
    for column in summary.columns:
        if column not in ("prior_sd",):
            variables[column] = ("parameter", _storable(summary[column].to_numpy()))
    for dim, field in _TABLES.items():
        variables.update(_table_variables(getattr(c, field), dim))
    names = np.array(c.entry_names, dtype=object)
    coords = {
        "parameter": np.array(c.fitted, dtype=object),
        "donor_level_parameter": np.array(c.donor_level, dtype=object),
        "donor": np.array(c.donor_ids, dtype=object),
        "entry_i": names,
        "entry_j": names,
        "kinetic_parameter": np.array(PARAMETER_NAMES, dtype=object),
        "variable": np.array(MEASURED_VARIABLES, dtype=object),
        "run": np.array(c.run_ids, dtype=object),
        "run_donor": ("run", np.array(c.run_donor_ids, dtype=object)),
    }
    attrs = {
        "structure": json.dumps(c.structure.as_dict()),
        "likelihood": json.dumps(c.likelihood.as_dict()),
        "converged": int(c.converged),
        "solver": json.dumps(dataclasses.asdict(c.solver)),
        "config": c.config,
        "prior_dominated_ratio": c.prior_dominated_ratio,
        "high_correlation": c.high_correlation,
        "description": "hierarchical MAP calibration with Laplace covariance (twin.calibrate)",
        "format_version": FORMAT_VERSION,
        "twin_version": _twin_version(),
    }
    return xr.Dataset(variables, coords, attrs)


def write_calibration(calibration: Calibration, path: str | Path) -> Path:
    """Write ``calibration.nc`` atomically; returns the path."""
    target = Path(path)
    dataset = calibration_dataset(calibration)
    with atomic_path(target) as tmp:
        dataset.to_netcdf(tmp)
    return target


def load_calibration(path: str | Path) -> Calibration:
    """Read a file written by :func:`write_calibration`, checked before any use.

    **Raises:** :class:`~twin.TwinInputError` naming the file if it is missing, unreadable
    (truncated, not netCDF), of another format version, lacks a variable or attribute, names
    an unknown parameter or assay, or holds a non-finite estimate, covariance or noise SD.
    """
    source = Path(path)
    if not source.is_file():
        raise TwinInputError(f"calibration file not found: {source}")
    try:
        with xr.open_dataset(source) as opened:
            ds = opened.load()
    except Exception as error:  # netCDF4/h5py/xarray raise OSError, ValueError, KeyError...
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TwinInputError(
            f"{source}: cannot be read as a calibration (netCDF) file: {reason}"
        ) from None
    _check_format(ds, source)
    try:
        calibration = _calibration(ds)
    except (KeyError, ValueError, TypeError, IndexError) as error:
        raise TwinInputError(f"{source}: {_describe(error)}") from None
    _check_values(calibration, source)
    return calibration


def _check_format(ds: xr.Dataset, source: Path) -> None:
    missing = [name for name in ("estimate_unconstrained", "covariance") if name not in ds]
    if missing:
        raise TwinInputError(f"{source} is not a calibration file (no {', '.join(missing)})")
    version = ds.attrs.get("format_version")
    if version != FORMAT_VERSION:
        written = "an older twin (no format_version)" if version is None else f"format {version}"
        raise TwinInputError(
            f"{source}: written by {written} (twin_version "
            f"{ds.attrs.get('twin_version', 'unknown')}), this twin reads calibration format "
            f"{FORMAT_VERSION} only; re-run experiments/calibrate.py"
        )
    for name in _REQUIRED_VARIABLES:
        if name not in ds.variables:
            raise TwinInputError(f"{source}: variable {name!r} is missing")
    for name in _REQUIRED_ATTRS:
        if name not in ds.attrs:
            raise TwinInputError(f"{source}: attribute {name!r} is missing")
    # A parameter added to the model since the file was written is fine where the file's
    # structure never reads it (it then keeps its table default).
    stored = set(_strings(ds["kinetic_parameter"]))
    try:
        unused = set(_stored_structure(ds).unused_parameters)
    except (ValueError, TypeError):  # a bad structure attribute is reported when it is read
        unused = set()
    unknown = sorted((stored ^ set(PARAMETER_NAMES)) - (unused - stored))
    if unknown:
        raise TwinInputError(
            f"{source}: written for another model version (parameters {', '.join(unknown)} "
            "differ from this model's); re-run experiments/calibrate.py"
        )
    for coordinate, known in (("parameter", PARAMETER_NAMES), ("variable", MEASURED_VARIABLES)):
        names = [n for n in _strings(ds[coordinate]) if n not in known]
        if names:
            raise TwinInputError(f"{source}: unknown {coordinate} name(s) {', '.join(names)}")


def _describe(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"variable or attribute {error.args[0]!r} is missing"
    if isinstance(error, json.JSONDecodeError):
        return f"an attribute is not valid JSON ({error.msg})"
    return f"inconsistent contents ({str(error).splitlines()[0]})"


def _check_values(c: Calibration, source: Path) -> None:
    """Non-finite numbers would hang or silently empty the forecast: refuse them here."""
    n = len(c.entry_names)
    checks = (
        ("estimate_unconstrained", c.estimate, len(c.fitted)),
        ("covariance", c.covariance, n * n),
        ("donor_effect", c.donor_effects, None),
        ("prior_sd", c.prior_sd, len(c.fitted)),
    )
    for name, values, size in checks:
        values = np.asarray(values, float)
        if size is not None and values.size != size:
            raise TwinInputError(f"{source}: {name} has {values.size} values, expected {size}")
        if not np.all(np.isfinite(values)):
            raise TwinInputError(f"{source}: {name} holds non-finite values (NaN or inf)")
    covariance = np.asarray(c.covariance, float).reshape(n, n)
    if np.any(np.diag(covariance) < 0) or not np.allclose(covariance, covariance.T, rtol=1e-8):
        raise TwinInputError(f"{source}: covariance is not symmetric positive semi-definite")
    for variable, sd in c.noise_sd.items():
        if not (math.isfinite(sd) and sd > 0):
            raise TwinInputError(f"{source}: noise_sd of {variable} is {sd!r}; must be > 0")


# Structure fields added since files were first written, with the value every earlier file
# meant: a missing key is the form of its time, not today's default.
_STRUCTURE_BEFORE = {"decline_floor": False, "uptake": "growth"}


def _stored_structure(ds: xr.Dataset) -> ModelStructure:
    return ModelStructure(**{**_STRUCTURE_BEFORE, **json.loads(ds.attrs["structure"])})


def _calibration(ds: xr.Dataset) -> Calibration:
    noise = {v: float(s) for v, s in zip(MEASURED_VARIABLES, ds["noise_sd"].values, strict=True)}
    initial = ds["initial_noise_sd"].values
    return Calibration(
        fitted=_strings(ds["parameter"]),
        donor_level=_strings(ds["donor_level_parameter"]),
        donor_ids=_strings(ds["donor"]),
        run_ids=_strings(ds["run"]),
        run_donor_ids=_strings(ds["run_donor"]),
        model_parameters=default_parameters(
            **dict(
                zip(
                    _strings(ds["kinetic_parameter"]),
                    map(float, ds["model_parameter"].values),
                    strict=True,
                )
            )
        ),
        estimate=ds["estimate_unconstrained"].values,
        donor_effects=ds["donor_effect"].values.reshape(ds.sizes["donor"], -1),
        covariance=ds["covariance"].values,
        prior_sd=ds["prior_sd"].values,
        donor_sd=ds["donor_sd"].values,
        noise=AssayNoise(**noise),
        initial_noise=AssayNoise(**dict(zip(MEASURED_VARIABLES, map(float, initial), strict=True))),
        structure=_stored_structure(ds),
        solver=SolverSettings(**json.loads(ds.attrs["solver"])),
        objective=float(ds["objective"]),
        n_observations=int(ds["n_observations"]),
        observations=_table(ds, "observation"),
        diagnostics=_table(ds, "fit"),
        profiles=_table(ds, "profile_point", _PROFILE_COLUMNS),
        prior_dominated_ratio=float(ds.attrs["prior_dominated_ratio"]),
        high_correlation=float(ds.attrs["high_correlation"]),
        config=str(ds.attrs.get("config", "")),
        likelihood=Likelihood(**json.loads(ds.attrs.get("likelihood", "{}"))),
        discrepancy=_table(ds, "discrepancy_row"),
        selection=_table(ds, "candidate"),
    )


def _twin_version() -> str:
    from .. import __version__

    return __version__


def _values(params: KineticParameters) -> np.ndarray:
    return np.array([float(getattr(params, name)) for name in PARAMETER_NAMES])


def _residual_rms(observations: pd.DataFrame) -> np.ndarray:
    """RMS scaled residual of each assay (NaN for an assay without measurements)."""
    rms = observations.groupby("variable")["scaled_residual"].apply(
        lambda r: float(np.sqrt(np.mean(r**2)))
    )
    return np.array([rms.get(v, np.nan) for v in MEASURED_VARIABLES])


def _storable(values: np.ndarray) -> np.ndarray:
    """netCDF has no boolean type: booleans are stored as int8 (see :func:`_table`)."""
    return values.astype(np.int8) if values.dtype == bool else values


def _table_variables(frame: pd.DataFrame, dim: str) -> dict:
    """One variable per column along ``dim`` (none for an empty table)."""
    if frame.empty:
        return {}
    variables = {}
    for column in frame.columns:
        values = frame[column].to_numpy()
        attrs = {"boolean": 1} if values.dtype == bool else {}
        if values.dtype == object:
            values = values.astype(str).astype(object)
        variables[f"{dim}_{column}"] = xr.Variable(dim, _storable(values), attrs)
    return variables


def _table(ds: xr.Dataset, dim: str, columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """The table stored along ``dim`` (empty with ``columns`` if it was empty)."""
    prefix = f"{dim}_"
    stored = [name for name in ds.data_vars if name.startswith(prefix) and ds[name].dims == (dim,)]
    if not stored:
        return pd.DataFrame(columns=list(columns))
    frame = {}
    for name in stored:
        values = ds[name].values
        if ds[name].attrs.get("boolean"):
            values = values.astype(bool)
        elif values.dtype.kind in "OU":
            values = values.astype(str)
        frame[name[len(prefix) :]] = values
    return pd.DataFrame(frame)


def _strings(coordinate: xr.DataArray) -> tuple[str, ...]:
    return tuple(str(value) for value in coordinate.values)
