"""Hydra schemas (structured configs) and the conversion from a config to model objects.

The schemas are registered in Hydra's ConfigStore on import, so every config group's YAML
starts from a typed schema: unknown keys and wrongly typed values are rejected by Hydra before
any work starts, and the defaults live in exactly one place (the dataclasses and
:data:`~twin.kinetics.PARAMETER_TABLE`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from ._cli import resolve_user_path
from ._errors import TwinInputError
from .assays import AssayNoise
from .calibrate import CalibrationConfig
from .data import read_run_data
from .facility import FacilityConfig
from .forecast import ForecastSettings
from .kinetics import PARAMETER_TABLE, KineticParameters, ModelStructure, default_parameters
from .optimize._config import HoldoutConfig, OptimizeConfig
from .process import PlausibilityBounds, Recipe, bounds_in_force, build_schedule
from .process._downstream import Downstream
from .simulate import SolverSettings

ParametersConfig = dataclasses.make_dataclass(
    "ParametersConfig",
    [(spec.name, float, dataclasses.field(default=spec.default)) for spec in PARAMETER_TABLE],
)


@dataclasses.dataclass
class ModelConfig:
    parameters: Any = dataclasses.field(default_factory=ParametersConfig)
    structure: ModelStructure = dataclasses.field(default_factory=ModelStructure)
    solver: SolverSettings = dataclasses.field(default_factory=SolverSettings)


# Every config group's schema: configs/<group>/*.yaml start from `<group>_schema`.
SCHEMAS: dict[str, type] = {
    "model": ModelConfig,
    "recipe": Recipe,
    "downstream": Downstream,
    "noise": AssayNoise,
    "fit": CalibrationConfig,
    "forecast": ForecastSettings,
    "facility": FacilityConfig,
    "optimize": OptimizeConfig,
    "holdout": HoldoutConfig,
    "bounds": PlausibilityBounds,
}


def register_configs() -> None:
    """Register the schemas of :data:`SCHEMAS` with Hydra (idempotent); done once, when this
    module is imported, as every entry point does before Hydra composes its config."""
    store = ConfigStore.instance()
    for group, schema in SCHEMAS.items():
        store.store(group=group, name=f"{group}_schema", node=_writable(schema))


def _writable(schema: type) -> DictConfig:
    """The schema as a config node; frozen dataclasses (hashable settings) would otherwise be
    read-only in Hydra, refusing overrides."""
    node = OmegaConf.structured(schema)
    _clear_readonly(node)
    return node


def _clear_readonly(node) -> None:
    OmegaConf.set_readonly(node, False)
    if isinstance(node, DictConfig):
        for key in node:
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                _clear_readonly(child)


register_configs()


def _to_object(node: DictConfig, key: str):
    try:
        return OmegaConf.to_object(node)
    except ValueError as error:  # raised by the dataclasses' own checks
        raise TwinInputError(f"{key}: {error}") from None


def parameters_from_config(cfg_parameters: DictConfig) -> KineticParameters:
    """Kinetic parameters from ``model.parameters``, each checked against its transform's domain.

    **Raises:** :class:`TwinInputError` naming ``model.parameters.<name>`` and the value.
    """
    values = {}
    problems = []
    for spec in PARAMETER_TABLE:
        value = cfg_parameters[spec.name]
        ok = math.isfinite(value) and (value > 0 if spec.transform == "log" else 0 < value < 1)
        if not ok:
            domain = "> 0" if spec.transform == "log" else "in (0, 1)"
            problems.append(f"model.parameters.{spec.name}={value!r}: must be {domain}")
        values[spec.name] = value
    if problems:
        raise TwinInputError(problems[0], problems=problems)
    return default_parameters(**values)


def model_from_config(
    cfg_model: DictConfig,
) -> tuple[KineticParameters, ModelStructure, SolverSettings]:
    """``(parameters, structure, solver)`` from the ``model`` config group."""
    params = parameters_from_config(cfg_model.parameters)
    structure = _to_object(cfg_model.structure, "model.structure")
    solver = _to_object(cfg_model.solver, "model.solver")
    return params, structure, solver


def bounds_from_config(cfg_bounds: DictConfig | None) -> PlausibilityBounds:
    """The plausibility bounds of the ``bounds`` config group (``None``: the defaults).

    **Raises:** :class:`TwinInputError` naming ``bounds.<key>`` and the value, for each bound
    that is not a finite number > 0.
    """
    if cfg_bounds is None:
        return PlausibilityBounds()
    values = OmegaConf.to_container(cfg_bounds, resolve=True)
    problems = [
        f"bounds.{name}={value!r}: must be a finite number > 0"
        for name, value in values.items()
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0)
    ]
    if problems:
        raise TwinInputError(problems[0], problems=problems)
    return PlausibilityBounds(**values)


_Run = TypeVar("_Run", bound=Callable)


def with_configured_bounds(run: _Run) -> _Run:
    """Run a command's ``run(cfg, ...)`` with its ``cfg.bounds`` in force (the defaults when the
    config has none): the recipe checks and the run-data checks all use them."""

    @functools.wraps(run)
    def wrapper(cfg, *args, **kwargs):
        with bounds_in_force(bounds_from_config(cfg.get("bounds"))):
            return run(cfg, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def recipe_from_config(cfg_recipe: DictConfig) -> Recipe:
    return _to_object(cfg_recipe, "recipe")


def downstream_from_config(cfg_downstream: DictConfig) -> Downstream:
    return _to_object(cfg_downstream, "downstream")


def noise_from_config(cfg_noise: DictConfig) -> AssayNoise:
    return _to_object(cfg_noise, "noise")


def forecast_settings_from_config(cfg_forecast: DictConfig) -> ForecastSettings:
    return _to_object(cfg_forecast, "forecast")


def batch_from_config(cfg: DictConfig, recipe: Recipe):
    """The batch a command runs: ``recipe``'s schedule, or with ``data_dir`` and ``run_id`` that
    recorded run's (with the recipe's medium where the record names none).

    **Returns:** ``(schedule, measurements, run_id)``; measurements and run_id ``None`` for
    the recipe.
    **Raises:** :class:`TwinInputError` naming ``data_dir`` or ``run_id`` and the value.
    """
    if cfg.data_dir is None:
        if cfg.run_id is not None:
            raise TwinInputError(f"run_id={cfg.run_id!r} needs data_dir (the run-data folder)")
        schedule = recipe.schedule(capacity_ml=cfg.cartridge_capacity_ml)
        return schedule, None, None
    data = read_run_data(resolve_user_path(cfg.data_dir))
    if cfg.run_id is None:
        raise TwinInputError(f"data_dir={cfg.data_dir!r} needs run_id (one of {data.run_ids})")
    run_id = str(cfg.run_id)
    if run_id not in data.run_ids:
        raise TwinInputError(f"run_id={run_id!r} is not in {cfg.data_dir} (runs: {data.run_ids})")
    schedule = build_schedule(
        data.events_for(run_id),
        medium_glucose_mM=recipe.medium_glucose_mM,
        medium_il2_IU_per_mL=recipe.medium_il2_IU_per_mL,
    )
    return schedule, data.measurements_for(run_id), run_id
