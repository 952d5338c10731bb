"""Plant ``lognormal_onset``: log-normally distributed activation onset, Hill (n = 2) decline,
exponential contact inhibition, steep lactate inhibition with cubic toxicity (lactate-poisoned
batches among high-glycolysis donors), a permissive sub-population for transduction that
includes activated cells still in the lag.

- Activation: after ``activate`` each responsive resting cell starts cycling at the hazard of a
  log-normal onset time (median ``onset_median_h``, log-SD ``onset_log_sd``), i.e. the share
  started by age ``a`` is ``Phi((ln a - ln onset_median_h)/onset_log_sd)``.
- Growth of cycling cells: ``mu_max / (1 + (age/age_half)^2) * G/(G+K_G) / (1 + (L/L_inh)^4) *
  I/(I+K_I) * exp(-rho/rho_e)``.
- Death: ``k_0 + k_L (L/L_tox)^3 + k_S / (1 + (G/G_S)^2)``.
- Glucose uptake (Pirt, saturating in glucose): cycling ``(Y mu + m) G/(G+K_u)``, waiting
  activated cells ``0.5 m``, others ``0.1 m``; lactate ``Y_L`` per glucose (donor-variable).
- Transduction: a ``permissive_fraction`` of cells integrates at ``k_T V`` per cell, the rest at
  5 % of it; activated cells still waiting to divide at ``lag_transduction_efficiency``; copies
  per cell are Poisson within each group.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from scipy.special import erfcx

from ._base import Context, Param, Plant, copy_class_flow, medium_rates

K = 5
_BLOCK = 2 * (K + 1)  # permissive / non-permissive x copy classes
RESTING, UNRESPONSIVE, DEAD = 0, 1, 2
WAITING = slice(3, 3 + _BLOCK)
CYCLING = slice(3 + _BLOCK, 3 + 2 * _BLOCK)
NON_PERMISSIVE_RATE = 0.05


def lognormal_hazard(age_h: float, median_h: float, log_sd: float) -> float:
    """Hazard (1/h) of a log-normal waiting time at ``age_h`` (stable in the far tail)."""
    if age_h <= 0:
        return 0.0
    z = (np.log(age_h) - np.log(median_h)) / log_sd
    return 2.0 / (age_h * log_sd * np.sqrt(2 * np.pi) * erfcx(z / np.sqrt(2)))


class LognormalOnsetPlant(Plant):
    name: ClassVar[str] = "lognormal_onset"
    summary: ClassVar[str] = (
        "log-normal activation onset; Hill (n=2) decline; exponential contact inhibition; "
        "steep lactate inhibition and cubic toxicity (poisoned batches); Pirt uptake; "
        "permissive sub-population, lag cells transduced at lower efficiency"
    )
    parameters: ClassVar[dict[str, Param]] = {
        "onset_median_h": Param(34.0, 0.15, unit="h"),
        "onset_log_sd": Param(0.3, unit="-"),
        "responsive_fraction": Param(0.9, 0.4, "logit"),
        "max_growth_rate_per_h": Param(0.052, 0.2, unit="1/h"),
        "age_half_h": Param(210.0, 0.25, unit="h"),
        "contact_cells_per_mL": Param(6e6, 0.35, unit="cells/mL"),
        "glucose_monod_mM": Param(0.5, unit="mM"),
        "lactate_inhibition_mM": Param(30.0, 0.1, unit="mM"),
        "il2_monod_IU_per_mL": Param(8.0, 0.3, unit="IU/mL"),
        "base_death_rate_per_h": Param(0.003, 0.3, unit="1/h"),
        "lactate_death_rate_per_h": Param(0.04, unit="1/h"),
        "lactate_toxicity_mM": Param(30.0, 0.2, unit="mM"),
        "starvation_death_rate_per_h": Param(0.07, unit="1/h"),
        "starvation_glucose_mM": Param(0.3, unit="mM"),
        "lysis_rate_per_h": Param(0.01, unit="1/h"),
        "glucose_per_new_cell_pmol": Param(2.0, 0.15, unit="pmol/cell"),
        "glucose_maintenance_pmol_per_cell_h": Param(0.05, 0.2, unit="pmol/cell/h"),
        "uptake_monod_mM": Param(0.5, unit="mM"),
        "lactate_per_glucose": Param(1.9, 0.15, unit="mol/mol"),
        "il2_uptake_IU_per_cell_h": Param(5e-7, unit="IU/cell/h"),
        "il2_half_life_h": Param(45.0, unit="h"),
        "vector_half_life_h": Param(25.0, unit="h"),
        "transduction_rate_mL_per_MTU_h": Param(0.025, 0.25, unit="mL/(1e6 TU h)"),
        "permissive_fraction": Param(0.4, 0.4, "logit"),
        "lag_transduction_efficiency": Param(0.25, unit="-"),
    }
    cell_states: ClassVar[int] = 3 + 2 * _BLOCK
    dead_index: ClassVar[int] = DEAD
    dead_removed_per_exchange: ClassVar[float] = 0.1
    max_copies: ClassVar[int] = K

    def activate(self, y, p):
        y = y.copy()
        waiting = y[WAITING].reshape(2, K + 1)
        fp = p["permissive_fraction"]
        waiting[:, 0] += np.array([fp, 1 - fp]) * y[RESTING]
        y[WAITING] = waiting.ravel()
        y[RESTING] = 0.0
        return y

    def viable_M(self, y):
        return y[RESTING] + y[UNRESPONSIVE] + y[WAITING].sum() + y[CYCLING].sum()

    def transduced_and_copies_M(self, y):
        n = y[WAITING].reshape(2, K + 1) + y[CYCLING].reshape(2, K + 1)
        return n[:, 1:].sum(), (n.sum(0) * np.arange(K + 1)).sum()

    def rhs(self, t, y, ctx: Context, p):
        V = ctx.volume_ml
        c = self.cell_states
        G, L, I2, vec = (max(v, 0.0) for v in y[c : c + 4])
        waiting = y[WAITING].reshape(2, K + 1)
        cycling = y[CYCLING].reshape(2, K + 1)
        n_waiting, n_cycling = waiting.sum(), cycling.sum()
        viable = y[RESTING] + y[UNRESPONSIVE] + n_waiting + n_cycling
        density = 1e6 * max(viable, 0.0) / V
        age = 0.0 if ctx.activation_time_h is None else t - ctx.activation_time_h
        onset = lognormal_hazard(age, p["onset_median_h"], p["onset_log_sd"])

        mu = (
            p["max_growth_rate_per_h"]
            / (1.0 + (age / p["age_half_h"]) ** 2)
            * G
            / (G + p["glucose_monod_mM"])
            / (1.0 + (L / p["lactate_inhibition_mM"]) ** 4)
            * I2
            / (I2 + p["il2_monod_IU_per_mL"])
            * np.exp(-density / p["contact_cells_per_mL"])
        )
        death = (
            p["base_death_rate_per_h"]
            + p["lactate_death_rate_per_h"] * (L / p["lactate_toxicity_mM"]) ** 3
            + p["starvation_death_rate_per_h"] / (1.0 + (G / p["starvation_glucose_mM"]) ** 2)
        )
        k = p["transduction_rate_mL_per_MTU_h"] * vec
        hit = np.array([k, NON_PERMISSIVE_RATE * k])
        hit_wait = p["lag_transduction_efficiency"] * hit

        dy = np.zeros_like(y)
        dy[RESTING] = -death * y[RESTING]
        dy[UNRESPONSIVE] = -death * y[UNRESPONSIVE]
        dy[WAITING] = (-(onset + death) * waiting + copy_class_flow(waiting, hit_wait)).ravel()
        dy[CYCLING] = (
            onset * waiting + (mu - death) * cycling + copy_class_flow(cycling, hit)
        ).ravel()
        dy[DEAD] = death * viable - p["lysis_rate_per_h"] * y[DEAD]

        m = p["glucose_maintenance_pmol_per_cell_h"]
        uptake = (p["glucose_per_new_cell_pmol"] * mu + m) * n_cycling
        uptake += 0.5 * m * n_waiting + 0.1 * m * (y[RESTING] + y[UNRESPONSIVE])
        uptake_mM_h = uptake * G / (G + p["uptake_monod_mM"]) / V
        bound = (hit_wait @ waiting.sum(1) + hit @ cycling.sum(1)) / V
        dy[c : c + 4] = medium_rates(
            p, V, uptake_mM_h, I2, n_cycling, p["il2_monod_IU_per_mL"], vec, bound
        )
        return dy
