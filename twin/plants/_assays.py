"""The plants' own assay noise: what the Cell Q instruments would record from a true culture.

Multiplicative (log-normal) error with a small additive part for counts, metabolites, IL-2 and
VCN; logit-normal error for fractions. Coefficients as in the twin's default assay noise
(``twin.assays.AssayNoise``), written again here so that the bench does not borrow the twin's
likelihood. A plant with a glucose detection limit records readings below it as 0.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.special import expit, logit

VARIABLES: tuple[str, ...] = (
    "viable_cells",
    "viability",
    "glucose_mM",
    "lactate_mM",
    "il2_IU_per_mL",
    "car_pos_fraction",
    "vcn_per_cell",
)
# variable -> (multiplicative SD on the log scale or SD on the logit scale, additive SD in unit)
_NOISE: dict[str, tuple[float, float]] = {
    "viable_cells": (0.08, 0.0),
    "viability": (0.15, 0.0),
    "glucose_mM": (0.04, 0.02),
    "lactate_mM": (0.05, 0.05),
    "il2_IU_per_mL": (0.15, 0.2),
    "car_pos_fraction": (0.10, 0.0),
    "vcn_per_cell": (0.12, 0.005),
}
_FRACTIONS = ("viability", "car_pos_fraction")


@dataclasses.dataclass(frozen=True)
class Assays:
    """Which assays run at a sample, and their noise.

    ``transduction_readout_delay_h``: %CAR+ and VCN are read only from that long after
    transduction (integration and expression take days). ``scale`` multiplies every SD.
    """

    transduction_readout_delay_h: float = 48.0
    glucose_detection_limit_mM: float = 0.0
    scale: float = 1.0

    def measured(self, variable: str, time_h: float, transduction_time_h: float | None) -> bool:
        if variable in ("car_pos_fraction", "vcn_per_cell"):
            return (
                transduction_time_h is not None
                and time_h >= transduction_time_h + self.transduction_readout_delay_h
            )
        return True

    def read(self, rng: np.random.Generator, variable: str, true_value: float) -> float:
        """One noisy reading of ``true_value``."""
        sd, additive = _NOISE[variable]
        sd, additive = sd * self.scale, additive * self.scale
        if variable in _FRACTIONS:
            z = logit(np.clip(true_value, 1e-3, 1 - 1e-3)) + sd * rng.standard_normal()
            return float(expit(z))
        value = max(true_value, 0.0) * np.exp(sd * rng.standard_normal())
        value = max(value + additive * rng.standard_normal(), 0.0)
        if variable == "glucose_mM" and value < self.glucose_detection_limit_mM:
            return 0.0
        return float(value)


def relative_sd(variable: str) -> float:
    """The assay's multiplicative (log) or logit SD."""
    return _NOISE[variable][0]
