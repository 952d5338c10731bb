"""The Hydra schema of the ``optimize`` config node (registered as ``optimize/optimize_schema``)."""

from __future__ import annotations

import dataclasses

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from ._objective import Prices


@dataclasses.dataclass
class DecisionBounds:
    """The box of one decision, in the unit of :data:`~twin.process.DESIGN_VALUES`."""

    low: float = MISSING
    high: float = MISSING


@dataclasses.dataclass
class OptimizeConfig:
    """Robust recipe optimization settings (see ``configs/optimize.yaml`` for the meaning)."""

    objective: str = "p_conforming"
    temperature: float = 0.2
    decisions: dict[str, DecisionBounds] = dataclasses.field(default_factory=dict)
    trust_radius: float | None = None
    max_vector_TU_ratio: float | None = 1.0
    data_ranges: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    data_dir: str | None = None
    data_guard: str = "restrict"
    donor_sd: dict[str, float] = dataclasses.field(default_factory=dict)
    seed: int = 0
    n_donors: int = 16
    n_eval_donors: int = 256
    starts: int = 3
    steps: int = 20
    learning_rate: float = 0.2
    pareto_cost_weights: list[float] = dataclasses.field(default_factory=list)
    pareto_steps: int = 10
    n_bootstrap: int = 2000
    prices: Prices = dataclasses.field(default_factory=Prices)


@dataclasses.dataclass
class HoldoutConfig:
    """A process the twin has not seen, to evaluate recipes on (``configs/holdout/``): the
    ``model`` config with ``structure`` and ``parameters`` overridden, and donors drawn with
    ``donor_sd`` (estimation scale, as ``configs/generate.yaml``) from ``seed``."""

    description: str = ""
    seed: int = 2027
    n_donors: int = 512
    structure: dict[str, int] = dataclasses.field(default_factory=dict)
    parameters: dict[str, float] = dataclasses.field(default_factory=dict)
    donor_sd: dict[str, float] = dataclasses.field(default_factory=dict)


def register_configs() -> None:
    """Register the schemas (idempotent)."""
    store = ConfigStore.instance()
    store.store(group="optimize", name="optimize_schema", node=OptimizeConfig)
    store.store(group="holdout", name="holdout_schema", node=HoldoutConfig)


register_configs()
