"""Plant ``replicative``: a Weibull-hazard activation onset, growth that declines with the
divisions a cell has made (not with culture age), Contois (glucose-per-cell) limitation,
hyperbolic lactate inhibition, a smooth hinge of lactate toxicity, death rising with
generation, saturable transduction of dividing cells whose receptor peaks and fades.

Written for the twenty-second session as a plant that no default was ever chosen on: the
twin's defaults were tuned over the four other plants, so this one measures how far that
tuning carries to a process it never saw.

- Activation: after ``activate`` each responsive resting cell enters the first generation of
  dividing cells at the hazard of a Weibull onset time, ``h(a) = (k/lam) (a/lam)^(k-1)``
  (``lam`` = ``onset_scale_h``, ``k`` = ``onset_shape``): no lag stages, no dead time.
- Division: a cell that has divided ``g`` times divides at ``mu_max r^g f`` with ``r`` =
  ``division_potential_ratio`` (each generation slower: replicative decline), daughters in
  generation ``g + 1``; the last of ``NG`` generations renews itself at its own rate. ``f =
  G/(K_c rho + G) * 1/(1 + L/L_inh) * I/(I + K_I)`` with ``rho`` the viable density in
  1e6 cells/mL (Contois: what limits is glucose per cell, not density or glucose alone).
- Death: ``k_0 (1 + g/n_s)`` for dividing cells of generation ``g`` (``k_0`` for the others),
  plus ``k_L s ln(1 + exp((L - L_c)/s)) / 10 mM`` (a smoothed hinge: toxicity grows linearly
  above ``L_c``) and ``k_S max(0, 1 - G/G_S)^2``.
- Glucose uptake per dividing cell ``q G/(G + K_u) (0.4 + 0.6 r^g)`` (its generation's
  potential, not the realized division rate), resting ``0.08 q G/(G + K_u)``; lactate ``Y_L``
  per glucose.
- Transduction: only dividing cells, hits at ``h_max V/(V + V_half) R(a)`` with receptor level
  ``R(a) = (a/a_R) exp(1 - a/a_R)`` (rising after activation, peaking at ``a_R``, fading);
  copies are a pool per generation, inherited by both daughters.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ._base import Context, Param, Plant, medium_rates

NG = 12  # generations of dividing cells tracked (the last lumps every later one)
RESTING, UNRESPONSIVE, DEAD = 0, 1, 2
PLAIN = slice(3, 3 + NG)  # dividing cells without an integrated copy, by generation
CARRYING = slice(3 + NG, 3 + 2 * NG)  # with >= 1 copy
COPIES = slice(3 + 2 * NG, 3 + 3 * NG)  # their copies (millions), not cells
_GENERATION = np.arange(NG)


def _divide(x: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """d/dt of a per-generation pool when generation ``g`` divides at ``rate[g]``: two
    daughters in ``g + 1``; the last generation renews itself."""
    out = rate * x
    d = -out
    d[1:] += 2.0 * out[:-1]
    d[-1] += 2.0 * out[-1]
    return d


class ReplicativePlant(Plant):
    name: ClassVar[str] = "replicative"
    summary: ClassVar[str] = (
        "Weibull-hazard activation onset; division slowing with each generation (replicative, "
        "not culture-age, decline); Contois glucose-per-cell limit; hyperbolic lactate "
        "inhibition, hinge toxicity; death rising with generation; saturable transduction of "
        "dividing cells, receptor peaking after activation"
    )
    parameters: ClassVar[dict[str, Param]] = {
        "onset_scale_h": Param(40.0, 0.15, unit="h"),
        "onset_shape": Param(3.5),
        "responsive_fraction": Param(0.8, 0.5, "logit"),
        "max_growth_rate_per_h": Param(0.06, 0.2, unit="1/h"),
        "division_potential_ratio": Param(0.8, 0.35, "logit"),
        "contois_mM_per_density": Param(0.4, 0.3, unit="mM per 1e6 cells/mL"),
        "lactate_inhibition_mM": Param(50.0, 0.15, unit="mM"),
        "il2_monod_IU_per_mL": Param(4.0, 0.3, unit="IU/mL"),
        "base_death_rate_per_h": Param(0.002, 0.3, unit="1/h"),
        "senescence_generations": Param(4.0),
        "lactate_death_rate_per_h": Param(0.004, unit="1/h per 10 mM"),
        "lactate_threshold_mM": Param(24.0, 0.12, unit="mM"),
        "lactate_hinge_width_mM": Param(3.0, unit="mM"),
        "starvation_death_rate_per_h": Param(0.05, unit="1/h"),
        "starvation_glucose_mM": Param(0.5, unit="mM"),
        "lysis_rate_per_h": Param(0.015, unit="1/h"),
        "glucose_uptake_pmol_per_cell_h": Param(0.08, 0.25, unit="pmol/cell/h"),
        "uptake_monod_mM": Param(0.3, unit="mM"),
        "lactate_per_glucose": Param(1.6, 0.08, unit="mol/mol"),
        "il2_uptake_IU_per_cell_h": Param(4e-7, 0.2, unit="IU/cell/h"),
        "il2_half_life_h": Param(40.0, unit="h"),
        "vector_half_life_h": Param(20.0, unit="h"),
        "max_transduction_rate_per_h": Param(0.12, 0.3, unit="1/h"),
        "vector_half_saturation_MTU_per_mL": Param(6.0, unit="MTU/mL"),
        "receptor_peak_h": Param(40.0, 0.2, unit="h"),
    }
    cell_states: ClassVar[int] = 3 + 3 * NG
    dead_index: ClassVar[int] = DEAD
    dead_removed_per_exchange: ClassVar[float] = 0.3

    def viable_M(self, y):
        return y[RESTING] + y[UNRESPONSIVE] + y[PLAIN].sum() + y[CARRYING].sum()

    def transduced_and_copies_M(self, y):
        return y[CARRYING].sum(), y[COPIES].sum()

    def rhs(self, t, y, ctx: Context, p):
        V = ctx.volume_ml
        c = self.cell_states
        G, L, I2, vec = (max(v, 0.0) for v in y[c : c + 4])
        plain, carrying, copies = y[PLAIN], y[CARRYING], y[COPIES]
        dividing = plain + carrying
        viable = y[RESTING] + y[UNRESPONSIVE] + dividing.sum()
        density = max(viable, 0.0) / V  # 1e6 cells/mL
        age = 0.0 if ctx.activation_time_h is None else t - ctx.activation_time_h

        if age > 0.0:
            k, lam = p["onset_shape"], p["onset_scale_h"]
            onset = k / lam * (age / lam) ** (k - 1.0)
            a_r = age / p["receptor_peak_h"]
            receptor = a_r * np.exp(1.0 - a_r)
        else:
            onset, receptor = 0.0, 0.0
        potential = p["division_potential_ratio"] ** _GENERATION
        limit = (
            G
            / (p["contois_mM_per_density"] * density + G + 1e-12)
            / (1.0 + L / p["lactate_inhibition_mM"])
            * I2
            / (I2 + p["il2_monod_IU_per_mL"])
        )
        mu = p["max_growth_rate_per_h"] * potential * limit
        w = p["lactate_hinge_width_mM"]
        environment = (
            p["lactate_death_rate_per_h"]
            * w
            * np.logaddexp(0.0, (L - p["lactate_threshold_mM"]) / w)
            / 10.0
            + p["starvation_death_rate_per_h"] * max(0.0, 1.0 - G / p["starvation_glucose_mM"]) ** 2
        )
        k0 = p["base_death_rate_per_h"]
        rest_death = k0 + environment
        death = k0 * (1.0 + _GENERATION / p["senescence_generations"]) + environment
        hit = (
            p["max_transduction_rate_per_h"]
            * vec
            / (vec + p["vector_half_saturation_MTU_per_mL"])
            * receptor
        )

        dy = np.zeros_like(y)
        entering = onset * y[RESTING]
        dy[RESTING] = -(onset + rest_death) * y[RESTING]
        dy[UNRESPONSIVE] = -rest_death * y[UNRESPONSIVE]
        d_plain = _divide(plain, mu) - (death + hit) * plain
        d_plain[0] += entering
        dy[PLAIN] = d_plain
        dy[CARRYING] = _divide(carrying, mu) - death * carrying + hit * plain
        dy[COPIES] = _divide(copies, mu) - death * copies + hit * dividing
        dead_made = rest_death * (y[RESTING] + y[UNRESPONSIVE]) + death @ dividing
        dy[DEAD] = dead_made - p["lysis_rate_per_h"] * y[DEAD]

        q = p["glucose_uptake_pmol_per_cell_h"] * G / (G + p["uptake_monod_mM"])
        weighted = dividing @ (0.4 + 0.6 * potential) + 0.08 * (y[RESTING] + y[UNRESPONSIVE])
        uptake_mM_h = q * weighted / V
        n_dividing = dividing.sum()
        dy[c : c + 4] = medium_rates(
            p, V, uptake_mM_h, I2, n_dividing, p["il2_monod_IU_per_mL"], vec, hit * n_dividing / V
        )
        return dy
