"""Plant ``signal``: activation driven by a decaying reagent signal, Gaussian decline with
culture age, logistic density limit, glucose uptake not tied to growth, a susceptible
sub-population of cycling cells, a glucose analyser with a 0.1 mM detection limit.

- Activation: the ``activate`` event adds reagent signal ``S = 1`` (a solute: it decays with
  ``signal_half_life_h`` and exchanges wash it out). Resting responsive cells become *blasts*
  at ``k_A S^2 / (S^2 + S_half^2)``; blasts start cycling at ``blast_exit_rate_per_h``.
- Growth of cycling cells: ``mu_max exp(-(age/age_scale)^2) G/(G+K_G) max(0, 1 - L/L_max)
  (f_I + (1 - f_I) I/(I+K_I)) max(0, 1 - rho/rho_max)`` (Gaussian decline, linear lactate
  inhibition, logistic density).
- Death: ``k_0 + k_L (L/L_tox)^3 + k_S (G_S/(G_S + G))^3 + k_AICD S`` (activation-induced death
  of cycling cells while reagent remains).
- Glucose uptake per cell, whatever the growth: blasts and cycling ``q G/(G + K_q)``, resting
  ``0.15 q G/(G + K_q)``; lactate ``Y_L`` per glucose.
- Transduction: a share ``susceptible_fraction`` of the cells entering the cycle can integrate
  vector (Poisson hits at ``k_T V``); blasts and the rest cannot.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ._base import Context, Param, Plant, copy_class_flow, decay_rate, medium_rates

K = 5
RESTING, UNRESPONSIVE, BLAST, REFRACTORY, DEAD = 0, 1, 2, 3, 4
SUSCEPTIBLE = slice(5, 5 + K + 1)


class SignalPlant(Plant):
    name: ClassVar[str] = "signal"
    summary: ClassVar[str] = (
        "reagent-signal-driven activation through a blast stage; Gaussian decline with culture "
        "age; logistic density limit; linear lactate inhibition, cubic toxicity; uptake not tied "
        "to growth; susceptible sub-population; glucose detection limit 0.1 mM"
    )
    parameters: ClassVar[dict[str, Param]] = {
        "activation_rate_per_h": Param(0.07, 0.25, unit="1/h"),
        "signal_half_saturation": Param(0.3, unit="-"),
        "signal_half_life_h": Param(30.0, unit="h"),
        "blast_exit_rate_per_h": Param(0.07, 0.2, unit="1/h"),
        "responsive_fraction": Param(0.88, 0.4, "logit"),
        "max_growth_rate_per_h": Param(0.048, 0.2, unit="1/h"),
        "age_scale_h": Param(230.0, 0.25, unit="h"),
        "max_density_cells_per_mL": Param(7e6, 0.3, unit="cells/mL"),
        "glucose_monod_mM": Param(0.4, unit="mM"),
        "lactate_max_mM": Param(75.0, 0.15, unit="mM"),
        "il2_monod_IU_per_mL": Param(12.0, 0.3, unit="IU/mL"),
        "il2_independent_fraction": Param(0.4, unit="-", kind="logit"),
        "base_death_rate_per_h": Param(0.0035, 0.3, unit="1/h"),
        "lactate_death_rate_per_h": Param(0.025, unit="1/h"),
        "lactate_toxicity_mM": Param(38.0, 0.1, unit="mM"),
        "starvation_death_rate_per_h": Param(0.06, unit="1/h"),
        "starvation_glucose_mM": Param(0.2, unit="mM"),
        "aicd_rate_per_h": Param(0.01, 0.3, unit="1/h"),
        "lysis_rate_per_h": Param(0.02, unit="1/h"),
        "glucose_uptake_pmol_per_cell_h": Param(0.11, 0.25, unit="pmol/cell/h"),
        "uptake_monod_mM": Param(0.3, unit="mM"),
        "lactate_per_glucose": Param(1.6, 0.08, unit="mol/mol"),
        "il2_uptake_IU_per_cell_h": Param(6e-7, unit="IU/cell/h"),
        "il2_half_life_h": Param(50.0, unit="h"),
        "vector_half_life_h": Param(35.0, unit="h"),
        "transduction_rate_mL_per_MTU_h": Param(0.02, 0.25, unit="mL/(1e6 TU h)"),
        "susceptible_fraction": Param(0.45, 0.4, "logit"),
    }
    cell_states: ClassVar[int] = 5 + K + 1
    dead_index: ClassVar[int] = DEAD
    extra_solutes: ClassVar[tuple[str, ...]] = ("signal",)
    glucose_detection_limit_mM: ClassVar[float] = 0.1
    dead_removed_per_exchange: ClassVar[float] = 0.3
    max_copies: ClassVar[int] = K

    def activate(self, y, p):
        y = y.copy()
        y[self.solute_index("signal")] += 1.0
        return y

    def viable_M(self, y):
        return y[RESTING] + y[UNRESPONSIVE] + y[BLAST] + y[REFRACTORY] + y[SUSCEPTIBLE].sum()

    def transduced_and_copies_M(self, y):
        n = y[SUSCEPTIBLE]
        return n[1:].sum(), n @ np.arange(K + 1)

    def rhs(self, t, y, ctx: Context, p):
        V = ctx.volume_ml
        c = self.cell_states
        G, L, I2, vec, S = (max(v, 0.0) for v in y[c : c + 5])
        susceptible = y[SUSCEPTIBLE]
        cycling = y[REFRACTORY] + susceptible.sum()
        viable = y[RESTING] + y[UNRESPONSIVE] + y[BLAST] + cycling
        density = 1e6 * max(viable, 0.0) / V
        age = 0.0 if ctx.activation_time_h is None else t - ctx.activation_time_h

        f_i = p["il2_independent_fraction"]
        mu = (
            p["max_growth_rate_per_h"]
            * np.exp(-((age / p["age_scale_h"]) ** 2))
            * G
            / (G + p["glucose_monod_mM"])
            * max(0.0, 1.0 - L / p["lactate_max_mM"])
            * (f_i + (1 - f_i) * I2 / (I2 + p["il2_monod_IU_per_mL"]))
            * max(0.0, 1.0 - density / p["max_density_cells_per_mL"])
        )
        gs = p["starvation_glucose_mM"]
        death = (
            p["base_death_rate_per_h"]
            + p["lactate_death_rate_per_h"] * (L / p["lactate_toxicity_mM"]) ** 3
            + p["starvation_death_rate_per_h"] * (gs / (gs + G)) ** 3
        )
        death_cycling = death + p["aicd_rate_per_h"] * S
        act = p["activation_rate_per_h"] * S**2 / (S**2 + p["signal_half_saturation"] ** 2)
        exit_ = p["blast_exit_rate_per_h"] * y[BLAST]
        hit = p["transduction_rate_mL_per_MTU_h"] * vec
        fs = p["susceptible_fraction"]

        dy = np.zeros_like(y)
        dy[RESTING] = -(act + death) * y[RESTING]
        dy[UNRESPONSIVE] = -death * y[UNRESPONSIVE]
        dy[BLAST] = act * y[RESTING] - exit_ - death * y[BLAST]
        dy[REFRACTORY] = (1 - fs) * exit_ + (mu - death_cycling) * y[REFRACTORY]
        d_sus = (mu - death_cycling) * susceptible + copy_class_flow(susceptible, hit)
        d_sus[0] += fs * exit_
        dy[SUSCEPTIBLE] = d_sus
        dy[DEAD] = (
            death * viable + (death_cycling - death) * cycling - p["lysis_rate_per_h"] * y[DEAD]
        )

        q = p["glucose_uptake_pmol_per_cell_h"] * G / (G + p["uptake_monod_mM"])
        uptake_mM_h = q * (y[BLAST] + cycling + 0.15 * (y[RESTING] + y[UNRESPONSIVE])) / V
        bound = hit * susceptible.sum() / V
        dy[c : c + 4] = medium_rates(
            p, V, uptake_mM_h, I2, cycling + y[BLAST], p["il2_monod_IU_per_mL"], vec, bound
        )
        dy[c + 4] = -decay_rate(p["signal_half_life_h"]) * S
        return dy
