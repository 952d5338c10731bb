"""The Hydra schema of the ``optimize`` config node (registered as ``optimize/optimize_schema``)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from omegaconf import MISSING

from .._limits import MAX_DRAWS, over_limit
from ._objective import OBJECTIVES, Prices

DATA_GUARDS: tuple[str, ...] = ("restrict", "flag")


@dataclasses.dataclass
class DecisionBounds:
    """The box of one decision, in the unit of :data:`~twin.process.DESIGN_VALUES`."""

    low: float = MISSING
    high: float = MISSING


@dataclasses.dataclass
class OptimizeConfig:
    """Robust recipe optimization settings (see ``configs/optimize.yaml`` for the meaning).

    The defaults are the yaml's (a test keeps them equal), except the maps ``decisions`` and
    ``donor_sd``, empty here: from Python, say what to move and how donors vary.
    """

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
    n_eval_donors: int = 512
    starts: int = 4
    screen_points: int = 256
    steps: int = 60
    learning_rate: float = 0.2
    pareto_cost_weights: list[float] = dataclasses.field(
        default_factory=lambda: [0.0, 0.1, 0.3, 1.0, 3.0]
    )
    pareto_steps: int = 15
    n_bootstrap: int = 2000
    prices: Prices = dataclasses.field(default_factory=Prices)

    def __post_init__(self):
        """Checks that need no data; each message names the ``optimize.*`` key and value."""
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"optimize.objective={self.objective!r}: choose from {list(OBJECTIVES)}"
            )
        for key in ("n_donors", "n_eval_donors", "starts", "steps", "pareto_steps", "n_bootstrap"):
            if not getattr(self, key) >= 1:
                raise ValueError(f"optimize.{key}={getattr(self, key)!r}: must be >= 1")
        if self.screen_points and not self.screen_points > self.starts:
            raise ValueError(
                f"optimize.screen_points={self.screen_points!r}: must be 0 (random starts) or "
                f"more than optimize.starts={self.starts}"
            )
        for key in ("n_donors", "n_eval_donors"):
            value = getattr(self, key)
            if limit := over_limit(f"optimize.{key}", value, value, MAX_DRAWS, "donors"):
                raise ValueError(limit)
        for key in ("temperature", "learning_rate"):
            if not getattr(self, key) > 0:
                raise ValueError(f"optimize.{key}={getattr(self, key)!r}: must be > 0")
        ratio = self.max_vector_TU_ratio
        if ratio is not None and not (math.isfinite(ratio) and ratio > 0):
            raise ValueError(f"optimize.max_vector_TU_ratio={ratio!r}: must be > 0 or null")
        if self.data_guard not in DATA_GUARDS:
            raise ValueError(
                f"optimize.data_guard={self.data_guard!r}: choose from {list(DATA_GUARDS)}"
            )
        for name, pair in self.data_ranges.items():
            if name not in self.decisions or len(pair) != 2 or not pair[0] <= pair[1]:
                raise ValueError(
                    f"optimize.data_ranges.{name}={list(pair)!r}: expected [low, high] of a "
                    "decision"
                )

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        """The decisions' boxes, name -> ``(low, high)``."""
        return {name: (float(b.low), float(b.high)) for name, b in self.decisions.items()}


@dataclasses.dataclass
class HoldoutConfig:
    """A process the twin has not seen, to evaluate recipes on (``configs/holdout/``): the
    ``model`` config with ``structure`` and ``parameters`` overridden, and donors drawn with
    ``donor_sd`` (estimation scale, as ``configs/generate.yaml``) from ``seed``."""

    description: str = ""
    seed: int = 2027
    n_donors: int = 512
    structure: dict[str, Any] = dataclasses.field(default_factory=dict)  # ModelStructure fields
    parameters: dict[str, float] = dataclasses.field(default_factory=dict)
    donor_sd: dict[str, float] = dataclasses.field(default_factory=dict)
