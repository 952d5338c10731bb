"""The culture state of one cartridge: a named pytree.

Cell counts are held in millions of cells (:data:`CELLS_PER_UNIT`) and functional vector in
millions of transducing units, so that the solver's tolerances act on numbers of order one;
observables (``twin.observe``) convert back to cells.

Cell compartments (viable unless named otherwise):

- ``resting``: seeded T cells not yet exposed to the activation reagent;
- ``lag``: cells on their way to the activated state (an Erlang chain, ``lag_stages`` long);
- ``unresponsive``: cells that did not respond to activation (never divide);
- ``susceptible``: activated, transducible cells by integrated-copy class 0..K (K means >= K);
- ``refractory``: activated cells that cannot be transduced (always copy class 0);
- ``effector_like``: how many viable cells are differentiated (effector-like); the rest are
  memory-like. Non-activated cells keep the seed's share; activated cells differentiate with
  divisions and time;
- ``dead``: intact dead cells (they count against viability until they lyse).

Bookkeeping for conservation: ``lysed``, ``removed`` (viable + dead withdrawn by samples) and
``born`` (cumulative divisions) satisfy viable + dead + lysed + removed - born = cells seeded.
"""

from __future__ import annotations

import dataclasses
import enum

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

CELLS_PER_UNIT = 1.0e6  # state cell counts are in millions
TU_PER_UNIT = 1.0e6  # state vector amounts are in millions of transducing units


def smallest_normal(x) -> float:
    """The smallest normal number of ``x``'s floating dtype: it vanishes next to anything the
    twin holds, so guards built on it leave values unchanged (:func:`non_negative`)."""
    return float(jnp.finfo(jnp.result_type(x, float)).tiny)


def non_negative(x):
    """``x`` with negative values (solver round-off) floored at the smallest normal number
    below 0 rather than at 0 itself. Exported to SBML, the floor is a switching function of
    root-finding simulators (AMICI), and ``x`` is exactly 0 at the start (lactate in fresh
    medium) or for hours (no transduced cells before the transduction): a switch exactly at
    0 is never seen to flip there, leaving the simulator on the floored branch for good."""
    return jnp.maximum(x, -smallest_normal(x))


class DeclineForm(enum.StrEnum):
    """How the division rate of activated cells declines with time since activation ``a``
    (``T`` = ``growth_decline_time_h``, ``n`` = ``ModelStructure.decline_exponent``). Weibull
    nests the exponential (k = 1) and the Gaussian (k = 2) and lets calibration choose between
    and beyond them."""

    exponential = "exponential"  # exp(-a / T)
    hill = "hill"  # 1 / (1 + (a / T)^n): halved at T, a plateau first for n > 1
    gaussian = "gaussian"  # exp(-(a / T)^2): slow at first, then steep
    weibull = "weibull"  # exp(-(a / T)^k), k = growth_decline_shape, a fitted parameter


class DensityForm(enum.StrEnum):
    """How the viable density ``X`` limits division (``K`` = ``density_half_cells_per_mL``)."""

    hill = "hill"  # 1 / (1 + (X / K)^n), n = ModelStructure.density_exponent
    hill_fitted = "hill_fitted"  # 1 / (1 + (X / K)^n), n = density_limit_exponent, fitted
    logistic = "logistic"  # max(0, 1 - X / (2 K)): linear, halved at K, stops at 2 K


class UptakeCoupling(enum.StrEnum):
    """What the growth-associated glucose uptake of activated cells follows."""

    growth = "growth"  # realized division rate (every limitation slows uptake too)
    capacity = "capacity"  # glucose-limited potential rate: not slowed by age, density, lactate
    # (1 - s) realized + s potential, s = uptake_capacity_share (fitted): the data choose
    mixed = "mixed"


@dataclasses.dataclass(frozen=True)
class ModelStructure:
    """Structural (shape- or form-defining) choices of the kinetic model; hashable, static
    under jit. The least certain parts of the biology are selectable forms; calibration can
    rank candidates on the data (``fit.select``). Defaults were chosen by the mean forecast
    error over the mismatch bench's plants (``experiments/validity.py``).

    - ``lag_stages``: compartments of the Erlang activation lag (more: a sharper onset;
      default 2, a broad onset with CV 0.71: on the bench 2 beat 1, 3, 4 and, on two plants, 8).
    - ``max_copies``: copy-number classes 0..K tracked (K lumps >= K).
    - ``decline``, ``decline_exponent``: the growth-decline form with culture age (default
      Weibull, whose fitted shape nests the earlier exponential default).
    - ``decline_floor``: the decline levels off at a fitted share of the division rate
      (``growth_decline_floor``) instead of taking division to 0, so a culture can plateau
      at its density limit instead of dying back once it has aged (default since
      2026-12-06: over three draws of the bench it lowered the mean error and the worst
      plant's; files written before it load without it).
    - ``lactate_inhibition_exponent``, ``lactate_toxicity_exponent``: Hill exponents of lactate
      inhibition of growth and of lactate toxicity (default 3 for toxicity: a cubic threshold,
      chosen on the bench together with a fitted ``lactate_death_rate_per_h``).
    - ``starvation_exponent``: Hill exponent of starvation death in glucose (lower: death
      already well above ``starvation_glucose_mM``, a softer threshold).
    - ``density``, ``density_exponent``: density limitation of growth.
    - ``uptake``: what growth-associated glucose uptake follows (default ``mixed``: a
      fitted share ``uptake_capacity_share`` of it the potential rate, the rest the realized
      one, so that one calibration places the culture between the two couplings; default
      since 2026-12-07: over six draws of the bench it lowered the mean error and the worst
      plant's; ``growth`` before, which files written before it name).
    """

    lag_stages: int = 2
    max_copies: int = 6
    decline: DeclineForm = DeclineForm.weibull
    decline_exponent: float = 2.0
    decline_floor: bool = True
    lactate_inhibition_exponent: float = 2.0
    lactate_toxicity_exponent: float = 3.0
    starvation_exponent: float = 4.0
    density: DensityForm = DensityForm.hill
    density_exponent: float = 2.0
    uptake: UptakeCoupling = UptakeCoupling.mixed

    def __post_init__(self):
        if self.lag_stages < 1:
            raise ValueError(f"lag_stages must be >= 1, got {self.lag_stages}")
        if self.max_copies < 5:
            raise ValueError(f"max_copies must be >= 5, got {self.max_copies}")
        if not isinstance(self.decline_floor, bool):
            raise ValueError(f"decline_floor={self.decline_floor!r}: must be true or false")
        for name, kind in _CHOICES.items():
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, kind(value))
            except ValueError:
                choices = ", ".join(member.value for member in kind)
                raise ValueError(f"{name}={value!r}: choose one of {choices}") from None
        for name in _EXPONENTS:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 1.0 <= value <= 8.0):
                raise ValueError(f"{name}={value!r}: must be a number in [1, 8]")
            object.__setattr__(self, name, float(value))

    @property
    def unused_parameters(self) -> tuple[str, ...]:
        """Kinetic parameters this structure's rate laws never read (calibration holds them at
        their ``model.parameters`` values)."""
        return tuple(name for name in _FORM_PARAMETERS if name not in self.form_parameters)

    @property
    def form_parameters(self) -> tuple[str, ...]:
        """The shape parameters that only some forms read, and this structure's forms do."""
        used = []
        if self.decline is DeclineForm.weibull:
            used.append("growth_decline_shape")
        if self.decline_floor:
            used.append("growth_decline_floor")
        if self.density is DensityForm.hill_fitted:
            used.append("density_limit_exponent")
        if self.uptake is UptakeCoupling.mixed:
            used.append("uptake_capacity_share")
        return tuple(used)

    def as_dict(self) -> dict:
        """JSON-able fields (enums as their names)."""
        return {
            f.name: str(v) if isinstance(v := getattr(self, f.name), enum.Enum) else v
            for f in dataclasses.fields(self)
        }

    def describe(self) -> str:
        """The fields that differ from the default structure, ``name=value`` (or ``default``)."""
        default = ModelStructure().as_dict()
        changed = [f"{k}={v}" for k, v in self.as_dict().items() if default[k] != v]
        return ",".join(changed) or "default"


# Kinetic parameters read only by some forms (ModelStructure.form_parameters).
_FORM_PARAMETERS = (
    "growth_decline_shape",
    "growth_decline_floor",
    "density_limit_exponent",
    "uptake_capacity_share",
)
_CHOICES = {
    "decline": DeclineForm,
    "density": DensityForm,
    "uptake": UptakeCoupling,
}
_EXPONENTS = (
    "decline_exponent",
    "lactate_inhibition_exponent",
    "lactate_toxicity_exponent",
    "starvation_exponent",
    "density_exponent",
)


class CultureState(eqx.Module):
    resting: Float[Array, "*batch"]
    lag: Float[Array, "*batch stages"]
    unresponsive: Float[Array, "*batch"]
    susceptible: Float[Array, "*batch copies"]
    refractory: Float[Array, "*batch"]
    effector_like: Float[Array, "*batch"]
    dead: Float[Array, "*batch"]
    lysed: Float[Array, "*batch"]
    removed: Float[Array, "*batch"]
    born: Float[Array, "*batch"]
    volume_ml: Float[Array, "*batch"]
    glucose_mM: Float[Array, "*batch"]
    lactate_mM: Float[Array, "*batch"]
    il2_IU_per_mL: Float[Array, "*batch"]
    vector: Float[Array, "*batch"]
    time_since_activation_h: Float[Array, "*batch"]
    activated: Float[Array, "*batch"]  # 0 before the activate event, 1 after (a clock switch)

    @property
    def activated_cells(self) -> Float[Array, "*batch"]:
        return self.susceptible.sum(-1) + self.refractory

    @property
    def non_activated_cells(self) -> Float[Array, "*batch"]:
        return self.resting + self.lag.sum(-1) + self.unresponsive

    @property
    def viable(self) -> Float[Array, "*batch"]:
        return self.activated_cells + self.non_activated_cells


def empty_state(structure: ModelStructure) -> CultureState:
    """An all-zero state (before seeding)."""
    zero = jnp.zeros(())
    return CultureState(
        resting=zero,
        lag=jnp.zeros(structure.lag_stages),
        unresponsive=zero,
        susceptible=jnp.zeros(structure.max_copies + 1),
        refractory=zero,
        effector_like=zero,
        dead=zero,
        lysed=zero,
        removed=zero,
        born=zero,
        volume_ml=zero,
        glucose_mM=zero,
        lactate_mM=zero,
        il2_IU_per_mL=zero,
        vector=zero,
        time_since_activation_h=zero,
        activated=zero,
    )
