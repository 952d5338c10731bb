"""Plant ``fixed_delay``: a fixed activation delay, Hill decline with culture age, gamma-mixed
Poisson transduction that reaches cells still in the lag.

- Activation: at ``activate`` the responsive share of resting cells becomes *primed*; no primed
  cell divides before ``activation_delay_h`` has passed, then each enters cycling at
  ``activation_exit_rate_per_h`` (a shifted exponential onset, not an Erlang chain).
- Growth of cycling cells: ``mu_max * f_age * G/(G+K_G) * exp(-L/L_inh) * I/(I+K_I) /
  (1 + rho/rho_half)`` with ``f_age = 1 / (1 + (age/age_half)^n_age)`` (Hill decline) and
  ``rho`` the viable density (hyperbolic limit).
- Death: ``k_0 + k_L (L/L_tox)^3 + k_S exp(-G/G_S)`` (cubic lactate toxicity, exponential
  starvation), for every viable cell.
- Glucose uptake tied to growth (Pirt): cycling ``Y mu + m``, primed ``0.4 m``, resting
  ``0.1 m``, all times ``G/(G+0.05)``; lactate ``Y_L`` per glucose.
- Transduction: each cell has a susceptibility drawn from a gamma distribution (mean 1, shape
  ``susceptibility_shape``, three quadrature classes); hits at ``k_T s V``; primed cells at
  ``lag_transduction_efficiency`` of that. Copies per cell: a gamma-mixed Poisson.
"""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

import numpy as np

from ._base import Context, Param, Plant, copy_class_flow, gamma_classes, medium_rates

J = 3  # susceptibility classes
K = 5  # copy classes 0..K
_BLOCK = J * (K + 1)
RESTING, UNRESPONSIVE, DEAD = 0, 1, 2
PRIMED = slice(3, 3 + _BLOCK)
CYCLING = slice(3 + _BLOCK, 3 + 2 * _BLOCK)


@lru_cache(maxsize=256)
def _classes(shape: float) -> tuple[np.ndarray, np.ndarray]:
    return gamma_classes(shape, J)


class FixedDelayPlant(Plant):
    name: ClassVar[str] = "fixed_delay"
    summary: ClassVar[str] = (
        "fixed activation delay then first-order onset; Hill decline with culture age; "
        "hyperbolic density limit; exponential lactate inhibition, cubic toxicity; Pirt uptake; "
        "gamma-mixed Poisson transduction, lag cells at lower efficiency"
    )
    parameters: ClassVar[dict[str, Param]] = {
        "activation_delay_h": Param(24.0, 0.15, unit="h"),
        "activation_exit_rate_per_h": Param(0.10, 0.25, unit="1/h"),
        "responsive_fraction": Param(0.85, 0.5, "logit"),
        "max_growth_rate_per_h": Param(0.05, 0.2, unit="1/h"),
        "age_half_h": Param(170.0, 0.25, unit="h"),
        "age_hill": Param(3.0),
        "density_half_cells_per_mL": Param(5e6, 0.35, unit="cells/mL"),
        "glucose_monod_mM": Param(0.6, unit="mM"),
        "lactate_inhibition_mM": Param(55.0, 0.15, unit="mM"),
        "il2_monod_IU_per_mL": Param(6.0, 0.3, unit="IU/mL"),
        "base_death_rate_per_h": Param(0.003, 0.3, unit="1/h"),
        "lactate_death_rate_per_h": Param(0.02, unit="1/h"),
        "lactate_toxicity_mM": Param(40.0, 0.1, unit="mM"),
        "starvation_death_rate_per_h": Param(0.05, unit="1/h"),
        "starvation_glucose_mM": Param(0.25, unit="mM"),
        "lysis_rate_per_h": Param(0.015, unit="1/h"),
        "glucose_per_new_cell_pmol": Param(2.0, 0.2, unit="pmol/cell"),
        "glucose_maintenance_pmol_per_cell_h": Param(0.06, 0.25, unit="pmol/cell/h"),
        "lactate_per_glucose": Param(1.75, 0.06, unit="mol/mol"),
        "il2_uptake_IU_per_cell_h": Param(4e-7, unit="IU/cell/h"),
        "il2_half_life_h": Param(40.0, unit="h"),
        "vector_half_life_h": Param(30.0, unit="h"),
        "transduction_rate_mL_per_MTU_h": Param(0.012, 0.3, unit="mL/(1e6 TU h)"),
        "susceptibility_shape": Param(0.45, 0.3, unit="-"),
        "lag_transduction_efficiency": Param(0.3, unit="-"),
    }
    cell_states: ClassVar[int] = 3 + 2 * _BLOCK
    dead_index: ClassVar[int] = DEAD
    dead_removed_per_exchange: ClassVar[float] = 0.2
    max_copies: ClassVar[int] = K

    def activate(self, y, p):
        y = y.copy()
        _, weights = _classes(p["susceptibility_shape"])
        primed = y[PRIMED].reshape(J, K + 1)
        primed[:, 0] += weights * y[RESTING]
        y[PRIMED] = primed.ravel()
        y[RESTING] = 0.0
        return y

    def breakpoints(self, ctx: Context, p):
        if ctx.activation_time_h is None:
            return []
        return [ctx.activation_time_h + p["activation_delay_h"]]

    def viable_M(self, y):
        return y[RESTING] + y[UNRESPONSIVE] + y[PRIMED].sum() + y[CYCLING].sum()

    def transduced_and_copies_M(self, y):
        n = y[PRIMED].reshape(J, K + 1) + y[CYCLING].reshape(J, K + 1)
        return n[:, 1:].sum(), (n.sum(0) * np.arange(K + 1)).sum()

    def rhs(self, t, y, ctx: Context, p):
        V = ctx.volume_ml
        G = max(y[self.cell_states], 0.0)
        L = max(y[self.cell_states + 1], 0.0)
        I2 = max(y[self.cell_states + 2], 0.0)
        vec = max(y[self.cell_states + 3], 0.0)
        primed = y[PRIMED].reshape(J, K + 1)
        cycling = y[CYCLING].reshape(J, K + 1)
        n_primed, n_cycling = primed.sum(), cycling.sum()
        viable = y[RESTING] + y[UNRESPONSIVE] + n_primed + n_cycling
        density = 1e6 * max(viable, 0.0) / V

        if ctx.activation_time_h is None:
            age, exit_rate = 0.0, 0.0
        else:
            age = t - ctx.activation_time_h
            exit_rate = p["activation_exit_rate_per_h"] if age >= p["activation_delay_h"] else 0.0
        f_age = 1.0 / (1.0 + (age / p["age_half_h"]) ** p["age_hill"])
        mu = (
            p["max_growth_rate_per_h"]
            * f_age
            * G
            / (G + p["glucose_monod_mM"])
            * np.exp(-L / p["lactate_inhibition_mM"])
            * I2
            / (I2 + p["il2_monod_IU_per_mL"])
            / (1.0 + density / p["density_half_cells_per_mL"])
        )
        death = (
            p["base_death_rate_per_h"]
            + p["lactate_death_rate_per_h"] * (L / p["lactate_toxicity_mM"]) ** 3
            + p["starvation_death_rate_per_h"] * np.exp(-G / p["starvation_glucose_mM"])
        )
        s, _ = _classes(p["susceptibility_shape"])
        hit = p["transduction_rate_mL_per_MTU_h"] * vec * s  # per class, 1/h
        hit_lag = p["lag_transduction_efficiency"] * hit

        dy = np.zeros_like(y)
        dy[RESTING] = -death * y[RESTING]
        dy[UNRESPONSIVE] = -death * y[UNRESPONSIVE]
        d_primed = -(exit_rate + death) * primed + copy_class_flow(primed, hit_lag)
        d_cycling = exit_rate * primed + (mu - death) * cycling + copy_class_flow(cycling, hit)
        dy[PRIMED] = d_primed.ravel()
        dy[CYCLING] = d_cycling.ravel()
        dy[DEAD] = death * viable - p["lysis_rate_per_h"] * y[DEAD]

        m = p["glucose_maintenance_pmol_per_cell_h"]
        uptake = (p["glucose_per_new_cell_pmol"] * mu + m) * n_cycling
        uptake += 0.4 * m * n_primed + 0.1 * m * (y[RESTING] + y[UNRESPONSIVE])
        uptake_mM_h = uptake * G / (G + 0.05) / V
        hits_MTU = (hit_lag @ primed.sum(1) + hit @ cycling.sum(1)) / V
        c = self.cell_states
        dy[c : c + 4] = medium_rates(
            p, V, uptake_mM_h, I2, n_cycling, p["il2_monod_IU_per_mL"], vec, hits_MTU
        )
        return dy
