"""Donor populations: the input of robust optimization, decoupled from calibration."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import TwinInputError
from ..calibrate import Calibration
from ..kinetics import (
    PARAMETER_NAMES,
    KineticParameters,
    from_unconstrained,
    to_unconstrained,
)
from ..virtual import sample_donor_parameters


@dataclasses.dataclass(frozen=True)
class DonorPopulation:
    """A donor population on the estimation scale (log for positive, logit for fractions).

    **Fields:**

    - ``parameters``: the population (typical donor) kinetic parameters, natural units.
    - ``donor_sd``: per parameter name, the SD of the donor effect on the estimation scale;
      parameters not named are shared by all donors.
    - ``covariance``: optional ``(P, P)`` covariance of the population parameters on the
      estimation scale, rows and columns in :data:`~twin.kinetics.PARAMETER_NAMES` order
      (uncertainty of a calibration); ``None`` treats ``parameters`` as known.
    """

    parameters: KineticParameters
    donor_sd: Mapping[str, float]
    covariance: np.ndarray | None = None

    def __post_init__(self):
        n = len(PARAMETER_NAMES)
        if self.covariance is not None and np.shape(self.covariance) != (n, n):
            raise TwinInputError(
                f"population covariance has shape {np.shape(self.covariance)}, expected {(n, n)}"
            )

    def sample(self, key: jax.Array, n: int) -> KineticParameters:
        """``n`` donors (leading axis): each a donor effect around the population, plus (with
        a covariance) a draw of the population parameters themselves, i.e. the predictive
        distribution of a new donor."""
        key_donor, key_population = jax.random.split(key)
        donors = sample_donor_parameters(key_donor, self.parameters, dict(self.donor_sd), n)
        if self.covariance is None:
            return donors
        # Jitter: a calibration's covariance is singular in the parameters it kept fixed.
        covariance = jnp.asarray(self.covariance, float)
        chol = jnp.linalg.cholesky(covariance + 1e-12 * jnp.eye(covariance.shape[0]))
        shift = jax.random.normal(key_population, (n, len(PARAMETER_NAMES))) @ chol.T
        centre = to_unconstrained(donors)
        return from_unconstrained(
            KineticParameters(
                **{
                    name: getattr(centre, name) + shift[:, i]
                    for i, name in enumerate(PARAMETER_NAMES)
                }
            )
        )


def population_from_calibration(calibration: Calibration) -> DonorPopulation:
    """The calibrated population: estimates, donor SDs (omega) of the donor-level parameters
    and the Laplace covariance of the fitted population parameters (others held fixed)."""
    p = len(calibration.fitted)
    index = [PARAMETER_NAMES.index(name) for name in calibration.fitted]
    covariance = np.zeros((len(PARAMETER_NAMES), len(PARAMETER_NAMES)))
    covariance[np.ix_(index, index)] = calibration.covariance[:p, :p]
    donor_sd = dict(zip(calibration.donor_level, map(float, calibration.donor_sd), strict=True))
    return DonorPopulation(calibration.population, donor_sd, covariance)
