"""Plant ``cytokine``: a shifted two-stage activation onset, logistic (sigmoid) decline in
culture age, logistic density limit, cytokine-withdrawal death, uptake not tied to growth with
high-uptake donors that starve, receptor-limited transduction that fades with age, a glucose
analyser with a 0.1 mM detection limit.

- Activation: after ``activate`` responsive cells wait a fixed ``activation_dead_time_h``, then
  pass two stages at ``2 / activation_stage_time_h`` each before cycling (delay + Erlang-2).
- Growth of cycling cells: ``mu_max / (1 + exp((age - age_mid)/age_width)) * G/(G+K_G) *
  exp(-L/L_inh) * I^2/(I^2+K_I^2) * max(0, 1 - rho/rho_max)``.
- Death: ``k_0 + k_L (L/L_tox)^3 + k_S exp(-G/G_S) + k_W K_W/(K_W + I)`` (IL-2 withdrawal).
- Glucose uptake per cell (not tied to growth): cycling ``q G/(G+K_u)``, staged ``0.6 q``,
  resting ``0.1 q``; lactate ``Y_L`` per glucose.
- Transduction: cells in the stages and cycling cells integrate at ``k_T V r(age)`` with
  receptor level ``r = exp(-age/receptor_decay_h)`` (staged cells at
  ``lag_transduction_efficiency``); a ``refractory_fraction`` of cells never integrates.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ._base import Context, Param, Plant, copy_class_flow, medium_rates

K = 5
RESTING, UNRESPONSIVE, DEAD, HELD, REFRACTORY_STAGED, REFRACTORY_CYCLING = range(6)
_C = K + 1
STAGE1 = slice(6, 6 + _C)
STAGE2 = slice(6 + _C, 6 + 2 * _C)
CYCLING = slice(6 + 2 * _C, 6 + 3 * _C)


class CytokinePlant(Plant):
    name: ClassVar[str] = "cytokine"
    summary: ClassVar[str] = (
        "dead time + two-stage activation onset; sigmoid decline in culture age; logistic "
        "density limit; IL-2 withdrawal death; uptake not tied to growth (starving donors); "
        "receptor-limited transduction fading with age, lag cells at lower efficiency; "
        "glucose detection limit 0.1 mM"
    )
    parameters: ClassVar[dict[str, Param]] = {
        "activation_dead_time_h": Param(14.0, 0.2, unit="h"),
        "activation_stage_time_h": Param(16.0, 0.2, unit="h"),
        "responsive_fraction": Param(0.87, 0.4, "logit"),
        "max_growth_rate_per_h": Param(0.05, 0.2, unit="1/h"),
        "age_mid_h": Param(200.0, 0.2, unit="h"),
        "age_width_h": Param(35.0, unit="h"),
        "max_density_cells_per_mL": Param(8e6, 0.3, unit="cells/mL"),
        "glucose_monod_mM": Param(0.5, unit="mM"),
        "lactate_inhibition_mM": Param(60.0, 0.15, unit="mM"),
        "il2_half_IU_per_mL": Param(5.0, 0.3, unit="IU/mL"),
        "base_death_rate_per_h": Param(0.003, 0.3, unit="1/h"),
        "lactate_death_rate_per_h": Param(0.02, unit="1/h"),
        "lactate_toxicity_mM": Param(42.0, 0.1, unit="mM"),
        "starvation_death_rate_per_h": Param(0.08, unit="1/h"),
        "starvation_glucose_mM": Param(0.2, unit="mM"),
        "withdrawal_death_rate_per_h": Param(0.01, unit="1/h"),
        "withdrawal_il2_IU_per_mL": Param(2.0, unit="IU/mL"),
        "lysis_rate_per_h": Param(0.02, unit="1/h"),
        "glucose_uptake_pmol_per_cell_h": Param(0.075, 0.25, unit="pmol/cell/h"),
        "uptake_monod_mM": Param(0.4, unit="mM"),
        "lactate_per_glucose": Param(1.7, 0.08, unit="mol/mol"),
        "il2_uptake_IU_per_cell_h": Param(5e-7, 0.2, unit="IU/cell/h"),
        "il2_half_life_h": Param(48.0, unit="h"),
        "vector_half_life_h": Param(32.0, unit="h"),
        "transduction_rate_mL_per_MTU_h": Param(0.03, 0.3, unit="mL/(1e6 TU h)"),
        "receptor_decay_h": Param(60.0, 0.2, unit="h"),
        "refractory_fraction": Param(0.45, 0.4, "logit"),
        "lag_transduction_efficiency": Param(0.35, unit="-"),
    }
    cell_states: ClassVar[int] = 6 + 3 * _C
    dead_index: ClassVar[int] = DEAD
    glucose_detection_limit_mM: ClassVar[float] = 0.1
    dead_removed_per_exchange: ClassVar[float] = 0.25
    max_copies: ClassVar[int] = K

    def activate(self, y, p):
        y = y.copy()
        y[HELD] += y[RESTING]  # waiting out the dead time
        y[RESTING] = 0.0
        return y

    def breakpoints(self, ctx: Context, p):
        if ctx.activation_time_h is None:
            return []
        return [ctx.activation_time_h + p["activation_dead_time_h"]]

    def at_breakpoint(self, t, y, ctx: Context, p):
        y = y.copy()  # the dead time is over: every held cell enters the first stage
        fr = p["refractory_fraction"]
        y[REFRACTORY_STAGED] += fr * y[HELD]
        y[STAGE1.start] += (1 - fr) * y[HELD]
        y[HELD] = 0.0
        return y

    def viable_M(self, y):
        return y[RESTING] + y[UNRESPONSIVE] + y[HELD : self.cell_states].sum()

    def transduced_and_copies_M(self, y):
        n = y[STAGE1] + y[STAGE2] + y[CYCLING]
        return n[1:].sum(), n @ np.arange(K + 1)

    def rhs(self, t, y, ctx: Context, p):
        V = ctx.volume_ml
        c = self.cell_states
        G, L, I2, vec = (max(v, 0.0) for v in y[c : c + 4])
        s1, s2, cyc = y[STAGE1], y[STAGE2], y[CYCLING]
        staged = s1.sum() + s2.sum() + y[REFRACTORY_STAGED]
        cycling = cyc.sum() + y[REFRACTORY_CYCLING]
        viable = y[RESTING] + y[UNRESPONSIVE] + y[HELD] + staged + cycling
        density = 1e6 * max(viable, 0.0) / V
        age = 0.0 if ctx.activation_time_h is None else t - ctx.activation_time_h
        stage_rate = 2.0 / p["activation_stage_time_h"]

        mu = (
            p["max_growth_rate_per_h"]
            / (1.0 + np.exp((age - p["age_mid_h"]) / p["age_width_h"]))
            * G
            / (G + p["glucose_monod_mM"])
            * np.exp(-L / p["lactate_inhibition_mM"])
            * I2**2
            / (I2**2 + p["il2_half_IU_per_mL"] ** 2)
            * max(0.0, 1.0 - density / p["max_density_cells_per_mL"])
        )
        kw = p["withdrawal_il2_IU_per_mL"]
        death = (
            p["base_death_rate_per_h"]
            + p["lactate_death_rate_per_h"] * (L / p["lactate_toxicity_mM"]) ** 3
            + p["starvation_death_rate_per_h"] * np.exp(-G / p["starvation_glucose_mM"])
            + p["withdrawal_death_rate_per_h"] * kw / (kw + I2)
        )
        hit = p["transduction_rate_mL_per_MTU_h"] * vec * np.exp(-age / p["receptor_decay_h"])
        hit_lag = p["lag_transduction_efficiency"] * hit

        dy = np.zeros_like(y)
        dy[RESTING] = -death * y[RESTING]
        dy[UNRESPONSIVE] = -death * y[UNRESPONSIVE]
        dy[HELD] = -death * y[HELD]
        # Refractory cells pass the two stages as one pool (mean time halved): their copies do
        # not matter, only their share of the dividing cells.
        dy[REFRACTORY_STAGED] = -(stage_rate + death) * y[REFRACTORY_STAGED]
        dy[REFRACTORY_CYCLING] = (
            stage_rate * y[REFRACTORY_STAGED] + (mu - death) * y[REFRACTORY_CYCLING]
        )
        d1 = -(stage_rate + death) * s1 + copy_class_flow(s1, hit_lag)
        d2 = stage_rate * s1 - (stage_rate + death) * s2 + copy_class_flow(s2, hit_lag)
        dc = stage_rate * s2 + (mu - death) * cyc + copy_class_flow(cyc, hit)
        dy[STAGE1], dy[STAGE2], dy[CYCLING] = d1, d2, dc
        dy[DEAD] = death * viable - p["lysis_rate_per_h"] * y[DEAD]

        q = p["glucose_uptake_pmol_per_cell_h"] * G / (G + p["uptake_monod_mM"])
        resting = y[RESTING] + y[UNRESPONSIVE] + y[HELD]
        uptake_mM_h = q * (cycling + 0.6 * staged + 0.1 * resting) / V
        bound = (hit_lag * (s1.sum() + s2.sum()) + hit * cyc.sum()) / V
        dy[c : c + 4] = medium_rates(
            p, V, uptake_mM_h, I2, cycling, p["il2_half_IU_per_mL"], vec, bound
        )
        return dy
