"""What every plant is: named parameters with a donor population, a state layout, a vector field.

A plant is a virtual CAR-T process written independently of :mod:`twin.kinetics` (other rate
laws, its own NumPy code), used to judge the twin on data it was not built from. Cell amounts
are in millions of cells (``M``), volumes in mL, solutes in mM (IL-2 in IU/mL, vector in
millions of transducing units per mL), rates per hour: an uptake of ``q`` pmol/cell/h by ``X``
million cells in ``V`` mL changes a concentration by ``q X / V`` mM/h.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar

import numpy as np
from scipy.special import expit, logit, roots_genlaguerre

# Solutes every plant carries, after its cell states, in this order; plants may add their own.
SOLUTES: tuple[str, ...] = ("glucose_mM", "lactate_mM", "il2_IU_per_mL", "vector_MTU_per_mL")


@dataclasses.dataclass(frozen=True)
class Param:
    """A plant parameter: population value (median donor), donor SD on its log (``kind="log"``)
    or logit (``kind="logit"``) scale (0: shared by all donors), unit and a note."""

    value: float
    donor_sd: float = 0.0
    kind: str = "log"
    unit: str = ""

    def __post_init__(self):
        if self.kind not in ("log", "logit"):
            raise ValueError(f"Param.kind={self.kind!r}: 'log' or 'logit'")
        if self.kind == "logit" and not 0 < self.value < 1:
            raise ValueError(f"a logit parameter needs a value in (0, 1), got {self.value!r}")
        if self.kind == "log" and not self.value > 0:
            raise ValueError(f"a log parameter needs a value > 0, got {self.value!r}")

    def to_z(self, value):
        return np.log(value) if self.kind == "log" else logit(value)

    def from_z(self, z):
        return np.exp(z) if self.kind == "log" else expit(z)


@dataclasses.dataclass
class Context:
    """What the vector field needs besides the state: the culture volume (mL, constant between
    events) and the time of the ``activate`` event (``None`` before it)."""

    volume_ml: float
    activation_time_h: float | None = None


class Plant(abc.ABC):
    """A virtual process. Subclasses are final: one per plant, each with its own rate laws."""

    name: ClassVar[str]
    summary: ClassVar[str]
    parameters: ClassVar[dict[str, Param]]
    cell_states: ClassVar[int]  # number of cell-state slots before the solutes
    dead_index: ClassVar[int]  # slot of dead (unlysed) cells
    resting_index: ClassVar[int] = 0  # slot of resting cells that respond to activation
    unresponsive_index: ClassVar[int] = 1  # slot of cells that never respond
    extra_solutes: ClassVar[tuple[str, ...]] = ()
    # Glucose analyser: readings below this are recorded as 0 (0: no detection limit).
    glucose_detection_limit_mM: ClassVar[float] = 0.0
    # Share of dead cells an exchange of the whole medium washes out (viable cells are retained).
    dead_removed_per_exchange: ClassVar[float] = 0.0
    # Reagent signal washed out by an exchange as a solute (used by signal-driven plants).
    max_copies: ClassVar[int] = 5

    @property
    def solutes(self) -> tuple[str, ...]:
        return SOLUTES + self.extra_solutes

    @property
    def n_states(self) -> int:
        return self.cell_states + len(self.solutes)

    def solute_index(self, name: str) -> int:
        return self.cell_states + self.solutes.index(name)

    def population(self) -> dict[str, float]:
        """The median donor's parameters."""
        return {name: spec.value for name, spec in self.parameters.items()}

    def sample_donors(self, rng: np.random.Generator, n: int) -> list[dict[str, float]]:
        """``n`` donors: each parameter with a ``donor_sd`` drawn log- or logit-normal."""
        donors = [self.population() for _ in range(n)]
        for name, spec in self.parameters.items():
            if spec.donor_sd > 0:
                z = spec.to_z(spec.value) + spec.donor_sd * rng.standard_normal(n)
                for donor, value in zip(donors, spec.from_z(z), strict=True):
                    donor[name] = float(value)
        return donors

    def varied(self) -> list[str]:
        """Names of the parameters that differ between donors."""
        return [name for name, spec in self.parameters.items() if spec.donor_sd > 0]

    def seed(self, viable_M: float, dead_M: float, p: dict) -> np.ndarray:
        """Cell-state slots right after seeding ``viable_M`` resting and ``dead_M`` dead cells:
        the donor's ``responsive_fraction`` of the resting cells in :attr:`resting_index`, the
        rest in :attr:`unresponsive_index`."""
        y = np.zeros(self.cell_states)
        y[self.resting_index] = p["responsive_fraction"] * viable_M
        y[self.unresponsive_index] = (1 - p["responsive_fraction"]) * viable_M
        y[self.dead_index] = dead_M
        return y

    def activate(self, y: np.ndarray, p: dict) -> np.ndarray:
        """The jump at the ``activate`` event (default: none; the clock starts)."""
        return y

    @abc.abstractmethod
    def rhs(self, t: float, y: np.ndarray, ctx: Context, p: dict) -> np.ndarray:
        """dy/dt between events."""

    def breakpoints(self, ctx: Context, p: dict) -> list[float]:
        """Times where the vector field has a kink or the state jumps (the solver restarts
        there, after :meth:`at_breakpoint`)."""
        return []

    def at_breakpoint(self, t: float, y: np.ndarray, ctx: Context, p: dict) -> np.ndarray:
        """The state's jump at a breakpoint (default: none)."""
        return y

    @abc.abstractmethod
    def viable_M(self, y: np.ndarray) -> float:
        """Viable cells (millions)."""

    @abc.abstractmethod
    def transduced_and_copies_M(self, y: np.ndarray) -> tuple[float, float]:
        """Viable cells with >= 1 integrated copy, and their copies (millions)."""

    def observe(self, y: np.ndarray) -> dict[str, float]:
        """What the assays would read without noise, plus the dose-relevant outcomes."""
        viable = max(self.viable_M(y), 0.0)
        dead = max(y[self.dead_index], 0.0)
        transduced, copies = self.transduced_and_copies_M(y)
        transduced, copies = max(transduced, 0.0), max(copies, 0.0)
        return {
            "viable_cells": 1e6 * viable,
            "viability": viable / (viable + dead) if viable + dead > 0 else 0.0,
            "glucose_mM": max(y[self.solute_index("glucose_mM")], 0.0),
            "lactate_mM": max(y[self.solute_index("lactate_mM")], 0.0),
            "il2_IU_per_mL": max(y[self.solute_index("il2_IU_per_mL")], 0.0),
            "car_pos_fraction": transduced / viable if viable > 0 else 0.0,
            "vcn_per_cell": copies / viable if viable > 0 else 0.0,
            "vcn_per_transduced_cell": copies / transduced if transduced > 0 else 0.0,
            "viable_car_pos_cells": 1e6 * transduced,
        }


def copy_class_flow(n: np.ndarray, rate: np.ndarray | float) -> np.ndarray:
    """d/dt of copy classes ``n[..., 0..K]`` under integration hits at ``rate`` per cell (1/h):
    a hit moves a cell from class k to k+1; the last class lumps K or more copies."""
    out = (rate if np.isscalar(rate) else rate[..., None]) * n[..., :-1]
    d = np.empty_like(n)
    d[..., 0] = -out[..., 0]
    d[..., 1:-1] = out[..., :-1] - out[..., 1:]
    d[..., -1] = out[..., -1]
    return d


def gamma_classes(shape: float, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Susceptibility classes of a gamma distribution with mean 1 and shape ``shape``
    (generalized Gauss-Laguerre quadrature): values and weights (summing to 1)."""
    x, w = roots_genlaguerre(n, shape - 1.0)
    return x / shape, w / w.sum()


def decay_rate(half_life_h: float) -> float:
    return np.log(2.0) / half_life_h


def medium_rates(
    p: dict,
    volume_ml: float,
    glucose_uptake_mM_h: float,
    il2_IU_per_mL: float,
    il2_consumers_M: float,
    il2_half_IU_per_mL: float,
    vector_MTU_per_mL: float,
    vector_bound_MTU_per_mL_h: float,
) -> tuple[float, float, float, float]:
    """d/dt of the solutes every plant carries (:data:`SOLUTES`, in order) given what its cells
    take up: lactate made at ``lactate_per_glucose`` per glucose, IL-2 consumed by
    ``il2_consumers_M`` million cells (saturating at ``il2_half_IU_per_mL``) and decaying,
    vector bound by cells and decaying."""
    il2 = il2_IU_per_mL
    return (
        -glucose_uptake_mM_h,
        p["lactate_per_glucose"] * glucose_uptake_mM_h,
        -1e6
        * p["il2_uptake_IU_per_cell_h"]
        * il2_consumers_M
        / volume_ml
        * il2
        / (il2 + il2_half_IU_per_mL)
        - decay_rate(p["il2_half_life_h"]) * il2,
        -decay_rate(p["vector_half_life_h"]) * vector_MTU_per_mL - vector_bound_MTU_per_mL_h,
    )
